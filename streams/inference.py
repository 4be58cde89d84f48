"""Windows in, model answers out: the batcher, the silence gate, batch preparation, and the worker's
inference loop that applies results in the order their batches were cut.

Windows from every call a worker owns queue in a `Batcher` (size and wait bound). A batch is gated
(`streams.silence`) and resampled on the event loop (`model_batch_for`), and only `predict_batch` runs in
a model thread: up to `inference_workers` batches at once, so ingestion goes on while the model computes.
The offline runner takes the same path synchronously (`run_model`).

Windows are cut at each channel's own sample rate and either read by the model at that rate (8 kHz for
the 16 kHz model: `model_parts`) or resampled to the model's rate one window at a time (`prepare_batch`),
so a window's samples depend only on the frames it covers: a worker that restarts mid-call and re-reads
the input re-creates them bit for bit, whatever the input rate.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Generic, Optional, TypeVar

import numpy as np

from schemas.resample import resample_fft_rows
from streams.aggregation import LABELS
from streams.silence import SilenceGate
from streams.stacking import shape_groups, stack_windows
from streams.windowing import Window

log = logging.getLogger("voicetone.worker")

T = TypeVar("T")


class Batcher(Generic[T]):
    """FIFO queue cut into batches of at most ``max_batch_size`` items, none waiting more than ``max_wait_ms``
    for company (a bigger batch is cheaper per window on the model). Clock-injected: ``now`` in seconds of any
    monotonic clock."""

    def __init__(self, max_batch_size: int, max_wait_ms: float) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self._items: deque[tuple[T, float]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T, now: float) -> None:
        self._items.append((item, now))

    def _pop(self, n: int) -> list[T]:
        return [self._items.popleft()[0] for _ in range(n)]

    def take_ready(self, now: float, limit: int | None = None) -> list[list[T]]:
        """Every full batch, plus the partial rest once its oldest item has
        waited ``max_wait_ms``; at most ``limit`` batches (the rest stay queued)."""
        out: list[list[T]] = []
        room = float("inf") if limit is None else limit
        while len(self._items) >= self.max_batch_size and len(out) < room:
            out.append(self._pop(self.max_batch_size))
        if self._items and len(out) < room and now - self._items[0][1] >= self.max_wait_s:
            out.append(self._pop(len(self._items)))
        return out

    def flush(self) -> list[list[T]]:
        """Everything left, in batches (shutdown, end of offline input)."""
        out = []
        while self._items:
            out.append(self._pop(min(self.max_batch_size, len(self._items))))
        return out

    def next_deadline(self) -> float | None:
        """When ``take_ready`` will next return something without new items
        (``now`` units); None when empty. A full batch is due immediately."""
        if not self._items:
            return None
        if len(self._items) >= self.max_batch_size:
            return self._items[0][1]
        return self._items[0][1] + self.max_wait_s


def prepare_batch(windows: list[Window], rates: list[int], model_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Resample each window to the model's rate and stack them zero-padded.

    Windows of the same rate and length (all full windows of a rate) are
    resampled together in one FFT call."""
    converted = _resampled(windows, rates, model_rate)
    if len(converted) == 1:   # the usual batch (full windows of one rate): already one block
        (idx, block), = converted.values()
        return block, np.full(len(windows), block.shape[1], dtype=np.int64)
    rows: list = [None] * len(windows)
    for idx, block in converted.values():
        for i, row in zip(idx, block):
            rows[i] = row
    return stack_windows(rows)


def _resampled(windows: list[Window], rates: list[int],
               model_rate: int) -> dict[tuple[int, int], tuple[list[int], np.ndarray]]:
    """The windows at the model's rate, as one [B, n] block per (rate, length) with the windows' indices:
    one FFT call each (a row is resampled bit for bit as if alone, so a window's samples do not depend on
    its batch)."""
    out = {}
    for key, idx in shape_groups(windows, rates).items():
        block = np.stack([windows[i].samples for i in idx]).astype(np.float32, copy=False)
        out[key] = (idx, block if key[0] == model_rate else resample_fft_rows(block, key[0], model_rate))
    return out


@dataclass
class ModelPart:
    """Windows of one rate stacked for one `predict` call: ``rows`` are their places in the batch."""

    rows: np.ndarray
    audio: np.ndarray
    lengths: np.ndarray
    rate: Optional[int] = None   # the audio's rate where the model takes it as it is (None: the model's)


