"""Helpers for the reliability tests: a real broker, real worker processes, event capture.

Every process started here is stopped with a bounded wait and a SIGKILL
fallback on its whole process group (`voicetone.broker.stop_process_group`),
also when a test fails: use the fixtures/context managers, never bare Popen.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
import orjson

from voicetone.broker import EmbeddedBroker, free_port, stop_process_group
from streams.kafka_client import produce
from streams.settings import Settings

SLOW = os.environ.get("VOICETONE_SLOW_TESTS") == "1"

# short consumer-group timings (same as `voicetone demo`)
FAST_GROUP = {"VOICETONE_REBALANCE_TIMEOUT_S": "3", "VOICETONE_SESSION_TIMEOUT_S": "6",
              "VOICETONE_HEARTBEAT_INTERVAL_S": "1", "VOICETONE_COMMIT_INTERVAL_S": "1"}

FLOAT_TOL = 1e-5


# ---------------------------------------------------------------- model and audio
def tiny_model_path(directory: Path) -> Path:
    """A small untrained network of the real architecture, saved as a checkpoint (fast on CPU)."""
    from model.config import tiny_config
    from model.inference import VoiceToneModel

    path = Path(directory) / "tiny.pt"
    if not path.exists():
        VoiceToneModel.untrained(tiny_config(), device="cpu", seed=3).save(path, name="tiny")
    return path


def synth_call(rng: np.random.Generator, seconds: float, rate: int = 16000) -> np.ndarray:
    """Speech-like audio: a few harmonics with a wandering pitch, syllable-rate envelope, pauses, noise."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = rng.uniform(90, 240) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = sum(rng.uniform(0.2, 1.0) / k * np.sin(k * phase) for k in range(1, 6))
    env = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(2, 6) * t + rng.uniform(0, 6)))
    # pauses: a random on/off mask in 0.5 s steps
    mask = np.repeat(rng.random(int(math.ceil(seconds * 2))) > 0.3, rate // 2)[:n]
    x = 0.3 * voice * env * mask + 0.01 * rng.standard_normal(n)
    return (x / max(1e-6, np.abs(x).max()) * rng.uniform(0.3, 0.8)).astype(np.float32)


def make_calls(directory: Path, n: int, seconds: float | tuple[float, float], seed: int,
               stereo_every: int = 0, rate: int = 16000, prefix: str = "call") -> list[Path]:
    """`n` WAV files (16-bit PCM, so pcm_s16le framing is lossless); every `stereo_every`-th is stereo."""
    from schemas.wav import write_wav

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        dur = seconds if isinstance(seconds, (int, float)) else rng.uniform(*seconds)
        chans = 2 if stereo_every and i % stereo_every == 0 else 1
        audio = np.stack([synth_call(rng, dur, rate) for _ in range(chans)])
        p = Path(directory) / f"{prefix}-{i:03d}.wav"
        write_wav(p, rate, audio)
        paths.append(p)
    return paths


def reference_events(settings: Settings, files: Iterable[Path]) -> list[dict]:
    """The crash-free answer: `voicetone analyze`'s code path on the same files."""
    from voicetone.analyze import analyze_files

    return analyze_files(settings, [str(f) for f in files])


# ---------------------------------------------------------------- frames
def call_frames(files: Iterable[Path], frame_ms: int = 100, encoding: str = "pcm_s16le"):
    """Per call: list of (audio time s, key, value), as `voicetone replay` would send them."""
    from voicetone.framing import iter_frames, load_source

    return [list(iter_frames(load_source(f), frame_ms, encoding)) for f in files]


def producer(settings: Settings):
    from confluent_kafka import Producer

    return Producer({**settings.confluent_config(), "linger.ms": 5, "enable.idempotence": True})


def produce_all(settings: Settings, messages: Iterable[tuple[Optional[bytes], bytes]],
                topic: Optional[str] = None) -> int:
    """Send (key, value) pairs flat out; returns the count; raises if any is not delivered."""
    p = producer(settings)
    errors: list[str] = []
    n = 0
    for key, value in messages:
        produce(p, topic or settings.input_topic, key, value,
                lambda err, msg: err is not None and errors.append(str(err)))
        p.poll(0)
        n += 1
    left = p.flush(60)
    if left or errors:
        raise RuntimeError(f"{left} message(s) not delivered; errors: {errors[:3]}")
    return n


class PacedProducer(threading.Thread):
    """Plays calls as live streams: call i starts at `starts[i]` s, frames paced at `speed` x real time."""

    def __init__(self, settings: Settings, calls: list[list[tuple[float, bytes, bytes]]], starts: list[float],
                 speed: float, frame_ms: int = 100):
        super().__init__(daemon=True)
        self.settings = settings
        schedule = []
        for frames, t0 in zip(calls, starts):
            for audio_t, key, value in frames:
                schedule.append((t0 + (audio_t + frame_ms / 1000) / speed, key, value))
        schedule.sort(key=lambda x: x[0])
        self.schedule = schedule
        self.sent = 0
        self.partitions: dict[bytes, int] = {}  # key -> partition, from delivery reports
        self.error: Optional[BaseException] = None
        self.stop_flag = threading.Event()

    @property
    def total(self) -> int:
        return len(self.schedule)

    def run(self) -> None:
        try:
            p = producer(self.settings)
            errors: list[str] = []

            def on_delivery(err, msg) -> None:
                if err is not None:
                    errors.append(str(err))
                else:
                    self.partitions[msg.key()] = msg.partition()

            start = time.monotonic()
            for due, key, value in self.schedule:
                delay = start + due - time.monotonic()
                if delay > 0 and self.stop_flag.wait(delay):
                    return
                produce(p, self.settings.input_topic, key, value, on_delivery)
                p.poll(0)
                self.sent += 1
            if p.flush(60) or errors:
                raise RuntimeError(f"frames not delivered: {errors[:3]}")
        except BaseException as exc:  # reported by the test
            self.error = exc


# ---------------------------------------------------------------- event capture
class EventLog(threading.Thread):
    """Reads every output topic from the beginning into memory until stopped."""

    def __init__(self, settings: Settings, topics: Optional[list[str]] = None):
        super().__init__(daemon=True)
        self.settings = settings
        self.topics = topics or [settings.segments_topic, settings.aggregates_topic, settings.calls_topic,
                                 settings.dlq_topic]
        self.events: list[dict] = []
        self.keys: list[Optional[bytes]] = []
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.error: Optional[BaseException] = None
        self.assigned = threading.Event()

    def run(self) -> None:
        from confluent_kafka import Consumer

        try:
            c = Consumer({**self.settings.confluent_config(), "group.id": f"rel-log-{uuid.uuid4().hex[:8]}",
                          "auto.offset.reset": "earliest", "enable.auto.commit": False,
                          "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
                          "topic.metadata.refresh.interval.ms": 1000})
            c.subscribe(self.topics, on_assign=lambda cons, parts: self.assigned.set())
            try:
                while not self.stop_flag.is_set():
                    msgs = c.consume(500, 0.2)
                    batch, keys = [], []
                    for m in msgs:
                        if m.error():
                            continue
                        with contextlib.suppress(orjson.JSONDecodeError):
                            batch.append(orjson.loads(m.value()))
                            keys.append(m.key())
                    if batch:
                        with self.lock:
                            self.events.extend(batch)
                            self.keys.extend(keys)
            finally:
                c.close()
        except BaseException as exc:
            self.error = exc

    def snapshot(self) -> list[dict]:
        with self.lock:
            return list(self.events)

    def of_type(self, kind: str) -> list[dict]:
        return [e for e in self.snapshot() if e.get("type") == kind]

    def wait_for(self, predicate: Callable[[list[dict]], bool], timeout: float, what: str = "",
                 alive: Optional[Callable[[], Optional[str]]] = None) -> list[dict]:
        """Poll until `predicate(events)`; raise AssertionError with a summary on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if self.error is not None:
                raise self.error
            ev = self.snapshot()
            if predicate(ev):
                return ev
            if alive is not None and (why := alive()):
                raise AssertionError(f"while waiting for {what}: {why}")
            if time.monotonic() > deadline:
                kinds = {}
                for e in ev:
                    kinds[e.get("type")] = kinds.get(e.get("type"), 0) + 1
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; have {kinds}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.stop_flag.set()
        self.join(timeout=15)


# ---------------------------------------------------------------- processes
class WorkerProc:
    """`voicetone worker` as a subprocess in its own process group, with a metrics port."""

    def __init__(self, settings: Settings, log_path: Path, env: Optional[dict] = None):
        self.settings = settings
        self.log_path = Path(log_path)
        self.extra_env = dict(env or {})
        self.proc: Optional[subprocess.Popen] = None
        self.metrics_port = 0
        self.starts = 0

    def start(self) -> "WorkerProc":
        self.metrics_port = free_port()
        env = dict(os.environ, **FAST_GROUP, VOICETONE_BROKER=self.settings.broker,
                   VOICETONE_METRICS_PORT=str(self.metrics_port), OMP_NUM_THREADS="1",
                   VOICETONE_INFERENCE_THREADS="1", VOICETONE_DEVICE="cpu")
        for name in ("app_id", "model_path", "topic_partitions"):
            env[f"VOICETONE_{name.upper()}"] = str(getattr(self.settings, name))
        env.update(self.extra_env)
        if os.environ.get("VOICETONE_REL_WORKER_PYTHONPATH"):  # debugging aid: inject a patch into workers
            env["PYTHONPATH"] = os.environ["VOICETONE_REL_WORKER_PYTHONPATH"] + os.pathsep + env.get("PYTHONPATH", "")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen([sys.executable, "-m", "voicetone", "worker"], env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def alive(self) -> Optional[str]:
        """None while running; else why not (for wait_for)."""
        if self.proc is None:
            return "worker not started"
        if self.proc.poll() is not None:
            return f"worker exited with code {self.proc.returncode}; log tail:\n{self.log_tail()}"
        return None

    def log_tail(self, n: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n:]
        return ""

    def http(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def metric(self, name: str, labels: str = "") -> Optional[float]:
        """One sample of the Prometheus text (None if absent or the endpoint is down)."""
        try:
            _, body = self.http("/metrics")
        except OSError:
            return None
        total = None
        for line in body.decode().splitlines():
            if line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            mname = head.split("{", 1)[0]
            if mname == name and (not labels or labels in head):
                total = (total or 0.0) + float(value)
        return total

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (why := self.alive()) is not None:
                raise AssertionError(why)
            with contextlib.suppress(OSError):
                if self.http("/readyz", 1.0)[0] == 200:
                    return
            time.sleep(0.2)
        raise AssertionError(f"worker not ready within {timeout:.0f} s; log tail:\n{self.log_tail()}")

    def assigned(self) -> Optional[int]:
        """Number of input partitions the worker owns (None: not ready / unreachable)."""
        try:
            code, body = self.http("/readyz", 1.0)
        except OSError:
            return None
        if code != 200:
            return None
        reason = orjson.loads(body).get("reason", "")
        return int(reason.split()[0]) if reason.split() and reason.split()[0].isdigit() else None

    def wait_exit(self, timeout: float) -> Optional[int]:
        """Wait for the process to end by itself; None if it did not within `timeout`."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group; for SIGKILL, wait until it is gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgid(self.proc.pid), sig)
        if sig == signal.SIGKILL:
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> Optional[int]:
        if self.proc is not None:
            stop_process_group(self.proc, timeout=timeout)
            return self.proc.returncode
        return None


@contextlib.contextmanager
def running_broker(tmp_path: Path, **kwargs):
    b = EmbeddedBroker(log_path=str(tmp_path / "broker.log"), **kwargs).start()
    try:
        yield b
    finally:
        b.stop()


@contextlib.contextmanager
def workers(*procs: WorkerProc):
    try:
        yield procs
    finally:
        for w in procs:
            w.stop()


def base_settings(broker_url: str, model_path: Path, **kw) -> Settings:
    return Settings(broker=broker_url, app_id=f"rel-{uuid.uuid4().hex[:6]}", model_path=str(model_path),
                    device="cpu", topic_partitions=kw.pop("topic_partitions", 4), **kw)


def create_topics(settings: Settings) -> None:
    from streams.app import ensure_topics

    ensure_topics(settings)


# ---------------------------------------------------------------- comparisons
IGNORED = {"emitted_at_ms"}


def close(a, b, tol: float = FLOAT_TOL) -> bool:
    """Deep equality with a float tolerance; ignores emission timestamps."""
    if isinstance(a, dict) and isinstance(b, dict):
        ka, kb = set(a) - IGNORED, set(b) - IGNORED
        return ka == kb and all(close(a[k], b[k], tol) for k in ka)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, bool) or isinstance(b, bool):
            return a == b
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= tol
    return a == b


