"""Inference failures split or skip the batch, are counted, and never kill the worker.

A model that raises out-of-memory on batches larger than 2 and returns NaN for one
poisoned window, driven through the worker's own batch runner (`InferenceLoop.run_batch`)
and the processor: every good window still gets its segment, the poisoned one is
dead-lettered, and the error metric counts the failed model calls. No broker: the
Faust app is built but never started.
"""

from __future__ import annotations

import asyncio

import numpy as np

from streams.worker import Worker
from tests.harness.offline import EnergyModel, frames, tone
from streams.settings import Settings

POISON = 0.123


class FlakyModel(EnergyModel):
    calls: list[int]

    def __init__(self):
        self.calls = []

    def predict(self, audio, lengths):
        self.calls.append(len(lengths))
        if len(lengths) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        speech, sent = super().predict(audio, lengths)
        for i, row in enumerate(np.asarray(audio)):
            if np.isclose(row[0], POISON, atol=1e-3):  # the poisoned window: the network answers NaN
                speech = np.array(speech, dtype=np.float32)
                speech[i] = np.nan
        return speech, sent


def _one_window_per_call(w: Worker, prefix: str, freqs: list[int], poisoned: int) -> list:
    """5 s calls (one window each) through the worker's processor; call `poisoned` carries the marker."""
    windows = []
    for c, freq in enumerate(freqs):
        audio = tone(5.0, freq)
        if c == poisoned:
            audio[0] = POISON
        for offset, (k, v) in enumerate(frames(f"{prefix}-{c}", "0", audio)):
            windows += w.processor.ingest(v, k, 0, 100 * c + offset).windows
    return windows


def test_out_of_memory_splits_the_batch_and_nan_output_is_dead_lettered(tmp_path):
    model = FlakyModel()
    w = Worker(Settings(app_id="t-infer", broker="127.0.0.1:1", metrics_port=0), model=model, partitions=1)
    windows = _one_window_per_call(w, "call", [300, 400, 500, 600], poisoned=2)
    assert len(windows) == 4

    speech, sentiment, batch = asyncio.run(w.inference.run_batch(windows))
    out = w.processor.apply_results(batch, speech, sentiment)

    assert model.calls[0] == 4 and max(model.calls[1:]) <= 2      # split after the OOM, then served
    assert w.metrics.inference_errors.labels(kind="RuntimeError")._value.get() >= 1
    assert sorted(e["call_id"] for e in out.segments) == ["call-0", "call-1", "call-3"]
    [dl] = out.dead_letters
    assert dl["reason"].startswith("model_output_") and "call-2" in dl["detail"] + str(dl)
    assert {e["call_id"] for e in out.calls} == {"call-0", "call-1", "call-2", "call-3"}  # every call still ends
    w.executor.shutdown(wait=True)


def test_a_window_that_always_fails_is_skipped_and_the_rest_are_served():
    class Broken(EnergyModel):
        def predict(self, audio, lengths):
            if any(np.isclose(row[0], POISON, atol=1e-3) for row in np.asarray(audio)):
                raise ValueError("bad input to the network")
            return super().predict(audio, lengths)

    w = Worker(Settings(app_id="t-infer2", broker="127.0.0.1:1", metrics_port=0), model=Broken(), partitions=1)
    windows = _one_window_per_call(w, "x", [400, 450, 500], poisoned=1)
    speech, sentiment, batch = asyncio.run(w.inference.run_batch(windows))
    assert np.isnan(speech[1]) and not np.isnan(speech[[0, 2]]).any()
    out = w.processor.apply_results(batch, speech, sentiment)
    assert sorted(e["call_id"] for e in out.segments) == ["x-0", "x-2"]
    assert len(out.dead_letters) == 1
    assert w.metrics.inference_errors.labels(kind="ValueError")._value.get() >= 2  # the batch, then the window
    w.executor.shutdown(wait=True)


def test_the_model_threads_cpu_time_is_counted():
    """`voicetone_inference_cpu_seconds_total` grows by the CPU time the model call burned in its thread
    (a model that spins for 50 ms of CPU), not by wall time spent waiting (one that sleeps 50 ms)."""
    import time

    class Spinning(EnergyModel):
        def __init__(self, spin: bool):
            self.spin = spin

        def predict(self, audio, lengths):
            if self.spin:
                end = time.thread_time() + 0.05
                while time.thread_time() < end:
                    pass
            else:
                time.sleep(0.05)
            return super().predict(audio, lengths)

    counted = {}
    for spin in (True, False):
        w = Worker(Settings(app_id=f"t-cpu-{spin}", broker="127.0.0.1:1", metrics_port=0), model=Spinning(spin),
                   partitions=1)
        windows = _one_window_per_call(w, f"cpu{spin}", [300, 400], poisoned=-1)
        asyncio.run(w.inference.run_batch(windows))
        counted[spin] = w.metrics.inference_cpu_seconds._value.get()
        w.executor.shutdown(wait=True)
    assert 0.05 <= counted[True] < 1.0
    assert counted[False] < 0.04
    assert "process_cpu_seconds_total" in w.metrics.render().decode()   # what the model's share is read against
