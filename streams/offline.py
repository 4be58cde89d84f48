"""Run the worker's logic over in-memory frames, with no broker.

`voicetone analyze` and the tests use this: the same `StreamProcessor`,
`Batcher`, silence gate and `run_model` as the worker, driven synchronously. The
events come out as a consumer of the topics reads them: the JSON the worker publishes.
"""

from __future__ import annotations

from typing import Iterable, Optional

from schemas.events import as_json_dict
from streams.inference import Batcher, run_model
from streams.pipeline import Output, StreamProcessor
from streams.settings import ProcessorConfig
from streams.silence import SilenceGate


class OfflineRunner:
    """Feeds frames to a processor and the model; collects every event in order."""

    def __init__(self, model, config: Optional[ProcessorConfig] = None, max_batch_size: int = 32):
        self.model = model
        self.processor = StreamProcessor(config or ProcessorConfig(), model.version, model.sample_rate)
        self.batcher: Batcher = Batcher(max_batch_size, max_wait_ms=float("inf"))
        self.gate = SilenceGate(self.processor.config.silence_dbfs)
        self.silent_windows = 0
        self.events: list[dict] = []

    def _collect(self, out: Output) -> None:
        for w in out.windows:
            self.batcher.add(w, 0.0)
        self.events.extend(map(as_json_dict, out.dead_letters))
        # segments and aggregates interleave per window, as the worker publishes them
        for seg, agg in zip(out.segments, out.aggregates):
            self.events.append(as_json_dict(seg))
            self.events.append(as_json_dict(agg))
        self.events.extend(map(as_json_dict, out.calls))

    def _run(self, batch) -> None:
        rates = [self.processor.rate_of(w) for w in batch]
        speech, sentiment, skipped = run_model(self.model, self.gate, batch, rates)
        self.silent_windows += skipped
        self._collect(self.processor.apply_results(batch, speech, sentiment))

    def feed(self, frames: Iterable[tuple[bytes, bytes]], chunk: int = 256) -> None:
        """Ingest ``(key, value)`` frames ``chunk`` at a time, as the worker takes them from Kafka."""
        batch: list[tuple[bytes, bytes, int, None]] = []
        for key, value in frames:
            batch.append((value, key, 0, None))
            if len(batch) >= chunk:
                self._ingest(batch)
        self._ingest(batch)

    def _ingest(self, batch: list) -> None:
        if batch:
            self._collect(self.processor.ingest_many(batch, 0.0))
            batch.clear()
        for ready in self.batcher.take_ready(0.0):  # full batches only (no wait bound offline)
            self._run(ready)

    def finish(self) -> list[dict]:
        self._collect(self.processor.finish_all())
        while len(self.batcher):
            for batch in self.batcher.flush():
                self._run(batch)
        return self.events
