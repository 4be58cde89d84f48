"""Helpers for tests that run the real broker and worker processes.

Every process started here is stopped with a bounded wait and a SIGKILL of its
whole process group, also when the test fails, so a hung worker never hangs CI.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, Optional

import orjson

from voicetone.broker import stop_process_group
from streams.kafka_client import produce as produce_one
from streams.settings import Settings

FAST_GROUP = {"VOICETONE_REBALANCE_TIMEOUT_S": "3", "VOICETONE_SESSION_TIMEOUT_S": "6",
              "VOICETONE_HEARTBEAT_INTERVAL_S": "1", "VOICETONE_COMMIT_INTERVAL_S": "1"}


def unique_settings(broker_url: str, **overrides) -> Settings:
    """Settings with topic names and group of their own, so tests sharing one
    broker never see each other's messages."""
    tag = uuid.uuid4().hex[:8]
    return Settings(broker=broker_url, app_id=f"vt-{tag}", input_topic=f"frames-{tag}",
                    segments_topic=f"segments-{tag}", aggregates_topic=f"aggregates-{tag}",
                    calls_topic=f"calls-{tag}", dlq_topic=f"dlq-{tag}", topic_partitions=4, **overrides)


def settings_env(settings: Settings) -> dict:
    env = {}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"VOICETONE_{name.upper()}"] = str(value)
    return env


@contextlib.contextmanager
def running_worker(settings: Settings, log_path: Path, extra_env: Optional[dict] = None) -> Iterator[subprocess.Popen]:
    env = {**os.environ, **settings_env(settings), **FAST_GROUP, "OMP_NUM_THREADS": "1",
           "VOICETONE_INFERENCE_THREADS": "1", **(extra_env or {})}
    with open(log_path, "ab") as log:
        # run in the log's folder: a test can then see what the worker leaves in its working directory
        proc = subprocess.Popen([sys.executable, "-m", "voicetone", "worker"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=log_path.parent)
    try:
        yield proc
    finally:
        stop_process_group(proc, timeout=10)


def produce(settings: Settings, messages: list[tuple[bytes, bytes]]) -> None:
    from confluent_kafka import Producer

    p = Producer({**settings.confluent_config(), "linger.ms": 5})
    for key, value in messages:
        produce_one(p, settings.input_topic, key, value)
    assert p.flush(30) == 0


def collect(settings: Settings, topics: list[str], until: Callable[[list[dict]], bool], timeout_s: float = 120.0,
            alive: Optional[subprocess.Popen] = None) -> list[dict]:
    """Read `topics` from the beginning until `until(events)` or the deadline."""
    from confluent_kafka import Consumer

    c = Consumer({**settings.confluent_config(), "group.id": f"test-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
    c.subscribe(topics)
    events: list[dict] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not until(events):
            if alive is not None and alive.poll() is not None:
                raise AssertionError(f"worker exited with code {alive.returncode}")
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            ev = orjson.loads(msg.value())
            ev["_topic"] = msg.topic()
            ev["_key"] = msg.key()
            events.append(ev)
    finally:
        c.close()
    return events
