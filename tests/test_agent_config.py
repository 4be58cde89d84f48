"""How the worker configures the Kafka consumer that Faust builds for it."""

import faust.transport.drivers.aiokafka as driver

from streams.agent import set_fetch_max_wait


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
