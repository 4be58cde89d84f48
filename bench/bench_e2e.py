"""End to end: N live channels in real time through a pipeline, latency measured outside it.

For each run: a fresh embedded broker (tansu), the topics created with
explicit configs, the target pipeline started as a subprocess, a readiness
probe (one short call; the run starts once its first segment comes back), then
the load: N concurrent channels (2 per call, the bundled 8 kHz sample calls
looped, pcm_s16le frames of --frame-ms, 100 ms by default), each frame sent once its audio has
"happened" with `ts_ms` set at send time; call starts are spread over one hop
so windows complete evenly in time. A separate consumer (its own thread, its
own explicit assignment) reads `sentiment.segments` and takes, per segment,

    latency = arrival time - send time of the window's last frame

(the last frame is found from the segment's `end_ms`: seq = end_ms / frame_ms - 1).
Only windows whose last frame was sent after the warm-up count.

A run passes when p99 <= --p99-ms (1000), at least 97% of the expected windows
arrived, or at most one per channel is missing (no backlog left behind) and the latency did not grow over the run
(median of the last third minus the first third <= 250 ms). Worker CPU (% of
one core) and RSS come from /proc over the measured part. The targets run on jemalloc where it is
installed, as the deploy images run the worker (`--allocator system`: glibc's malloc).

`--ceiling` (voicetone only) times the model path alone (`bench_drain.py --model-only`: the sample calls'
windows through the silence gate and `predict`, batched and threaded as the worker does) just before and
just after each run, and reports the run's windows/s (N / 2.5 s) against their mean: the target "at least
70% of the model-only ceiling", read in the same minutes as the run, since this machine's speed drifts by
a quarter within minutes.

Targets: `voicetone` (`python -m voicetone worker`, settings from VOICETONE_*),
`faust-naive` (bench/peers/faust_naive.py), `quix` (bench/peers/quix_app.py in
bench/.venv-quix). `--search` finds the largest N that passes: doubling from
--start, then two bisection steps.

    python -m bench.bench_e2e [--target voicetone] [--channels 40] [--measure 30] [--warmup 10]
    python -m bench.bench_e2e --target voicetone,faust-naive,quix --search
    python -m bench.bench_e2e --channels 450 --ceiling   # + the model path alone just before and after the run
    python -m bench.bench_e2e --channels 150 --call-s 60 --warmup 30 --measure 180 --stall-s 15 --stall-at 60 \
        [--allocator system]      # memory after a catch-up: RSS before the stall vs the last minute
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import orjson
from rich.console import Console
from rich.table import Table

from bench._common import (OUTPUT_TOPICS, ChannelAudio, cpu_seconds, create_topics, encode_frame,
                           exit_on_sigterm, load_average, machine, percentile, rss_bytes, sample_audio)
from voicetone.broker import EmbeddedBroker, stop_process_group
from voicetone.demo import FAST_GROUP
from streams.heap import jemalloc_library
from streams.kafka_client import produce

ROOT = Path(__file__).resolve().parents[1]
RATE = 8000
FRAME_MS = 100
INPUT = "audio.frames"
QUIX_PY = ROOT / "bench" / ".venv-quix" / "bin" / "python"
TARGETS = ("voicetone", "faust-naive", "quix")

console = Console(stderr=True, width=150)


# ---------------------------------------------------------------- targets
def quix_python() -> Path:
    """The Quix peer's interpreter: its own venv (it pins an older confluent-kafka), or BENCH_QUIX_PYTHON."""
    return Path(os.environ.get("BENCH_QUIX_PYTHON") or QUIX_PY)


def target_command(target: str, broker: str, partitions: int) -> list[str]:
    if target == "voicetone":
        return [sys.executable, "-m", "voicetone", "worker"]
    if target == "faust-naive":
        return [sys.executable, "-m", "bench.peers.faust_naive", "--broker", broker,
                "--partitions", str(partitions)]
    if target == "quix":
        py = quix_python()
        if not py.exists():
            raise SystemExit(f"{py} missing: see the setup line in docs/benchmarks.md")
        return [str(py), "-m", "bench.peers.quix_app", "--broker", broker]
    raise ValueError(target)


def preload_for(allocator: str) -> Optional[str]:
    """LD_PRELOAD for the target processes: jemalloc as the deploy images run them ("auto": where it is
    installed), or none ("system"). The peers get the same, so the comparison stays fair."""
    if allocator == "system":
        return None
    lib = jemalloc_library()
    if lib is None and allocator == "jemalloc":
        raise SystemExit("--allocator jemalloc: libjemalloc2 is not installed (apt-get install libjemalloc2)")
    return lib


