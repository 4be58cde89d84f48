"""`voicetone worker`: run the Faust worker until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Optional

from streams.settings import Settings

log = logging.getLogger("voicetone.worker")

# A Faust worker was seen to hang in shutdown: never let a stop take longer.
SHUTDOWN_GRACE_S = 15.0


def _hard_exit_after(seconds: float) -> None:
    def _kill() -> None:
        log.error("shutdown took more than %.0f s: exiting hard", seconds)
        os._exit(0)

    t = threading.Timer(seconds, _kill)
    t.daemon = True
    t.start()


_TORCH_DEFAULT_THREADS: Optional[int] = None


def set_inference_threads(settings: Settings) -> int:
    """torch's intra-op threads for `settings.inference_workers` concurrent model calls; returns the count.

    One call on all cores pays a barrier per operator that waits for its slowest thread, and on a machine
    shared with the event loop and the broker some thread is always late; concurrent calls on one core
    each do not wait for each other."""
    import torch

    global _TORCH_DEFAULT_THREADS
    if _TORCH_DEFAULT_THREADS is None:   # divide torch's own default, not what an earlier call set
        _TORCH_DEFAULT_THREADS = torch.get_num_threads()
    threads = settings.inference_threads or max(1, _TORCH_DEFAULT_THREADS // settings.inference_workers)
    torch.set_num_threads(threads)
    return threads


def apply_process_settings(settings: Settings) -> None:
    """Process-wide knobs of the worker, set before Faust builds its event loop: torch's intra-op threads,
    the GIL switch interval (the model thread waits up to one interval for the GIL after each eager operator
    while the event loop is busy), and the event loop implementation."""
    set_inference_threads(settings)
    sys.setswitchinterval(settings.switch_interval_ms / 1000)
    if settings.event_loop == "uvloop":
        import asyncio
        try:
            import uvloop
        except ImportError:   # not built for every platform (Windows): the standard loop still works
            log.warning("VOICETONE_EVENT_LOOP=uvloop but uvloop is not installed: using asyncio's loop")
            return
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def log_allocator() -> str:
    """Say which malloc the worker runs on; on glibc's, how to switch (streams/heap.py says why)."""
    from streams.heap import JEMALLOC, allocator, jemalloc_library

    name = allocator()
    if name == "glibc":
        log.info("memory allocator: glibc malloc, which keeps the peak of a backlog as RSS; for flat memory run "
                 "with LD_PRELOAD=%s (package libjemalloc2%s; the deploy images do)", JEMALLOC,
                 ", installed here" if jemalloc_library() else "")
    else:
        log.info("memory allocator: %s", name)
    return name


def tune_garbage_collector(settings: Settings) -> int:
    """Call once the worker is built. Python's collector walks every tracked object in a full collection
    while all threads wait; in a started worker most of them (the model, torch, Faust) live as long as
    the process, and a full collection took 110-150 ms at 300-375 channels (docs/benchmarks.md). Frozen,
    they are never walked again; a higher first threshold makes the youngest collections rarer. Returns
    the number of objects frozen."""
    import gc

    if settings.gc_freeze:
        gc.collect()
        gc.freeze()
    gc.set_threshold(settings.gc_threshold, *gc.get_threshold()[1:])
    return gc.get_freeze_count()


def run_worker(settings: Settings) -> int:
    """Serve /readyz first (not ready, and why: model loading, broker unreachable), load the model, wait
    for the broker (`streams.app.wait_for_broker`), then run the Faust worker."""
    import faust

    from model import load
    from streams.app import wait_for_broker
    from streams.metrics import HealthState, Metrics, start_http_server
    from streams.worker import Worker
    from voicetone.logs import setup_logging

    setup_logging(settings.log_level, json=settings.log_json)
    apply_process_settings(settings)
    metrics = Metrics()
    health = HealthState(metrics=metrics)
    server = None
    if settings.metrics_port:
        server = start_http_server(settings.metrics_host, settings.metrics_port, metrics, health)
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, server.port)
    try:
        model = load(settings.model_path, device=settings.device, precision=settings.precision, jit=settings.jit)
        health.set_model_loaded()
        partitions = wait_for_broker(settings, health)
        worker = Worker(settings, model=model, partitions=partitions, metrics=metrics, health=health)
    except BaseException:
        if server is not None:
            server.close()
        raise
    log.info("model %s on %s; %d input partitions; broker %s", worker.model.version, worker.model.device,
             worker.partitions, settings.broker)
    log_allocator()

    class _BoundedShutdown(faust.Worker):
        """Faust's worker with a bounded shutdown: SIGTERM/SIGINT start a clean
        stop and a timer that exits hard if the stop hangs."""

        def _on_sigterm(self) -> None:
            worker.health.set_not_ready("shutting down")
            _hard_exit_after(SHUTDOWN_GRACE_S)
            super()._on_sigterm()

        def _on_sigint(self) -> None:
            self._on_sigterm()

    fw = _BoundedShutdown(worker.app, loglevel=settings.log_level, quiet=True, override_logging=False)
    frozen = tune_garbage_collector(settings)
    log.info("garbage collector: %d start-up objects frozen, youngest generation collected every %d allocations",
             frozen, settings.gc_threshold)
    log.info("event loop %s.%s", type(fw.loop).__module__, type(fw.loop).__name__)
    try:
        fw.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        if server is not None:
            server.close()
    return 0
