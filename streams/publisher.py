"""Events out to Kafka without waiting, each send confirmed before the offsets behind it are committed."""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Optional

from schemas.events import to_json
from streams.metrics import Metrics
from streams.output import Output
from streams.settings import Settings

log = logging.getLogger("voicetone.worker")


class Publisher:
    """Sends the events of an `Output` to their topics (key: the call ID; a dead letter keeps its input key)
    and remembers every send until Kafka acknowledges it (`confirm`)."""

    def __init__(self, settings: Settings, topics: dict, metrics: Metrics):
        self.metrics = metrics
        self.routes = ((topics[settings.segments_topic], "segments"), (topics[settings.aggregates_topic], "aggregates"),
                       (topics[settings.calls_topic], "calls"))
        self.dead_letters = topics[settings.dlq_topic]
        self.unconfirmed: list[tuple] = []     # (topic, key, value, future) sent but not yet acknowledged

    def publish(self, out: Output) -> None:
        for topic, kind in self.routes:
            for ev in getattr(out, kind):
                self.send(topic, ev.call_id.encode(), to_json(ev))
        for ev in out.dead_letters:
            self.metrics.dead_letters.labels(reason=ev.reason).inc()
            log.warning("dead letter: %s: %s", ev.reason, ev.detail[:200])
            self.send(self.dead_letters, ev.key_b64 and base64.b64decode(ev.key_b64), to_json(ev))

    def send(self, topic, key: Optional[bytes], value: bytes) -> None:
        """Publish without waiting; the send is confirmed before the next commit."""
        self.track(topic, key, value, topic.send_soon(key=key, value=value))

    def track(self, topic, key: Optional[bytes], value: bytes, fut) -> None:
        """Remember a send made elsewhere (a checkpoint to the changelog) until it is confirmed."""
        self.unconfirmed.append((topic, key, value, fut))

    async def confirm(self, timeout_s: float = 30.0) -> bool:
        """Wait until Kafka has acknowledged everything sent so far; re-send
        what failed. True when all of it is confirmed.

        Faust's own `producer.flush()` is not enough: its buffer flush gives
        up after 0.1 s without progress, so on a busy machine it returned with
        events and checkpoints still queued, and the offset commit that
        followed went out before them (a crash then lost those events and
        left an older checkpoint behind a newer committed offset)."""
        batch, self.unconfirmed = self.unconfirmed, []
        if not batch:
            return True
        await asyncio.wait([fut for *_, fut in batch], timeout=timeout_s)
        ok = True
        for topic, key, value, fut in batch:
            if not fut.done():
                self.unconfirmed.append((topic, key, value, fut))
                ok = False
            elif fut.exception() is not None:
                self.metrics.publish_errors.inc()
                log.warning("publishing to %s failed (%s); sending it again", topic.get_topic_name(),
                            fut.exception())
                self.send(topic, key, value)
                ok = False
        return ok