def start_target(target: str, broker: str, partitions: int, log_path: Path,
                 metrics_port: int = 0, preload: Optional[str] = None) -> subprocess.Popen:
    env = dict(os.environ, **FAST_GROUP, VOICETONE_BROKER=broker, VOICETONE_TOPIC_PARTITIONS=str(partitions),
               VOICETONE_LOG_LEVEL=os.environ.get("VOICETONE_LOG_LEVEL", "WARNING"), PYTHONUNBUFFERED="1")
    if preload:
        env["LD_PRELOAD"] = preload
    if metrics_port:
        env["VOICETONE_METRICS_PORT"] = str(metrics_port)
    log = open(log_path, "wb")
    return subprocess.Popen(target_command(target, broker, partitions), env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, cwd=str(ROOT))


class Targets:
    """The target's processes: one, or K voicetone workers of one consumer group (as K replicas on
    one machine would be; the peers are one process each); CPU, RSS and the workers' metrics
    (counters, histogram sums and counts) are their sums."""

    def __init__(self, procs: list[subprocess.Popen], metrics_ports: Sequence[int] = ()):
        self.procs = procs
        self.metrics_ports = list(metrics_ports)

    @classmethod
    def start(cls, target: str, k: int, broker: str, partitions: int, logdir: Path, run_tag: str,
              metrics_ports: Sequence[int] = (), preload: Optional[str] = None) -> "Targets":
        """`metrics_ports`: one per process (voicetone), or none (the peers export no metrics)."""
        procs: list[subprocess.Popen] = []
        try:
            for i in range(k):
                procs.append(start_target(target, broker, partitions, logdir / f"{target}-{run_tag}-p{i}.log",
                                          metrics_ports[i] if metrics_ports else 0, preload))
        except BaseException:
            cls(procs).stop()
            raise
        return cls(procs, metrics_ports)

    def scrape(self) -> dict:
        """The workers' metrics summed over the processes ({} for a peer)."""
        total: dict = {}
        for port in self.metrics_ports:
            for name, value in scrape(port).items():
                total[name] = total.get(name, 0.0) + value
        return total

    def exited(self) -> str | None:
        for p in self.procs:
            if p.poll() is not None:
                return f"target process {p.pid} exited with code {p.returncode}"
        return None

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs)

    def signal(self, sig: int) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.kill(p.pid, sig)

    def rss_bytes(self) -> int:
        return sum(rss_bytes(p.pid) for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            stop_process_group(p, timeout=10)


WORKER_METRICS = ("voicetone_inference_seconds", "voicetone_batch_size", "voicetone_end_to_end_latency_seconds")
WITHIN_1S = 'voicetone_end_to_end_latency_seconds_bucket{le="1.0"}'   # windows the worker published within 1 s
MODEL_CPU = "voicetone_inference_cpu_seconds_total"   # CPU time of the model calls' threads
GC_SECONDS = "voicetone_gc_seconds_total"   # the garbage collector's time, summed over its generations
SILENT = "voicetone_windows_silent_total"   # windows the silence gate answered without the model


def per_minute(samples: list, start: tuple | None, lat_ms: np.ndarray, sent: np.ndarray) -> list[dict]:
    """A soak's trace by minute of the measurement: the worker's mean RSS and CPU, the broker's CPU and
    the p99 latency of windows sent in that minute, so that memory can be read beside the backlog."""
    if start is None:
        return []
    out, t0 = [], start[0]
    rows = [s for s in samples if s[0] >= t0]
    for m in range(int((rows[-1][0] - t0) // 60) if rows else 0):
        part = [s for s in rows if t0 + 60 * m <= s[0] <= t0 + 60 * (m + 1)]
        if len(part) < 2:
            continue
        dt = part[-1][0] - part[0][0]
        out.append({"minute": m + 1, "worker_rss_mb": round(float(np.mean([s[2] for s in part])) / 2**20, 1),
                    "worker_cpu_pct": round((part[-1][1] - part[0][1]) / dt * 100, 1),
                    "broker_cpu_pct": round((part[-1][3] - part[0][3]) / dt * 100, 1)})
    if len(sent):
        wall0 = sent.min()   # the first measured window's send time: minutes of latency by send time
        for row in out:
            sel = (sent >= wall0 + 60 * (row["minute"] - 1)) & (sent < wall0 + 60 * row["minute"])
            row["p99_ms"] = round(percentile(lat_ms[sel], 99), 1) if sel.any() else None
    return out


def mean_rss(samples: list, t0: float, t1: float) -> float | None:
    """Mean worker RSS (MB) of the 1 s samples taken in [t0, t1)."""
    xs = [s[2] for s in samples if t0 <= s[0] < t1]
    return round(float(np.mean(xs)) / 2**20, 1) if xs else None


def scrape(port: int) -> dict:
    """_sum and _count of the worker's histograms (its own view of the run)."""
    import urllib.request

    out = {}
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith((WITHIN_1S + " ", MODEL_CPU + " ", SILENT + " ")):
            out[line.split()[0]] = float(line.split()[-1])
        elif line.startswith(GC_SECONDS + "{"):
            out[GC_SECONDS] = out.get(GC_SECONDS, 0.0) + float(line.split()[-1])
        for name in WORKER_METRICS:
            for suffix in ("_sum", "_count"):
                if line.startswith(name + suffix + " "):
                    out[name + suffix] = float(line.split()[-1])
    return out


def worker_view(before: dict, after: dict) -> dict:
    def mean(name):
        n = after.get(name + "_count", 0) - before.get(name + "_count", 0)
        return (after.get(name + "_sum", 0) - before.get(name + "_sum", 0)) / n if n else float("nan")
    published = after.get("voicetone_end_to_end_latency_seconds_count", 0) - before.get(
        "voicetone_end_to_end_latency_seconds_count", 0)
    within = after.get(WITHIN_1S, 0) - before.get(WITHIN_1S, 0)
    # windows the model itself ran (batched minus the ones the silence gate answered) and its threads' CPU
    modelled = (after.get("voicetone_batch_size_sum", 0) - before.get("voicetone_batch_size_sum", 0)
                - (after.get(SILENT, 0) - before.get(SILENT, 0)))
    model_cpu = after.get(MODEL_CPU, 0) - before.get(MODEL_CPU, 0)
    return {"worker_model_cpu_ms_per_window": model_cpu * 1000 / modelled if modelled > 0 else float("nan"),
            "worker_mean_inference_ms": mean("voicetone_inference_seconds") * 1000,
            "worker_mean_batch": mean("voicetone_batch_size"),
            "worker_mean_publish_latency_ms": mean("voicetone_end_to_end_latency_seconds") * 1000,
            # the worker's own clock: audio end -> its send of the segment (the reader adds the broker's delivery)
            "worker_published_within_1s": within / published if published else float("nan")}


# ---------------------------------------------------------------- segment consumer
class SegmentReader(threading.Thread):
    """Reads sentiment.segments (explicit assignment at the end); records arrivals."""

    def __init__(self, broker: str):
        super().__init__(daemon=True)
        from confluent_kafka import OFFSET_END, Consumer, TopicPartition

        self.c = Consumer({"bootstrap.servers": broker, "group.id": "bench-e2e-reader",
                           "enable.auto.commit": False, "fetch.wait.max.ms": 10,
                           "log.connection.close": False})
        topic = OUTPUT_TOPICS[0]
        parts = self.c.list_topics(topic, timeout=20).topics[topic].partitions
        self.c.assign([TopicPartition(topic, p, OFFSET_END) for p in parts])
        self.arrivals: list[tuple[float, str, str, int]] = []   # (wall time, call, channel, end_ms)
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                msgs = self.c.consume(num_messages=1000, timeout=0.1)
                now = time.time()
                got = []
                for m in msgs:
                    if m.error() is not None:
                        continue
                    try:
                        ev = orjson.loads(m.value())
                        got.append((now, ev["call_id"], ev["channel"], int(ev["end_ms"])))
                    except Exception:
                        continue
                if got:
                    with self.lock:
                        self.arrivals.extend(got)
        finally:
            self.c.close()

    def take(self) -> list:
        with self.lock:
            out, self.arrivals = self.arrivals, []
        return out


# ---------------------------------------------------------------- load
def wait_ready(producer, reader: SegmentReader, proc: Targets, run_tag: str,
               timeout: float, partitions: int = 0) -> float:
    """Send a 7 s probe call (timestamps in the past) until a segment of it comes back. With
    ``partitions`` (several worker processes), one probe call into each partition, and every one of
    them must come back: all partitions are then owned by a worker that runs."""
    start = time.monotonic()
    track = sample_audio(RATE)[0]
    attempt = 0
    while time.monotonic() - start < timeout:
        targets = list(range(partitions)) if partitions else [None]
        calls = {f"probe-{run_tag}-{attempt}" + (f"-p{p}" if p is not None else ""): p for p in targets}
        base = int(time.time() * 1000) - 7000
        for call, part in calls.items():
            audio = ChannelAudio(track, 0)
            extra = {} if part is None else {"partition": part}
            for seq in range(70):
                producer.produce(INPUT, key=call.encode(), **extra,
                                 value=encode_frame(call, "agent", seq, RATE, audio.next(RATE // 10),
                                                    ts_ms=base + seq * FRAME_MS))
        producer.flush(10)
        waiting = set(calls)
        until = time.monotonic() + 15
        while time.monotonic() < until:
            if proc.exited():
                raise RuntimeError(f"{proc.exited()} before it was ready")
            waiting -= {a[1] for a in reader.take()}
            if not waiting:
                return time.monotonic() - start
            time.sleep(0.2)
        attempt += 1
    raise RuntimeError(f"no segment from the probe call within {timeout:.0f} s")


def model_ceiling(channels: int = 100, seconds: float = 30.0) -> dict:
    """`bench_drain.py --model-only` in its own process (torch stays out of the load generator)."""
    out = subprocess.run([sys.executable, "-m", "bench.bench_drain", "--model-only",
                          "--channels", str(channels), "--seconds", str(seconds)],
                         capture_output=True, text=True, timeout=600, cwd=str(ROOT))
    if out.returncode != 0 or not out.stdout.strip():
        raise RuntimeError(f"bench_drain.py --model-only failed (exit {out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def against_ceiling(n: int, before: dict, after: dict, run: dict | None = None) -> dict:
    """The run's windows/s (N channels, one window per 2.5 s hop) against the mean of the ceilings around it.

    With the run's own figures, also the two factors a shortfall splits into: the cores the model's threads
    got (live: their CPU seconds per second of the measurement; alone: the model path's) and the CPU each
    window the model ran cost (live: the model threads' CPU per window run; alone: the whole model path's,
    silence gate and stacking included, so alone reads a little high)."""
    ceiling = (before["windows_per_s"] + after["windows_per_s"]) / 2
    out = {"ceiling_windows_per_s": [round(before["windows_per_s"], 1), round(after["windows_per_s"], 1)],
           "vs_ceiling": n / 2.5 / ceiling}
    if all("cpu_s" in c for c in (before, after)):
        out["model_cores_alone"] = float(np.mean([c["cpu_s"] / c["seconds_timed"] for c in (before, after)]))
        out["model_cpu_ms_per_window_alone"] = float(np.mean([c["cpu_ms_per_model_window"] for c in (before, after)]))
    if run and "model_cpu_cores" in run:
        out["model_cores_live"] = run["model_cpu_cores"]
    return out


def run_once(target: str, n: int, args, run_tag: str) -> dict:
    from confluent_kafka import Producer

    logdir = Path(args.logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    broker = EmbeddedBroker(log_path=str(logdir / f"broker-{run_tag}.log")).start()
    proc = None
    stalled, stall_started = False, None
    reader = None
    try:
        create_topics(broker.url, [INPUT, *OUTPUT_TOPICS], args.partitions)
        from voicetone.broker import free_port
        metrics_before: dict = {}
        metrics_end: dict = {}
        processes = args.processes if target == "voicetone" else 1   # --processes: voicetone workers
        ports: list[int] = []
        while target.startswith("voicetone") and len(ports) < processes:
            port = free_port()
            ports += [] if port in ports else [port]
        proc = Targets.start(target, processes, broker.url, args.partitions, logdir, run_tag, ports,
                             preload_for(args.allocator))
        reader = SegmentReader(broker.url)
        reader.start()
        producer = Producer({"bootstrap.servers": broker.url, "linger.ms": args.linger_ms, "acks": 1,
                             "queue.buffering.max.messages": 1_000_000, "log.connection.close": False})
        ready_s = wait_ready(producer, reader, proc, run_tag, args.ready_timeout,
                             args.partitions if processes > 1 else 0)
        time.sleep(1.0)
        reader.take()

        # channels: 2 per call, a call's channels start together, call starts spread over one hop
        tracks = sample_audio(RATE)
        calls = (n + 1) // 2
        names, audio, offsets = [], [], np.zeros(n)
        for c in range(n):
            call, ch = divmod(c, 2)
            names.append((f"{run_tag}-{call:05d}", ("agent", "customer")[ch]))
            audio.append(ChannelAudio(tracks[c % len(tracks)], 7919 * call))
            offsets[c] = 2.5 * call / calls
        index = {k: (i, 0) for i, k in enumerate(names)}   # (call, channel) -> (channel slot, first frame)
        keys = [k[0].encode() for k in names]
        base = list(names)
        frame_ms = args.frame_ms
        call_frames = int(args.call_s * 1000 / frame_ms) if args.call_s else 0
        generation = np.zeros(n, dtype=np.int64)
        first = np.zeros(n, dtype=np.int64)                # frame position where the current call began
        calls_ended = 0
        total_s = args.warmup + args.measure
        max_frames = int(total_s * 1000 / frame_ms) + 50
        sent_at = np.zeros((n, max_frames))          # wall time each frame was sent (0: not sent)
        seqs = np.zeros(n, dtype=np.int64)
        step = RATE * frame_ms // 1000
        t0 = time.monotonic()
        due = t0 + offsets + frame_ms / 1000
        t_end = t0 + total_s
        wall0 = time.time()
        t_measure_wall = wall0 + args.warmup
        late_max = 0.0
        gen_cpu0 = time.process_time()
        samples = []       # (t, worker cpu s, worker rss, broker cpu s)
        next_sample = t0
        cpu_at_measure = None
        stall_at = t0 + args.warmup + args.stall_at if args.stall_s > 0 else float("inf")
        while True:
            now = time.monotonic()
            if now >= t_end:
                break
            if now >= stall_at:   # --stall-s: the worker frozen, as by a long GC pause or a stuck host
                if not stalled:
                    proc.signal(signal.SIGSTOP)
                    stalled, stall_at, stall_started = True, now + args.stall_s, now
                else:
                    proc.signal(signal.SIGCONT)
                    stalled, stall_at = False, float("inf")
            if now >= next_sample:
                samples.append((now, proc.cpu_seconds(), proc.rss_bytes(), cpu_seconds(broker.proc.pid)))
                next_sample += 1.0
                if cpu_at_measure is None and now >= t0 + args.warmup:
                    cpu_at_measure = samples[-1]
                    metrics_before = proc.scrape()
                if proc.exited():
                    raise RuntimeError(f"{proc.exited()} during the run")
            ready = np.nonzero(due <= now)[0]
            for c in ready:
                s = int(seqs[c])
                if s >= max_frames:
                    continue
                late_max = max(late_max, now - due[c])
                ts = time.time()
                local = s - int(first[c])
                end = bool(call_frames) and local == call_frames - 1
                value = encode_frame(names[c][0], names[c][1], local, RATE, audio[c].next(step),
                                     ts_ms=int(ts * 1000), end=end)
                produce(producer, INPUT, keys[c], value, wait_s=0.01)
                sent_at[c, s] = ts
                seqs[c] = s + 1
                due[c] += frame_ms / 1000
                if end:  # the call ends; a new call takes this channel slot (soak: state must not pile up)
                    calls_ended += 1
                    generation[c] += 1
                    first[c] = s + 1
                    names[c] = (f"{base[c][0]}-g{generation[c]}", base[c][1])
                    keys[c] = names[c][0].encode()
                    index[names[c]] = (c, s + 1)
            producer.poll(0)
            sleep = float(due.min()) - time.monotonic()
            if sleep > 0:
                time.sleep(min(sleep, 0.005))
        end_sample = (time.monotonic(), proc.cpu_seconds(), proc.rss_bytes(), cpu_seconds(broker.proc.pid))
        metrics_end = proc.scrape()
        gen_cpu = time.process_time() - gen_cpu0
        producer.flush(10)
        wall_end = time.time()
        # let the last windows arrive (anything later than the bound fails anyway)
        time.sleep(max(2.0, args.p99_ms / 1000 + 1.0))
        arrivals = reader.take()
        view = worker_view(metrics_before, proc.scrape()) if proc.metrics_ports else {}
    finally:
        if reader is not None:
            reader.stop.set()
            reader.join(timeout=5)
        if proc is not None:
            if stalled:
                proc.signal(signal.SIGCONT)
            proc.stop()
        broker.stop()

    lat, sent = [], []
    for recv, call, ch, end_ms in arrivals:
        slot = index.get((call, ch))
        if slot is None:
            continue
        c, begin = slot
        s = begin + int(round(end_ms / frame_ms)) - 1
        if not 0 <= s < max_frames or sent_at[c, s] == 0:
            continue
        if sent_at[c, s] < t_measure_wall:
            continue
        lat.append(recv - sent_at[c, s])
        sent.append(sent_at[c, s])
    lat_ms = np.asarray(lat) * 1000
    sent = np.asarray(sent)
    # windows whose last frame was sent in [measure start, end - 1 s]
    horizon = wall_end - 1.0
    got = int(np.sum(sent <= horizon))
    per_s = 1 / 2.5  # windows per second of a channel's audio
    if args.call_s:  # calls that end: full windows, plus a last partial one only for >= 1 s of uncovered audio
        full = int((args.call_s - 5.0) // 2.5) + 1 if args.call_s >= 5.0 else 0
        covered = (full - 1) * 2.5 + 5.0 if full else 0.0
        per_s = (full + (args.call_s - covered >= 1.0)) / args.call_s
    expected = n * max(0.0, horizon - t_measure_wall) * per_s
    completeness = got / expected if expected else float("nan")
    order = np.argsort(sent)
    thirds = np.array_split(lat_ms[order], 3) if len(lat_ms) >= 3 else [lat_ms] * 3
    growth = float(np.median(thirds[2]) - np.median(thirds[0])) if len(lat_ms) >= 3 else float("nan")
    measured = end_sample[0] - cpu_at_measure[0] if cpu_at_measure else float("nan")
    worker_cpu = (end_sample[1] - cpu_at_measure[1]) / measured * 100 if cpu_at_measure else float("nan")
    # the model calls' share of the worker's CPU over the measurement: 1 - share is what Kafka, decoding,
    # windowing and publishing cost, whatever else (broker, load generator) shares the machine
    model_share = gc_share = float("nan")
    worker_cpu_s = max(1e-9, end_sample[1] - cpu_at_measure[1]) if cpu_at_measure else float("nan")
    model_cores = float("nan")
    if cpu_at_measure and MODEL_CPU in metrics_end and MODEL_CPU in metrics_before:
        model_share = (metrics_end[MODEL_CPU] - metrics_before[MODEL_CPU]) / worker_cpu_s
        model_cores = (metrics_end[MODEL_CPU] - metrics_before[MODEL_CPU]) / measured
    if cpu_at_measure and GC_SECONDS in metrics_end and GC_SECONDS in metrics_before:
        gc_share = (metrics_end[GC_SECONDS] - metrics_before[GC_SECONDS]) / worker_cpu_s
    broker_cpu = (end_sample[3] - cpu_at_measure[3]) / measured * 100 if cpu_at_measure else float("nan")
    rss = [s[2] for s in samples if cpu_at_measure and s[0] >= cpu_at_measure[0]] + [end_sample[2]]
    # memory over the run, after the warm-up: RSS at the start of the measurement, then the
    # mean of each later fifth; flat after warm-up = no leak (the soak: --call-s 60 --measure 1800)
    rss_fifths = [float(np.mean(part)) / 2**20 for part in np.array_split(np.asarray(rss, float), 5)
                  if len(part)] if len(rss) >= 5 else []
    r = {
        "target": target, "processes": processes, "channels": n, "ready_s": round(ready_s, 1), "segments": got,
        "per_minute": per_minute(samples, cpu_at_measure, lat_ms, sent),
        "calls_ended": calls_ended, "worker_rss_fifths_mb": [round(x, 1) for x in rss_fifths],
        "stall_s": args.stall_s if stall_started is not None else 0.0,
        "worker_rss_before_stall_mb": mean_rss(samples, stall_started - 30, stall_started) if stall_started else None,
        "worker_rss_last_minute_mb": mean_rss(samples, end_sample[0] - 60, end_sample[0]),
        "expected_windows": round(expected), "completeness": completeness,
        "p50_ms": percentile(lat_ms, 50), "p99_ms": percentile(lat_ms, 99), "max_ms": percentile(lat_ms, 100),
        "growth_ms": growth, "worker_cpu_pct": worker_cpu, "worker_model_cpu_share": model_share,
        "worker_gc_cpu_share": gc_share, "model_cpu_cores": model_cores,
        "worker_rss_mb": max(rss) / 2**20,
        "worker_rss_growth_mb": (rss[-1] - rss[0]) / 2**20, "broker_cpu_pct": broker_cpu,
        "loadgen_cpu_pct": gen_cpu / total_s * 100, "loadgen_late_max_ms": late_max * 1000,
        "loadavg": load_average(), **view,
    }
    # windows missing: a backlog, unless within one window per channel (window boundaries differ
    # between pipelines: Quix aligns windows to the epoch, so a channel may have one fewer in the span)
    missing = expected - got
    complete_ok = completeness >= args.min_complete or missing <= n
    r["pass"] = bool(len(lat_ms) > 0 and r["p99_ms"] <= args.p99_ms and complete_ok
                     and growth <= args.max_growth_ms)
    return r


def measured_run(target: str, n: int, args, run_tag: str) -> dict:
    """`run_once`, with --ceiling (voicetone) between two model-only ceilings (one process's model path:
    with --processes K, the run's windows/s are still set against one process's ceiling)."""
    if not (args.ceiling and target == "voicetone"):
        return run_once(target, n, args, run_tag)
    before = model_ceiling()
    r = run_once(target, n, args, run_tag)
    return {**r, **against_ceiling(n, before, model_ceiling(), r)}


def show(r: dict) -> None:
    ok = "[green]pass[/]" if r["pass"] else "[red]fail[/]"
    console.print(f"  {r['target']:<11} N={r['channels']:<5} {ok}  p50 {r['p50_ms']:.0f} ms  p99 {r['p99_ms']:.0f} ms  "
                  f"windows {r['segments']}/{r['expected_windows']} ({r['completeness']:.0%})  growth {r['growth_ms']:+.0f} ms  "
                  f"worker {r['worker_cpu_pct']:.0f}% CPU {r['worker_rss_mb']:.0f} MB  load {r['loadavg']}")
    if "vs_ceiling" in r:
        before, after = r["ceiling_windows_per_s"]
        console.print(f"    {r['channels'] / 2.5:.0f} windows/s = {r['vs_ceiling']:.0%} of the model path alone "
                      f"({before:.0f} windows/s just before, {after:.0f} just after)")
        if "model_cores_alone" in r and "model_cores_live" in r:
            console.print(f"    the model's threads had {r['model_cores_live']:.2f} cores live against "
                          f"{r['model_cores_alone']:.2f} alone; CPU per window the model ran "
                          f"{r.get('worker_model_cpu_ms_per_window', float('nan')):.1f} ms live against "
                          f"{r['model_cpu_ms_per_window_alone']:.1f} ms alone")
    if r.get("calls_ended"):
        console.print(f"    {r['calls_ended']} calls ended and replaced; worker RSS by fifth of the measurement: "
                      + ", ".join(f"{x:.0f}" for x in r["worker_rss_fifths_mb"]) + " MB")
    if len(r.get("per_minute", [])) >= 5:
        console.print("    by minute (worker RSS MB / broker CPU % / p99 ms): " + ", ".join(
            f"{m['worker_rss_mb']:.0f}/{m['broker_cpu_pct']:.0f}/{m.get('p99_ms') or float('nan'):.0f}"
            for m in r["per_minute"]))
    if r.get("stall_s"):
        console.print(f"    worker frozen {r['stall_s']:.0f} s: RSS {r['worker_rss_before_stall_mb']:.0f} MB before, "
                      f"{r['worker_rss_last_minute_mb']:.0f} MB over the last minute")
    if "worker_mean_inference_ms" in r:
        console.print(f"    worker's own view: mean batch {r['worker_mean_batch']:.1f}, mean model call "
                      f"{r['worker_mean_inference_ms']:.0f} ms, mean audio end -> publish "
                      f"{r['worker_mean_publish_latency_ms']:.0f} ms, published within 1 s "
                      f"{r.get('worker_published_within_1s', float('nan')):.1%}, model calls "
                      f"{r.get('worker_model_cpu_share', float('nan')):.0%} of its CPU, garbage collector "
                      f"{r.get('worker_gc_cpu_share', float('nan')):.1%}")


def search(target: str, args, tag: str) -> tuple[int, list[dict]]:
    """Doubling from --start, then bisection. With --budget-s no trial starts that would likely end
    past the budget (a trial is assumed to take as long as the longest so far); a search cut short
    before any failure leaves its N as a lower bound, marked in the last run."""
    runs: list[dict] = []
    started = time.monotonic()
    longest = 0.0

    def trial(n: int) -> bool | None:
        nonlocal longest
        if args.budget_s and runs and time.monotonic() - started + longest > args.budget_s:
            runs[-1]["search_cut_by_budget"] = True
            console.print(f"  {target}: --budget-s {args.budget_s:.0f} s reached, no trial at N={n}")
            return None
        t = time.monotonic()
        r = measured_run(target, n, args, f"{tag}{len(runs)}")
        longest = max(longest, time.monotonic() - t)
        runs.append(r)
        show(r)
        return r["pass"]

    n, lo, hi = args.start, 0, None
    while True:
        ok = trial(n)
        if ok is None:
            return lo, runs
        if ok:
            lo = n
            if hi is not None or n >= args.max_channels:
                break
            n = min(args.max_channels, n * 2)
        else:
            hi = n
            if lo or n <= 1:
                break
            n = max(1, n // 2)   # even the start fails: go down
    for _ in range(args.bisect):
        if hi is None or lo == 0 or hi - lo <= max(2, lo // 8):
            break
        mid = (lo + hi) // 2
        ok = trial(mid)
        if ok is None:
            break
        if ok:
            lo = mid
        else:
            hi = mid
    return lo, runs


def main(argv=None) -> int:
    exit_on_sigterm()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", default="voicetone", help="comma list of: voicetone, faust-naive, quix; or all")
    p.add_argument("--channels", type=int, default=40, help="concurrent channels (without --search)")
    p.add_argument("--search", action="store_true", help="find the largest N that passes")
    p.add_argument("--start", type=int, default=20, help="first N of --search (then doubled)")
    p.add_argument("--max-channels", type=int, default=2000)
    p.add_argument("--bisect", type=int, default=2, help="bisection steps after the doubling")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds of load before measuring")
    p.add_argument("--measure", type=float, default=30.0, help="seconds measured")
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--frame-ms", type=int, default=FRAME_MS,
                   help="audio per frame (a divisor of the 2500 ms hop); 500 sends 5x fewer messages")
    p.add_argument("--processes", type=int, default=1,
                   help="voicetone worker processes in one consumer group (as replicas on one machine)")
    p.add_argument("--budget-s", type=float, default=0.0,
                   help="--search starts no trial once this many seconds have passed (0: no limit)")
    p.add_argument("--p99-ms", type=float, default=1000.0)
    p.add_argument("--min-complete", type=float, default=0.97)
    p.add_argument("--max-growth-ms", type=float, default=250.0)
    p.add_argument("--ready-timeout", type=float, default=120.0)
    p.add_argument("--call-s", type=float, default=0.0,
                   help="calls last this long, then send `end` and a new call takes the channel (0: one call "
                        "per channel for the whole run); with a long --measure this is the memory soak")
    p.add_argument("--stall-s", type=float, default=0.0,
                   help="freeze the target (SIGSTOP) this long, --stall-at s into the measurement: the backlog "
                        "it then catches up is what shows whether memory returns to where it was")
    p.add_argument("--stall-at", type=float, default=60.0)
    p.add_argument("--linger-ms", type=float, default=100.0,
                   help="the load generator's producer linger, as a media gateway batching its frames per "
                        "partition: the embedded broker's cost follows the record batches it is sent and stores "
                        "(bench/broker_batches.py); at 5 ms it took "
                        "~1 core of the 2 at 375 channels and ~2 cores on the GPU machine at 1500. Latency still "
                        "counts from each frame's send time, so the linger is charged to the pipeline")
    p.add_argument("--allocator", choices=("auto", "jemalloc", "system"), default="auto",
                   help="malloc of the target processes: jemalloc via LD_PRELOAD as in the deploy images "
                        "(auto: where libjemalloc2 is installed), or system (glibc)")
    p.add_argument("--logdir", default=os.path.join(tempfile.gettempdir(), "voicetone-bench-e2e"))
    p.add_argument("--ceiling", action="store_true",
                   help="voicetone: time the model path alone just before and after each run (bench_drain.py "
                        "--model-only) and report the run against it")
    args = p.parse_args(argv)
    if args.frame_ms <= 0 or 2500 % args.frame_ms or RATE * args.frame_ms % 1000:
        p.error("--frame-ms must divide the 2500 ms hop into whole frames of whole samples")
    targets = list(TARGETS) if args.target == "all" else args.target.split(",")
    load_before = load_average()
    settings = {k: v for k, v in os.environ.items() if k.startswith("VOICETONE_")}
    allocator = preload_for(args.allocator) or "glibc malloc"
    console.print(f"logs in {args.logdir}; load avg {load_before}; {machine()['cpus']} CPUs; "
                  f"worker settings {settings or 'defaults'}; targets on {allocator}")
    results, best, cut = [], {}, set()
    for i, target in enumerate(targets):
        if args.search:
            best[target], runs = search(target, args, f"{target[:2]}{i}s")
            if any(r.get("search_cut_by_budget") for r in runs):
                cut.add(target)
            results += runs
        else:
            r = measured_run(target, args.channels, args, f"{target[:2]}{i}")
            results.append(r)
            show(r)
    t = Table(title=f"end to end, {args.frame_ms} ms frames, 8 kHz; p99 bound {args.p99_ms:.0f} ms; "
                    f"{args.measure:.0f} s measured after {args.warmup:.0f} s; load avg before {load_before}, "
                    f"{machine()['cpus']} CPUs")
    for col in ("target", "N", "pass", "p50 ms", "p99 ms", "windows", "growth ms", "worker CPU %", "worker RSS MB",
                "broker CPU %", "loadgen CPU %", "load avg", "vs model alone"):
        t.add_column(col, justify="right")
    for r in results:
        t.add_row(r["target"], str(r["channels"]), "yes" if r["pass"] else "no", f"{r['p50_ms']:.0f}",
                  f"{r['p99_ms']:.0f}", f"{r['completeness']:.0%}", f"{r['growth_ms']:+.0f}",
                  f"{r['worker_cpu_pct']:.0f}", f"{r['worker_rss_mb']:.0f}", f"{r['broker_cpu_pct']:.0f}",
                  f"{r['loadgen_cpu_pct']:.0f}", r["loadavg"],
                  f"{r['vs_ceiling']:.0%}" if "vs_ceiling" in r else "-")
    console.print(t)
    if best:
        ref = best.get("voicetone")
        for target, n in best.items():
            ratio = f" (voicetone / {target}: {ref / n:.1f}x)" if ref and n and target != "voicetone" else ""
            note = " (search cut short by --budget-s: a lower bound if no larger N failed)" if target in cut else ""
            console.print(f"largest N sustained: {target} {n}{ratio}{note}")
    print(json.dumps({"bench": "e2e", "machine": {**machine(), "loadavg_before": load_before},
                      "settings": settings, "allocator": allocator, "args": {k: v for k, v in vars(args).items() if k != "logdir"},
                      "max_channels": best, "cut_by_budget": sorted(cut), "runs": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