@dataclass
class ModelBatch:
    """A batch cut for the model: the audible windows' audio, stacked by rate, and where their answers go.
    Built on the worker's event loop, which holds the GIL anyway: the model thread, which does
    not, waits for it after every numpy call beside a busy loop (up to the switch interval each time):
    gating and resampling 25 windows there took 246 ms instead of 9 (559 window by window;
    `bench/gil_convoy.py --batch 25`), while the traced `predict` itself slows only 1.3x."""

    size: int
    keep: np.ndarray
    parts: list = field(default_factory=list)   # [ModelPart]: usually one (every channel at one rate)

    def merge(self, answers) -> tuple[np.ndarray, np.ndarray, int]:
        """(speech, sentiment, windows skipped) for the whole batch from `predict_batch`'s answers."""
        return SilenceGate.merge(self.size, self.keep, *(answers or (None, None)))


def model_parts(windows: list[Window], rates: list[int], model_rate: int,
                reads_rate: Optional[Callable[[int], bool]] = None,
                resample_on_device: bool = False) -> list[ModelPart]:
    """The windows stacked for the model, one part per rate it is handed at. A rate the model reads as it
    is (``reads_rate``: 8 kHz for a 16 kHz log-mel model) is never resampled, whatever the batch; with
    ``resample_on_device`` (a GPU model) a rate whose windows all have one length is left for the model to
    resample; the rest are resampled here and join the model-rate part."""
    by_rate: dict[int, list[int]] = {}
    for i, r in enumerate(rates):
        by_rate.setdefault(r, []).append(i)
    parts: list[ModelPart] = []
    to_model_rate: list[int] = []
    for rate, idx in by_rate.items():
        if rate != model_rate and ((reads_rate is not None and reads_rate(rate)) or (
                resample_on_device and len({windows[i].samples.size for i in idx}) == 1)):
            parts.append(ModelPart(np.array(idx), *stack_windows([windows[i] for i in idx]), rate))
        else:
            to_model_rate.extend(idx)
    if to_model_rate:
        to_model_rate.sort()
        audio, lengths = prepare_batch([windows[i] for i in to_model_rate], [rates[i] for i in to_model_rate],
                                       model_rate)
        parts.append(ModelPart(np.array(to_model_rate), audio, lengths))
    return parts


def model_batch(gate: SilenceGate, windows: list[Window], rates: list[int], model_rate: int,
                reads_rate: Optional[Callable[[int], bool]] = None, resample_on_device: bool = False) -> ModelBatch:
    """The audible windows cut into `model_parts`."""
    size = len(windows)
    keep = gate.audible(windows, rates)
    if not keep.size:
        return ModelBatch(size, keep)
    if keep.size < size:
        windows, rates = [windows[i] for i in keep], [rates[i] for i in keep]
    return ModelBatch(size, keep, model_parts(windows, rates, model_rate, reads_rate, resample_on_device))


def model_batch_for(model, gate: SilenceGate, windows: list[Window], rates: list[int]) -> ModelBatch:
    """`model_batch` with what ``model`` takes as it is (a model without `reads_rate` takes its own rate)."""
    return model_batch(gate, windows, rates, model.sample_rate, getattr(model, "reads_rate", None),
                       getattr(model, "resample_on_device", False))


def predict_batch(model, batch: ModelBatch):
    """The model's answers for the audible windows (None when there are none): the only step that needs the
    model thread."""
    if not batch.parts:
        return None
    if len(batch.parts) == 1 and batch.parts[0].rate is None:
        part = batch.parts[0]
        return model.predict(part.audio, part.lengths)
    n = sum(len(p.rows) for p in batch.parts)
    speech, sentiment = np.zeros(n, dtype=np.float32), np.zeros((n, len(LABELS)), dtype=np.float32)
    for part in batch.parts:
        if part.rate is None:
            sp, se = model.predict(part.audio, part.lengths)
        else:
            sp, se = model.predict(part.audio, part.lengths, sample_rate=part.rate)
        speech[part.rows], sentiment[part.rows] = np.asarray(sp).reshape(-1), np.asarray(se).reshape(len(part.rows), -1)
    return speech, sentiment


def run_model(model, gate: SilenceGate, windows: list[Window], rates: list[int]) -> tuple[np.ndarray, np.ndarray, int]:
    """(speech, sentiment, windows skipped as silent): the worker's and the offline runner's one model path
    (the worker runs its steps on two threads: `model_batch_for` and `merge` on its loop, `predict_batch`
    in a model thread)."""
    batch = model_batch_for(model, gate, windows, rates)
    return batch.merge(predict_batch(model, batch))


