"""The worker runs several model calls at once and still publishes each channel's segments in window order.

A model whose first call is slow and the rest fast, two inference workers, one window per batch: the
second window's call finishes first, and its segment must still come after the first's (the running
aggregate is built in window order). No broker: the Faust app is built but never started.
"""

from __future__ import annotations

import asyncio
import threading
import time

import orjson

from streams.worker import Worker
from tests.harness.offline import EnergyModel, frames, tone
from streams.settings import Settings


class SlowFirstModel(EnergyModel):
    def __init__(self):
        self.lock = threading.Lock()
        self.calls = self.active = self.most_active = 0

    def predict(self, audio, lengths):
        with self.lock:
            self.calls += 1
            first = self.calls == 1
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        time.sleep(0.4 if first else 0.02)
        try:
            return super().predict(audio, lengths)
        finally:
            with self.lock:
                self.active -= 1


def test_concurrent_model_calls_apply_in_window_order(monkeypatch):
    model = SlowFirstModel()
    w = Worker(Settings(app_id="t-order", broker="127.0.0.1:1", metrics_port=0, max_batch_size=1,
                        max_batch_wait_ms=0, inference_workers=2), model=model, partitions=1)
    sent = []
    monkeypatch.setattr(w.publisher, "send", lambda topic, key, value: sent.append(orjson.loads(value)))
    windows = []
    for offset, (k, v) in enumerate(frames("call-1", "agent", tone(15.0, 300), end=False)):
        windows += w.processor.ingest(v, k, 0, offset).windows
    assert len(windows) == 5

    async def main():
        task = asyncio.ensure_future(w.inference.run())
        for win in windows:
            w.inference.batcher.add(win, time.monotonic())
        w.inference.wakeup.set()
        deadline = time.monotonic() + 10
        while sum(e["type"] == "segment" for e in sent) < len(windows) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    segments = [e["segment_index"] for e in sent if e["type"] == "segment"]
    assert segments == [0, 1, 2, 3, 4]
    aggregates = [e for e in sent if e["type"] == "aggregate"]
    assert [a["segment_index"] for a in aggregates] == [0, 1, 2, 3, 4]
    assert model.most_active == 2   # two calls did overlap: the second finished while the first slept
