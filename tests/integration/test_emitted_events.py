"""Every event the worker publishes validates against its exported JSON Schema (schemas/json/) and parses back
into its model: segments, aggregates, call summaries (ended by their end frame and by idle timeout, with and
without frame metadata) and dead letters (a refused frame, a window the model answered NaN for). The events
are taken where the worker hands them to Kafka, as the bytes it sends. No broker: the Faust app is built but
never started."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import numpy as np

from schemas.events import parse_event
from streams.settings import Settings
from streams.worker import Worker
from tests.harness import ROOT
from tests.harness.offline import EnergyModel, frames, tone

SCHEMA_DIR = ROOT / "schemas" / "json"
SCHEMA_OF_TOPIC = {"sentiment.segments": "segment-event", "sentiment.aggregates": "aggregate-event",
                   "sentiment.calls": "call-event", "audio.frames.dlq": "dead-letter"}


class NanForQuietModel(EnergyModel):
    """The energy model, but NaN speech for windows whose first sample is exactly 0.125 (a poisoned window)."""

    def predict(self, audio, lengths):
        speech, sentiment = super().predict(audio, lengths)
        speech = np.array(speech, dtype=np.float32)
        speech[np.isclose(np.asarray(audio)[:, 0], 0.125, atol=1e-4)] = np.nan
        return speech, sentiment


def _published() -> list[tuple[str, bytes]]:
    w = Worker(Settings(app_id="t-emitted", broker="127.0.0.1:1", metrics_port=0, idle_timeout_s=30),
               model=NanForQuietModel(), partitions=1)
    sent: list[tuple[str, bytes]] = []
    w.publisher.send = lambda topic, key, value: sent.append((topic.get_topic_name(), value))
    poisoned = tone(5.0, 500)
    poisoned[0] = 0.125
    messages = (frames("call-a", "agent", tone(9.0, 300), ts_start_ms=1_700_000_000_000,
                       meta={"transactionId": "tx-1"})
                + frames("call-b", "customer", np.zeros(16000 * 6, np.float32), end=False)   # silent, never ends
                + frames("call-c", "0", poisoned)
                + [(b"call-x", b"\xc1 not msgpack")])

    def run_model() -> None:   # the windows the worker queued for the model, their results applied
        for batch in w.inference.batcher.flush():
            w._apply_results(*asyncio.run(w.inference.run_batch(batch)))

    for offset, (key, value) in enumerate(messages):
        w._publish(w.processor.ingest_many([(value, key, 0, offset)], now=0.0), 0.0)
    run_model()
    w._expire_idle(100.0, {0: 0})   # call-b ends by idle timeout (its last, partial window goes to the model)
    run_model()
    w.executor.shutdown(wait=True)
    return sent


def test_every_published_event_validates_against_its_exported_schema():
    validators = {name: jsonschema.Draft202012Validator(json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text()))
                  for name in SCHEMA_OF_TOPIC.values()}
    sent = _published()
    seen = set()
    for topic, value in sent:
        event = json.loads(value)
        errors = [e.message for e in validators[SCHEMA_OF_TOPIC[topic]].iter_errors(event)]
        assert not errors, (topic, event, errors)
        assert parse_event(value).model_dump(mode="json") == event
        seen.add((event["type"], event.get("ended_by") or event.get("reason", "")))
    assert {("segment", ""), ("aggregate", ""), ("call", "end"), ("call", "idle_timeout"),
            ("dead_letter", "malformed_msgpack"), ("dead_letter", "model_output_bad_speech_prob")} <= seen, seen