def lower_thread_priority(nice: int) -> None:
    """Raise the calling thread's niceness by `nice` (Linux threads have their own; elsewhere, or without
    permission, the thread keeps its priority)."""
    if not nice:
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except (AttributeError, OSError) as exc:
        log.debug("could not lower the inference thread's priority: %s", exc)


def _predict_timed(model, batch):
    """`predict_batch` in a model thread, and the CPU time that thread spent on it (torch runs a call's
    operators in the calling thread when it has one intra-op thread, the worker's default on CPU)."""
    started = time.thread_time()
    answers = predict_batch(model, batch)
    return answers, time.thread_time() - started


class InferenceLoop:
    """The worker's model side: queued windows cut into batches, run in model threads, applied in order.

    ``apply(speech, sentiment, windows)`` is called on the event loop with each batch's results, in the
    order the batches were cut; ``rate_of(window)`` gives a window's sample rate."""

    def __init__(self, model, gate: SilenceGate, batcher: Batcher, workers: int, nice: int, metrics,
                 rate_of: Callable[[Window], int], apply: Callable[[np.ndarray, np.ndarray, list], None]):
        from concurrent.futures import ThreadPoolExecutor

        self.model, self.gate, self.batcher, self.workers, self.metrics = model, gate, batcher, workers, metrics
        self.rate_of, self.apply = rate_of, apply
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="voicetone-infer",
                                           initializer=lower_thread_priority, initargs=(nice,))
        self.wakeup = asyncio.Event()

    def add(self, windows: list[Window], now: float) -> None:
        """Queue windows for the model."""
        for w in windows:
            self.batcher.add(w, now)
        if windows:
            self.wakeup.set()

    async def run_batch(self, batch) -> tuple[np.ndarray, np.ndarray, list]:
        """Run one batch; on failure split it, and skip single windows that fail. The gate and any
        resampling run here on the loop, only `predict` in a model thread (`ModelBatch`);
        8 kHz windows go to the model as they are, and a model on a GPU resamples other rates itself."""
        loop = asyncio.get_running_loop()
        rates = [self.rate_of(w) for w in batch]
        started = time.perf_counter()
        try:
            cut = model_batch_for(self.model, self.gate, batch, rates)
            answers, cpu_s = await loop.run_in_executor(self.executor, _predict_timed, self.model, cut)
            self.metrics.inference_cpu_seconds.inc(cpu_s)
            speech, sentiment, skipped = cut.merge(answers)
        except Exception as exc:  # out of memory, bad input to the network...
            kind = type(exc).__name__
            self.metrics.inference_errors.labels(kind=kind).inc()
            if len(batch) == 1:
                log.error("inference failed for %s/%s window %d: %s", batch[0].call_id, batch[0].channel,
                          batch[0].index, exc)
                return np.array([np.nan], np.float32), np.full((1, 3), np.nan, np.float32), batch
            half = len(batch) // 2
            a = await self.run_batch(batch[:half])
            b = await self.run_batch(batch[half:])
            return np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]]), batch
        if skipped:
            self.metrics.windows_silent.inc(skipped)
        self.metrics.inference_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(len(batch))
        self.metrics.windows.inc(len(batch))
        return speech, sentiment, batch

    async def run(self) -> None:
        """Cut batches and run up to ``workers`` of them at once; apply their results in the order the
        batches were cut (a channel's windows are cut in order, so its segments and running aggregate stay
        in window order whichever call finishes first)."""
        running: deque[asyncio.Future] = deque()
        workers = self.workers
        try:
            while True:
                while running and running[0].done():
                    self.apply(*running.popleft().result())
                waiters: list[asyncio.Future] = [f for f in running if not f.done()]
                # finished calls behind a slower one wait to be applied; at most `workers` of them
                free = min(workers - len(waiters), 2 * workers - len(running))
                batches = self.batcher.take_ready(time.monotonic(), free) if free > 0 else []
                for batch in batches:
                    running.append(asyncio.ensure_future(self.run_batch(batch)))
                if batches:
                    continue
                timeout = None
                if free > 0:   # room for another batch: also wake for new windows or the oldest's wait bound
                    deadline = self.batcher.next_deadline()
                    self.wakeup.clear()
                    waiters.append(asyncio.ensure_future(self.wakeup.wait()))
                    timeout = 1.0 if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if free > 0:
                        waiters[-1].cancel()
        finally:
            for fut in running:   # stopping: nobody will apply them (the next owner redoes their windows)
                fut.cancel()
