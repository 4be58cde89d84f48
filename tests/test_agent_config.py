"""How the worker configures the Kafka consumer that Faust builds for it."""

import faust.transport.drivers.aiokafka as driver

from streams.agent import tune_fetch


def test_tune_fetch_replaces_fausts_fetch_arguments(monkeypatch):
    seen = []

    class Recorder:
        def __init__(self, *args, **kwargs):
            seen.append(kwargs)

    monkeypatch.setattr(driver, "_voicetone_base_consumer", Recorder, raising=False)
    monkeypatch.setattr(driver.aiokafka, "AIOKafkaConsumer", driver.aiokafka.AIOKafkaConsumer)
    tune_fetch(40)
    tune_fetch(50)  # a second worker in the same process re-tunes; it must not stack subclasses
    driver.aiokafka.AIOKafkaConsumer(fetch_max_wait_ms=1500, group_id="g")  # as Faust's group consumer
    driver.aiokafka.AIOKafkaConsumer(group_id=None)  # other consumers keep their own arguments
    assert seen == [{"fetch_max_wait_ms": 50, "group_id": "g"}, {"group_id": None}]
    assert driver.aiokafka.AIOKafkaConsumer.__mro__[1] is Recorder
