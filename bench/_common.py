"""Helpers shared by the Kafka benchmarks: topics, synthetic calls, process stats.

Only the standard library, numpy, msgpack and confluent-kafka here, so the
peers' own virtual environment (bench/.venv-quix) can import it too.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Iterable, Optional

import msgpack
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "voicetone" / "samples"

# Explicit topic configs: Quix Streams reads retention.ms (and friends) of the
# input topic from the broker, and tansu answers nothing unless they were set.
TOPIC_CONFIG = {"retention.ms": str(7 * 24 * 3600 * 1000), "retention.bytes": "-1", "cleanup.policy": "delete"}
OUTPUT_TOPICS = ("sentiment.segments", "sentiment.aggregates", "sentiment.calls", "audio.frames.dlq")


def exit_on_sigterm() -> None:
    """Turn SIGTERM (timeout, kill, CI cancel) into SystemExit, so the benchmark's `finally` blocks
    stop the broker and workers it started instead of leaving them running."""
    def _exit(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, _exit)


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "?"


def cpu_model() -> str:
    """The CPU's name as Linux reports it: the same 2-core machine type has run the model at 2x apart
    from one day to the next, so figures from different runs compare only with this beside them."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
    except OSError:
        return "unknown"


def machine() -> dict:
    return {"cpus": os.cpu_count(), "cpu_model": cpu_model(), "loadavg": load_average()}


def create_topics(broker: str, topics: Iterable[str], partitions: int, timeout: float = 20.0) -> None:
    """Create topics (if missing) with explicit configs; wait until they are listed."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": broker})
    topics = list(topics)
    existing = admin.list_topics(timeout=timeout).topics
    new = [NewTopic(t, partitions, 1, config=dict(TOPIC_CONFIG)) for t in topics if t not in existing]
    if new:
        for topic, fut in admin.create_topics(new).items():
            try:
                fut.result(timeout)
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = admin.list_topics(timeout=timeout).topics
        if all(t in listed and not listed[t].error for t in topics):
            return
        time.sleep(0.2)
    raise RuntimeError(f"topics {topics} not listed after {timeout:.0f} s")


def sample_audio(rate: int = 8000) -> list[np.ndarray]:
    """Mono int16 tracks of the bundled sample calls (each channel one track), at `rate`."""
    import wave

    tracks = []
    for path in sorted(SAMPLES.glob("*.wav")):
        with wave.open(str(path)) as w:
            assert w.getsampwidth() == 2, path
            n, ch, sr = w.getnframes(), w.getnchannels(), w.getframerate()
            data = np.frombuffer(w.readframes(n), "<i2").reshape(-1, ch)
        for c in range(ch):
            x = data[:, c]
            if sr != rate:  # plain linear interpolation is enough for load generation
                t = np.arange(int(len(x) * rate / sr)) * (sr / rate)
                x = np.interp(t, np.arange(len(x)), x).astype(np.int16)
            tracks.append(np.ascontiguousarray(x))
    if not tracks:
        rng = np.random.default_rng(0)
        tracks = [(rng.standard_normal(rate * 30) * 2000).astype(np.int16)]
    return tracks


class ChannelAudio:
    """An endless loop over one sample track, from a channel-specific offset."""

    def __init__(self, track: np.ndarray, offset: int):
        self.track = np.concatenate([track, track])  # so one slice never wraps twice
        self.n = len(track)
        self.pos = offset % self.n

    def next(self, samples: int) -> bytes:
        chunk = self.track[self.pos:self.pos + samples]
        self.pos = (self.pos + samples) % self.n
        return chunk.tobytes()


def encode_frame(call_id: str, channel: str, seq: int, rate: int, audio: bytes,
                 ts_ms: Optional[int] = None, end: bool = False) -> bytes:
    fields = {"v": 1, "call_id": call_id, "channel": channel, "seq": seq, "sample_rate": rate,
              "encoding": "pcm_s16le", "audio": audio}
    if ts_ms is not None:
        fields["ts_ms"] = ts_ms
    if end:
        fields["end"] = True
    return msgpack.packb(fields, use_bin_type=True)


def synthetic_frames(channels: int, frames_per_channel: int, frame_ms: int, rate: int = 8000,
                     channels_per_call: int = 2, silent: bool = False) -> list[tuple[bytes, bytes]]:
    """(key, value) frames of `channels` concurrent channels, interleaved in time order; the bundled
    sample calls, or digital silence with ``silent``."""
    tracks = [np.zeros(rate, np.int16)] if silent else sample_audio(rate)
    step = rate * frame_ms // 1000
    names = ("agent", "customer", "c2", "c3")
    srcs = []
    for c in range(channels):
        call, ch = divmod(c, channels_per_call)
        srcs.append((f"call-{call:05d}", names[ch] if ch < len(names) else str(ch),
                     ChannelAudio(tracks[c % len(tracks)], 997 * c)))
    out = []
    for seq in range(frames_per_channel):
        for call_id, ch, audio in srcs:
            out.append((call_id.encode(), encode_frame(call_id, ch, seq, rate, audio.next(step),
                                                       ts_ms=1_700_000_000_000 + seq * frame_ms)))
    return out


# ---------------------------------------------------------------- process stats
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                out += [int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


def process_tree(pid: int) -> list[int]:
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` and its live descendants."""
    total = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / _TICK


def rss_bytes(pid: int) -> int:
    total = 0
    for p in process_tree(pid):
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


def percentile(xs, q: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q)) if len(xs) else float("nan")
