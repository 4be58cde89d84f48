"""Prometheus metrics and the /metrics, /healthz, /readyz HTTP endpoint of a worker.

The metrics live on an instance-owned ``CollectorRegistry`` (not the global
default one) so tests and several in-process workers do not collide; the
dashboard in ``deploy/grafana`` and the probes in ``deploy/k8s`` are checked
against the names and paths defined here.
"""

from __future__ import annotations

import gc
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable, Optional

import orjson
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector,
                               generate_latest)
from prometheus_client.core import CounterMetricFamily

METRICS_PATH = "/metrics"
HEALTHZ_PATH = "/healthz"
READYZ_PATH = "/readyz"
PROBE_PATHS = (METRICS_PATH, HEALTHZ_PATH, READYZ_PATH)

# Exported metric family names (counters carry the ``_total`` suffix as scraped).
METRIC_NAMES = (
    "voicetone_frames_total",
    "voicetone_windows_total",
    "voicetone_windows_silent_total",
    "voicetone_segments_published_total",
    "voicetone_dead_letters_total",
    "voicetone_inference_errors_total",
    "voicetone_restore_errors_total",
    "voicetone_publish_errors_total",
    "voicetone_refetched_frames_total",
    "voicetone_gap_ms_total",
    "voicetone_duplicate_frames_total",
    "voicetone_batch_size",
    "voicetone_inference_seconds",
    "voicetone_inference_cpu_seconds_total",
    "voicetone_end_to_end_latency_seconds",
    "voicetone_active_channels",
    "voicetone_consumer_lag",
    "voicetone_unconfirmed_sends",
    "voicetone_ready",
    "voicetone_gc_seconds_total",
)


class GcTimer:
    """Seconds Python's cyclic garbage collector ran, per generation, from ``gc.callbacks``.

    A collection stops every thread that wants the GIL, the event loop included; a full one over a
    worker's objects took 110-150 ms before the worker froze its start-up objects (docs/benchmarks.md).
    Process-wide like the collector itself: ``install`` adds the one callback once."""

    _installed: "GcTimer | None" = None

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0

    @classmethod
    def install(cls) -> "GcTimer":
        if cls._installed is None:
            cls._installed = cls()
            gc.callbacks.append(cls._installed._on_gc)
        return cls._installed

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds[info["generation"]] += time.perf_counter() - self._started

    def collect(self):
        family = CounterMetricFamily("voicetone_gc_seconds", "Time Python's cyclic garbage collector ran "
                                     "(every thread that needs the GIL waits meanwhile)", labels=["generation"])
        for generation, seconds in enumerate(self.seconds):
            family.add_metric([str(generation)], seconds)
        yield family


