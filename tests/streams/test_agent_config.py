"""How the worker configures the Kafka consumer that Faust builds for it, and its process-wide settings."""

import asyncio
import sys

import faust.transport.drivers.aiokafka as driver
import pydantic
import pytest

from streams.app import set_fetch_max_wait
from streams.settings import Settings
from voicetone.worker import apply_process_settings, tune_garbage_collector


def test_fetch_wait_replaces_only_the_group_consumers_argument(monkeypatch):
    seen = []

    class Recorder:
        def __init__(self, *args, **kwargs):
            seen.append(kwargs)

    monkeypatch.setattr(driver, "_voicetone_base_consumer", Recorder, raising=False)
    monkeypatch.setattr(driver.aiokafka, "AIOKafkaConsumer", driver.aiokafka.AIOKafkaConsumer)
    set_fetch_max_wait(40)
    set_fetch_max_wait(50)  # a second worker in the same process re-tunes; it must not stack subclasses
    driver.aiokafka.AIOKafkaConsumer(fetch_max_wait_ms=1500, group_id="g")  # as Faust's group consumer
    driver.aiokafka.AIOKafkaConsumer(group_id=None)  # other consumers keep their own arguments
    assert seen == [{"fetch_max_wait_ms": 50, "group_id": "g"}, {"group_id": None}]
    assert driver.aiokafka.AIOKafkaConsumer.__mro__[1] is Recorder


def _unit_worker(monkeypatch, owned):
    """A Worker with no Kafka behind it, owning partitions ``owned``, that records what ``ingest_many`` gets."""
    from types import SimpleNamespace

    from streams.worker import Worker

    model = SimpleNamespace(version="test", sample_rate=16000)
    w = Worker(Settings(broker="localhost:1", app_id="vt-unit"), model=model, partitions=2)
    monkeypatch.setattr(w, "_owned_partitions", lambda: set(owned))
    batches = []
    monkeypatch.setattr(w.processor, "ingest_many", lambda b, now, f=w.processor.ingest_many: (batches.append(list(b)),
                                                                                               f(b, now))[1])
    return w, batches


def _record(partition, offset, seq, samples=1600):
    from types import SimpleNamespace

    import numpy as np

    from schemas.audio import encode_audio
    from schemas.frames import encode_frame

    value = encode_frame({"call_id": f"c{partition}", "seq": seq, "sample_rate": 16000, "encoding": "pcm_s16le",
                          "audio": encode_audio("pcm_s16le", np.zeros(samples, np.float32))})
    return SimpleNamespace(offset=offset, key=f"c{partition}".encode(), value=value)


def _fetch(partition, *records):
    """One event per partition fetch, as streams.app's consumer makes them."""
    from types import SimpleNamespace

    return SimpleNamespace(message=SimpleNamespace(partition=partition, value=list(records)))


def test_batched_events_skip_old_offsets_and_partitions_no_longer_owned(monkeypatch):
    """on_events: frames of a partition revoked meanwhile (still in Faust's take buffer)
    and frames already processed are dropped; the rest are ingested as one batch."""
    w, batches = _unit_worker(monkeypatch, owned={0})
    w.restored.update({0, 1})
    w.next_offset.update({0: 3, 1: 0})
    events = [_fetch(0, _record(0, 2, 0)), _fetch(1, _record(1, 0, 0)), _fetch(0, _record(0, 3, 0), _record(0, 4, 1)),
              _fetch(1, _record(1, 1, 1)), _fetch(0, _record(0, 5, 2))]
    asyncio.run(w.on_events(events))
    assert [[(p, o) for _, _, p, o in b] for b in batches] == [[(0, 3), (0, 4), (0, 5)]]
    assert w.next_offset == {0: 6, 1: 0} and w.processor.frames == 3


def test_a_backlog_is_ingested_in_bounded_chunks(monkeypatch):
    """A worker catching up takes many full fetches at once; they are ingested INGEST_BYTES_MAX at a
    time (so the model queue's back-pressure acts between chunks), in offset order, every frame once,
    and cut into the same windows as one batch would be."""
    import streams.worker as worker_module

    frames = [_record(0, o, o) for o in range(10)]   # 0.1 s each: 10 frames, 1 s of audio
    monkeypatch.setattr(worker_module, "INGEST_BYTES_MAX", 3 * len(frames[0].value))
    w, batches = _unit_worker(monkeypatch, owned={0})
    w.restored.add(0)
    w.next_offset[0] = 0
    asyncio.run(w.on_events([_fetch(0, *frames[:4]), _fetch(0, *frames[4:])]))
    assert [[o for *_, o in b] for b in batches] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert w.next_offset[0] == 10 and w.processor.frames == 10
    (channel,) = w.processor.channels.values()
    assert channel.duration_ms == 1000


@pytest.fixture
def process_settings_restored():
    """apply_process_settings changes the whole process: put the switch interval and loop policy back."""
    policy, interval = asyncio.get_event_loop_policy(), sys.getswitchinterval()
    yield policy
    asyncio.set_event_loop_policy(policy)
    sys.setswitchinterval(interval)