def index(events: Iterable[dict], kind: str) -> dict[tuple, list[dict]]:
    """(call, channel, segment_index) -> every copy of that event (calls: index 0)."""
    out: dict[tuple, list[dict]] = {}
    for e in events:
        if e.get("type") == kind:
            out.setdefault((e["call_id"], e["channel"], e.get("segment_index", 0)), []).append(e)
    return out


def compare_to_reference(got: list[dict], ref: list[dict], tol: float = FLOAT_TOL) -> tuple[dict, list[str]]:
    """The delivery guarantee, checked against a crash-free reference.

    * every segment/aggregate index and every call summary of the reference is published at least once;
    * nothing that the reference lacks is published;
    * every copy of an event has the reference's event_id and the reference's values (floats within 1e-5).
    Returns (counts of unique/copies/duplicated per type, list of problems).
    """
    stats, problems = {}, []
    for kind in ("segment", "aggregate", "call"):
        g, r = index(got, kind), index(ref, kind)
        missing = sorted(set(r) - set(g))
        extra = sorted(set(g) - set(r))
        if missing:
            problems.append(f"{len(missing)} {kind} event(s) never published, e.g. {missing[:5]}")
        if extra:
            problems.append(f"{len(extra)} unexpected {kind} event(s), e.g. {extra[:5]}")
        for k, copies in sorted(g.items()):
            if k not in r:
                continue
            want = r[k][0]
            for c in copies:
                if c["event_id"] != want["event_id"]:
                    problems.append(f"{kind} {k}: event_id {c['event_id']} != {want['event_id']}")
                elif not close(c, want, tol):
                    problems.append(f"{kind} {k} (emitted_at_ms {c.get('emitted_at_ms')}) differs from the "
                                    f"crash-free run:\n  got  {_strip(c)}\n  want {_strip(want)}")
        stats[kind] = {"unique": len(g), "copies": sum(len(v) for v in g.values()),
                       "duplicated": sum(len(v) > 1 for v in g.values())}
    return stats, problems