class Metrics:
    """All worker metrics on one registry; the agent increments these directly."""

    def __init__(self, registry: Optional[CollectorRegistry] = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        if registry is None:   # process_cpu_seconds_total etc., beside which the model's CPU time is read
            ProcessCollector(registry=r)
        r.register(GcTimer.install())
        self.frames = Counter("voicetone_frames_total", "Audio frames consumed", registry=r)
        self.windows = Counter("voicetone_windows_total", "Analysis windows cut from the audio", registry=r)
        self.windows_silent = Counter(
            "voicetone_windows_silent_total", "Windows below the silence level, answered without the model",
            registry=r)
        self.segments_published = Counter(
            "voicetone_segments_published_total", "Segment events published", registry=r)
        self.dead_letters = Counter(
            "voicetone_dead_letters_total", "Frames sent to the dead-letter topic", ["reason"], registry=r)
        self.inference_errors = Counter(
            "voicetone_inference_errors_total", "Failed model calls", ["kind"], registry=r)
        self.restore_errors = Counter(
            "voicetone_restore_errors_total",
            "Failed reads of a checkpoint, a committed offset or skipped frames (retried)", registry=r)
        self.publish_errors = Counter(
            "voicetone_publish_errors_total", "Events whose send to Kafka failed (sent again)", registry=r)
        self.refetched_frames = Counter(
            "voicetone_refetched_frames_total",
            "Frames read straight from Kafka because the consumer skipped them", registry=r)
        self.gap_ms = Counter(
            "voicetone_gap_ms_total", "Milliseconds of missing audio filled with silence", registry=r)
        self.duplicate_frames = Counter(
            "voicetone_duplicate_frames_total", "Frames dropped as already seen (redelivery)", registry=r)
        self.batch_size = Histogram(
            "voicetone_batch_size", "Windows per model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.inference_seconds = Histogram(
            "voicetone_inference_seconds", "Duration of one batched model call",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0), registry=r)
        self.inference_cpu_seconds = Counter(
            "voicetone_inference_cpu_seconds_total",
            "CPU time of the threads that ran the model calls; over the process's CPU time (process_cpu_seconds_"
            "total) it is the share of the worker that is inference, the rest being Kafka, decoding, windowing and "
            "publishing (torch's extra intra-op threads, where there are more than one per call, are not counted)",
            registry=r)
        self.end_to_end_latency = Histogram(
            "voicetone_end_to_end_latency_seconds",
            "From the wall-clock end of a window's audio (frame ts_ms) to its segment being published",
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0), registry=r)
        self.active_channels = Gauge("voicetone_active_channels", "Open (call, channel) states", registry=r)
        self.consumer_lag = Gauge(
            "voicetone_consumer_lag", "Messages behind the partition end on the input topic", ["partition"],
            registry=r)
        self.unconfirmed_sends = Gauge(
            "voicetone_unconfirmed_sends", "Events and checkpoints sent but not yet acknowledged by Kafka "
            "(the next offset commit waits for them)", registry=r)
        self.ready = Gauge("voicetone_ready", "1 when the worker is ready (model loaded, partitions assigned)",
                           registry=r)

    def observe_publish_latency(self, audio_end_ts_ms: int, published_at_s: Optional[float] = None) -> float:
        """Record latency from the window's audio end (epoch ms) to publish; returns seconds observed.

        Clock skew between producer and worker can make this negative; those are
        clamped to 0 rather than dropped so the count still matches published segments.
        """
        now = time.time() if published_at_s is None else published_at_s
        latency = max(0.0, now - audio_end_ts_ms / 1000.0)
        self.end_to_end_latency.observe(latency)
        return latency

    def set_consumer_lag(self, lags: dict[int, int]) -> None:
        """Replace the per-partition lag; partitions no longer assigned disappear from the scrape."""
        self.consumer_lag.clear()
        for partition, lag in lags.items():
            self.consumer_lag.labels(partition=str(partition)).set(max(0, lag))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HealthState:
    """Liveness and readiness of one worker, updated from the event loop, read by the HTTP thread.

    Ready means the model is loaded, the broker answers, and the consumer group has handed out an
    assignment (possibly empty: a surplus worker with no partitions is a healthy
    standby, and failing it would only stall rolling updates). Live means the
    event loop called ``mark_progress`` within ``stall_after_s``.
    """

    def __init__(self, stall_after_s: float = 30.0, metrics: Optional[Metrics] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_after_s = stall_after_s
        self._metrics = metrics
        self._clock = clock
        self._lock = threading.Lock()
        self._model_loaded = False
        self._assigned: Optional[frozenset[int]] = None
        self._stopping: Optional[str] = None
        self._waiting: Optional[str] = None
        self._last_progress = clock()

    def set_model_loaded(self, loaded: bool = True) -> None:
        with self._lock:
            self._model_loaded = loaded
        self._publish()

    def set_assignment(self, partitions: Iterable[int]) -> None:
        with self._lock:
            self._assigned = frozenset(partitions)
        self._publish()

    def set_revoked(self) -> None:
        """During a rebalance the worker owns nothing until the next assignment."""
        with self._lock:
            self._assigned = None
        self._publish()

    def set_not_ready(self, reason: str) -> None:
        """Permanently not ready (shutting down, fatal error); liveness is unaffected."""
        with self._lock:
            self._stopping = reason
        self._publish()

    def set_waiting(self, reason: Optional[str]) -> None:
        """Not ready for `reason` (the broker cannot be reached yet) until called with None."""
        with self._lock:
            self._waiting = reason
        self._publish()

    def mark_progress(self) -> None:
        with self._lock:
            self._last_progress = self._clock()

    @property
    def last_progress(self) -> float:
        return self._last_progress

    def readiness(self) -> tuple[bool, str]:
        with self._lock:
            if self._stopping is not None:
                return False, self._stopping
            if not self._model_loaded:
                return False, "model not loaded"
            if self._waiting is not None:
                return False, self._waiting
            if self._assigned is None:
                return False, "no partition assignment yet"
            return True, f"{len(self._assigned)} partitions assigned"

    def liveness(self) -> tuple[bool, str]:
        with self._lock:
            idle = self._clock() - self._last_progress
        if idle > self.stall_after_s:
            return False, f"event loop made no progress for {idle:.1f}s"
        return True, f"last progress {idle:.1f}s ago"

    def _publish(self) -> None:
        if self._metrics is not None:
            self._metrics.ready.set(1 if self.readiness()[0] else 0)


async def heartbeat(health: HealthState, interval_s: float = 1.0) -> None:
    """Run as an asyncio task: proves to /healthz that the event loop is not blocked."""
    import asyncio

    while True:
        health.mark_progress()
        await asyncio.sleep(interval_s)


class MetricsServer(ThreadingHTTPServer):
    """The HTTP server; ``port`` is the bound port (useful when 0 asked for an ephemeral one)."""

    daemon_threads = True
    metrics: Metrics
    health: HealthState
    thread: threading.Thread

    @property
    def host(self) -> str:
        return self.server_address[0]

    @property
    def port(self) -> int:
        return self.server_address[1]

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer

    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        path = self.path.split("?", 1)[0]
        if path == METRICS_PATH:
            self._send(200, self.server.metrics.render(), CONTENT_TYPE_LATEST)
        elif path in (HEALTHZ_PATH, READYZ_PATH):
            check = self.server.health.liveness if path == HEALTHZ_PATH else self.server.health.readiness
            ok, reason = check()
            body = orjson.dumps({"status": "ok" if ok else "fail", "reason": reason})
            self._send(200 if ok else 503, body, "application/json")
        else:
            self._send(404, b"not found\n", "text/plain")

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        """Scrapes every few seconds would flood the worker log; stay quiet."""


def start_http_server(host: str, port: int, metrics: Metrics, health: HealthState) -> MetricsServer:
    """Serve the endpoints from a daemon thread; port 0 binds an ephemeral port (read ``server.port``).

    The caller decides whether settings' ``metrics_port == 0`` means "disabled"
    and skips calling this.
    """
    server = MetricsServer((host, port), _Handler)
    server.metrics = metrics
    server.health = health
    server.thread = threading.Thread(target=server.serve_forever, name="voicetone-metrics-http", daemon=True)
    server.thread.start()
    return server
