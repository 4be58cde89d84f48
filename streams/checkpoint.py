"""Checkpoints of one partition's processing state, taken by the pipeline and adopted after a restore.

A checkpoint holds each window registry's state (no audio) and each open channel's aggregate, the latter
taken once every window the channel had handed out when the checkpoint began has its result applied.
Frames below its watermark are then safe to commit: a worker that restarts from it re-reads from the
watermark and re-emits exactly the windows after the checkpoint, with the same indices. Writing it to
Kafka and committing the watermark is `streams.recovery`'s part.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Optional

from streams.aggregation import ChannelAggregate
from streams.channels import ChannelState, Key
from streams.windowing import ChannelRegistry

VERSION = 1
#: (partition, state, watermark): a completed checkpoint, ready to be written
Checkpoint = tuple[int, dict, Optional[int]]


def snapshot(ckey: Key, ch: ChannelState) -> list:
    return [ckey[0], ckey[1], ch.rate, ch.aggregate.to_dict(), ch.duration_ms, ch.last_applied,
            ch.ts_origin_ms, ch.meta]


def watermark(registries: Iterable[ChannelRegistry], last_offset: Optional[int]) -> Optional[int]:
    """The smallest input offset a future window of these registries still needs; with none needed, the
    offset after the last one ingested (everything ingested *so far* is covered by a checkpoint taken
    now, but not frames ingested while it waits for in-flight results); None before any frame."""
    offs = [o for reg in registries if (o := reg.low_watermark_offset()) is not None]
    if offs:
        return min(offs)
    return None if last_offset is None else last_offset + 1


class PendingCheckpoints:
    """Checkpoints begun and waiting for in-flight windows' results, per partition."""

    def __init__(self) -> None:
        self._pending: dict[int, dict] = {}

    def __contains__(self, partition: int) -> bool:
        return partition in self._pending

    def start(self, partition: int, registries: dict[int, ChannelRegistry],
              channels: Iterable[tuple[Key, ChannelState]], last_offset: Optional[int]) -> Optional[Checkpoint]:
        """Begin a checkpoint of `partition` (its registries by rate, its open channels, the highest offset
        ingested); the checkpoint if no channel has windows in flight, else None (`applied` completes it)."""
        need, snap = {}, {}
        for ckey, ch in channels:
            if ch.outstanding == 0 or ch.last_applied >= ch.last_handed:
                snap[ckey] = snapshot(ckey, ch)
            else:
                need[ckey] = ch.last_handed
        self._pending[partition] = {
            "registries": {str(rate): reg.checkpoint() for rate, reg in registries.items()},
            "watermark": watermark(registries.values(), last_offset), "need": need, "snap": snap,
        }
        return None if need else self._complete(partition)

    def applied(self, ckey: Key, ch: ChannelState) -> Optional[Checkpoint]:
        """A window of `ch` has its result applied; the checkpoint it completes, if any."""
        pending = self._pending.get(ch.partition)
        if pending is None or pending["need"].get(ckey) != ch.last_applied:
            return None
        del pending["need"][ckey]
        pending["snap"][ckey] = snapshot(ckey, ch)
        return None if pending["need"] else self._complete(ch.partition)

    def drop(self, partition: int) -> None:
        self._pending.pop(partition, None)

    def _complete(self, partition: int) -> Checkpoint:
        pending = self._pending.pop(partition)
        state = {"v": VERSION, "registries": pending["registries"], "aggregates": list(pending["snap"].values()),
                 "watermark": pending["watermark"]}
        return partition, state, pending["watermark"]


def registry_states(cp: dict) -> dict[int, dict]:
    """Each window registry's state in checkpoint `cp`, by sample rate."""
    if cp.get("v") != VERSION:
        raise ValueError(f"unsupported processor checkpoint version {cp.get('v')!r}")
    return {int(rate): rcp for rate, rcp in cp["registries"].items()}


def restored_channels(partition: int, cp: dict) -> Iterator[tuple[Key, ChannelState]]:
    """The open channels of checkpoint `cp`, as they were when it was taken."""
    for c, chn, rate, agg, duration, *rest in cp["aggregates"]:
        aggregate = ChannelAggregate.from_dict(agg)
        # window indices go on from the checkpoint: a restored channel has
        # applied (and handed out) everything up to its last applied index
        last = int(rest[0]) if rest else aggregate.last_index
        # checkpoints written before the channel's wall-clock origin and metadata were kept lack them
        ts_origin, meta = (rest[1], dict(rest[2])) if len(rest) >= 3 else (None, {})
        yield (c, chn), ChannelState(partition, int(rate), aggregate, duration_ms=int(duration), last_applied=last,
                                     last_handed=last, ts_origin_ms=ts_origin, meta=meta)