def test_process_settings_set_the_gil_switch_interval(monkeypatch, process_settings_restored):
    monkeypatch.setenv("VOICETONE_SWITCH_INTERVAL_MS", "2")
    apply_process_settings(Settings())
    assert sys.getswitchinterval() == pytest.approx(0.002)
    monkeypatch.delenv("VOICETONE_SWITCH_INTERVAL_MS")
    apply_process_settings(Settings())
    assert sys.getswitchinterval() == pytest.approx(Settings().switch_interval_ms / 1000)
    monkeypatch.setenv("VOICETONE_SWITCH_INTERVAL_MS", "0")
    with pytest.raises(pydantic.ValidationError):
        Settings()


def test_process_settings_choose_the_event_loop(monkeypatch, process_settings_restored):
    import uvloop

    monkeypatch.setenv("VOICETONE_EVENT_LOOP", "uvloop")
    apply_process_settings(Settings())
    loop = asyncio.new_event_loop()
    assert isinstance(loop, uvloop.Loop)
    loop.close()


def test_a_missing_uvloop_falls_back_to_asyncio(monkeypatch, caplog, process_settings_restored):
    monkeypatch.setitem(sys.modules, "uvloop", None)   # import uvloop raises ImportError
    monkeypatch.setenv("VOICETONE_EVENT_LOOP", "uvloop")
    apply_process_settings(Settings())
    assert asyncio.get_event_loop_policy() is process_settings_restored
    assert "uvloop is not installed" in caplog.text


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is a Linux feature")
def test_model_threads_run_at_a_lower_priority_than_the_event_loop():
    import os
    import threading
    from types import SimpleNamespace

    from streams.worker import Worker

    def niceness():
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    model = SimpleNamespace(version="test", sample_rate=16000)
    for nice in (7, 0):
        w = Worker(Settings(broker="localhost:1", app_id="vt-nice", inference_nice=nice), model=model, partitions=1)
        assert w.executor.submit(niceness).result() == niceness() + nice
        w.executor.shutdown()


def test_an_app_without_the_monitor_sensor_rebalances_without_warnings(caplog):
    """The worker's app drops Faust's Monitor (its only sensor); Faust then took the empty per-sensor
    state for a missing one and logged two warnings on every rebalance."""
    from streams.app import FaustApp

    app = FaustApp("test-no-monitor", broker="kafka://localhost:1", store="memory://", web_enabled=False)
    app.on_init_dependencies()
    assert app.monitor not in app.sensors
    with caplog.at_level("WARNING"):
        app.on_rebalance_start()
        app.on_rebalance_return()
        app.on_rebalance_end()
    assert not [r for r in caplog.records if "sensor state" in r.getMessage()]
    assert app.rebalancing is False


def test_housekeeping_does_not_end_channels_of_a_partition_with_a_backlog(monkeypatch):
    """The worker's idle clock is its own: while a partition's frames wait in Kafka (lag > 0) its
    channels are not ended, or the rest of each call would be dead-lettered as frames after its end."""
    from types import SimpleNamespace

    import numpy as np

    from schemas.audio import encode_audio
    from schemas.frames import encode_frame
    from streams.worker import Worker

    model = SimpleNamespace(version="test", sample_rate=16000)
    w = Worker(Settings(broker="localhost:1", app_id="vt-unit", idle_timeout_s=30), model=model, partitions=2)
    w.restored.update({0, 1})
    audio = encode_audio("pcm_s16le", np.zeros(1600, np.float32))
    for partition in (0, 1):
        value = encode_frame({"call_id": f"c{partition}", "seq": 0, "sample_rate": 16000,
                              "encoding": "pcm_s16le", "audio": audio})
        w.processor.ingest_many([(value, f"c{partition}".encode(), partition, 0)], now=0.0)
    sent = []
    monkeypatch.setattr(w.publisher, "send", lambda topic, key, value: sent.append(key))
    w._expire_idle(100.0, {0: 250, 1: 0})
    assert w.processor.open_channels == 1 and sent and set(sent) == {b"c1"}
    w._expire_idle(100.0, {0: 0})
    assert w.processor.open_channels == 0


@pytest.fixture
def gc_restored():
    import gc

    threshold = gc.get_threshold()
    yield gc
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_the_worker_freezes_its_start_up_objects(monkeypatch, gc_restored):
    gc = gc_restored
    alive = [[i] for i in range(1000)]           # long-lived objects of a started worker
    tune_garbage_collector(Settings())
    assert gc.get_freeze_count() >= len(alive)   # out of the collector's sight
    assert gc.get_threshold()[0] == Settings().gc_threshold
    gc.unfreeze()
    monkeypatch.setenv("VOICETONE_GC_FREEZE", "false")
    monkeypatch.setenv("VOICETONE_GC_THRESHOLD", "700")
    tune_garbage_collector(Settings())
    assert gc.get_freeze_count() == 0 and gc.get_threshold()[0] == 700
