"""Cut audio files into contract audio frames (used by replay and analyze)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from schemas.audio import encode_audio
from schemas.frames import encode_frame
from schemas.resample import resample
from schemas.wav import read_audio


@dataclass
class FrameSource:
    """One audio file as a call: its channels' audio, ready to be framed."""

    call_id: str
    channels: list[str]
    sample_rate: int
    audio: np.ndarray  # [channels, n] float32

    @property
    def duration_s(self) -> float:
        return self.audio.shape[1] / self.sample_rate


def channel_names(n: int, names: Optional[str]) -> list[str]:
    """`--channel` names: "agent,customer" for stereo; defaults "0", "1", ..."""
    if names:
        parts = [p.strip() for p in names.split(",") if p.strip()]
        if len(parts) != n:
            raise ValueError(f"--channel gave {len(parts)} names for a file with {n} channel(s)")
        return parts
    return [str(i) for i in range(n)]


def load_source(path: str | Path, call_id: Optional[str] = None, channels: Optional[str] = None,
                sample_rate: Optional[int] = None) -> FrameSource:
    rate, audio = read_audio(path)
    if sample_rate and sample_rate != rate:
        audio = np.stack([resample(ch, rate, sample_rate) for ch in audio])
        rate = sample_rate
    return FrameSource(call_id or Path(path).stem, channel_names(audio.shape[0], channels), rate, audio)


def iter_frames(src: FrameSource, frame_ms: int = 100, encoding: str = "pcm_s16le",
                with_ts: bool = False, ts_start_ms: int = 0,
                meta: Optional[dict] = None) -> Iterator[tuple[float, bytes, bytes]]:
    """(audio time in s, key, msgpack value) for every frame, channels interleaved
    in time order; the last frame of each channel carries `end`, the first `meta` if given."""
    step = max(1, int(src.sample_rate * frame_ms / 1000))
    n = src.audio.shape[1]
    count = max(1, -(-n // step))
    key = src.call_id.encode()
    for i in range(count):
        for c, name in enumerate(src.channels):
            chunk = src.audio[c, i * step:(i + 1) * step]
            fields = {"v": 1, "call_id": src.call_id, "channel": name, "seq": i,
                      "sample_rate": src.sample_rate, "encoding": encoding,
                      "audio": encode_audio(encoding, chunk), "end": i == count - 1}
            if with_ts:
                fields["ts_ms"] = ts_start_ms + int(1000 * i * step / src.sample_rate)
            if meta and i == 0:
                fields["meta"] = meta
            yield i * step / src.sample_rate, key, encode_frame(fields)


def merge_sources(sources: Sequence[FrameSource], frame_ms: int, encoding: str,
                  meta: Optional[dict] = None) -> Iterator[tuple[float, bytes, bytes]]:
    """Frames of several calls interleaved by audio time, as concurrent calls."""
    import heapq

    iters = [iter_frames(s, frame_ms, encoding, meta=meta) for s in sources]
    yield from heapq.merge(*iters, key=lambda t: t[0])