def _strip(e: dict) -> dict:
    return {k: v for k, v in e.items() if k not in IGNORED | {"type", "v", "event_id", "model_version"}}


def check_against_reference(got: list[dict], ref: list[dict], tol: float = FLOAT_TOL) -> dict:
    stats, problems = compare_to_reference(got, ref, tol)
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:12])
    return stats


def dump_events(path: Path, events: Iterable[dict]) -> None:
    Path(path).write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))


# ---------------------------------------------------------------- a whole scenario
def prepare_live(broker, model_path: Path, files) -> tuple[Settings, list[dict], "EventLog"]:
    """What every live test starts with: its topics, the crash-free reference
    events, and a running log of everything the worker publishes."""
    settings = base_settings(broker.url, model_path)
    create_topics(settings)
    ref = reference_events(settings, files)
    log = EventLog(settings)
    log.start()
    return settings, ref, log


class Scenario:
    """Broker + `n_workers` workers in one group + paced calls + event log; `disrupt(sc)` runs
    while the calls stream; then every call must complete as in the crash-free reference."""

    def __init__(self, tmp_path: Path, n_calls: int, seconds: tuple[float, float], spread_s: float, seed: int,
                 n_workers: int = 1, speed: float = 1.0, worker_env: Optional[dict] = None,
                 broker_kwargs: Optional[dict] = None):
        import random

        self.tmp_path = Path(tmp_path)
        self.rnd = random.Random(seed)
        self.model_path = tiny_model_path(self.tmp_path)
        self.files = make_calls(self.tmp_path, n_calls, seconds, seed=seed, stereo_every=4)
        self.frames = call_frames(self.files)
        self.starts = sorted(self.rnd.uniform(0, spread_s) for _ in self.files)
        self.spread_s, self.speed = spread_s, speed
        self.n_workers = n_workers
        self.worker_env = worker_env or {}
        self.broker_kwargs = broker_kwargs or {}
        self.workers: list[WorkerProc] = []
        self.notes: dict = {}

    def alive_any(self) -> Optional[str]:
        if any(w.alive() is None for w in self.workers):
            return None
        return "no worker alive:\n" + "\n".join(w.log_tail(1500) for w in self.workers)

    def run(self, disrupt: Callable[["Scenario"], None], final_timeout: float = 180) -> dict:
        with running_broker(self.tmp_path, **self.broker_kwargs) as broker:
            self.broker = broker
            self.settings, self.ref, self.log = prepare_live(broker, self.model_path, self.files)
            n_channels = sum(e["type"] == "call" for e in self.ref)
            n_aggs = sum(e["type"] == "aggregate" for e in self.ref)
            self.workers = [WorkerProc(self.settings, self.tmp_path / f"worker{i}.log", self.worker_env)
                            for i in range(self.n_workers)]
            self.feeder = PacedProducer(self.settings, self.frames, self.starts, self.speed)
            try:
                with workers(*self.workers):
                    for w in self.workers:
                        w.start()
                    for w in self.workers:
                        w.wait_ready()
                    self.feeder.start()
                    disrupt(self)
                    self.feeder.join(timeout=self.spread_s / self.speed + 180)
                    assert not self.feeder.is_alive(), "producer did not finish"
                    if self.feeder.error:
                        raise self.feeder.error

                    def complete(ev):
                        calls = {(e["call_id"], e["channel"]) for e in ev if e["type"] == "call"}
                        aggs = {(e["call_id"], e["channel"], e["segment_index"]) for e in ev
                                if e["type"] == "aggregate"}
                        return len(calls) >= n_channels and len(aggs) >= n_aggs
                    self.log.wait_for(complete, timeout=final_timeout, what=f"{n_channels} complete channels",
                                      alive=self.alive_any)
                    self.events = self.log.snapshot()
            finally:
                self.log.stop()
        dump_events(self.tmp_path / "events.jsonl", self.events)
        dump_events(self.tmp_path / "reference.jsonl", self.ref)
        dlq = [e for e in self.events if e["type"] == "dead_letter"]
        assert not dlq, f"good frames dead-lettered: {dlq[:3]}"
        stats = check_against_reference(self.events, self.ref)
        stats.update(self.notes)
        (self.tmp_path / "stats.json").write_text(orjson.dumps(stats, option=orjson.OPT_INDENT_2).decode())
        print(orjson.dumps(stats).decode())
        return stats

    def wait_published(self, w: WorkerProc, timeout: float = 90) -> float:
        """Until worker `w` has published at least one segment in this life."""
        deadline = time.monotonic() + timeout
        while True:
            assert w.alive() is None, w.alive()
            n = w.metric("voicetone_segments_published_total")
            if n:
                return n
            assert time.monotonic() < deadline, f"no segment published within {timeout:.0f} s"
            time.sleep(0.1)
