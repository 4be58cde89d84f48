"""Runs: in-order frames of one open channel, gathered by `StreamProcessor.ingest_many` and committed
together (one decode, append and cut per run instead of per frame)."""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np

from schemas.audio import decode_valid_audio
from schemas.frames import WireFields
from streams.channels import ChannelState, Key
from streams.windowing import ChannelRegistry


class Run:
    """In-order frames of one open channel, their audio still encoded."""

    __slots__ = ("registry", "state", "call_id", "channel", "encoding", "partition", "rate", "first_seq",
                 "next_seq", "chunks", "sizes", "offsets")

    def __init__(self, registry: ChannelRegistry, state: ChannelState, call_id: str, channel: str, encoding: str,
                 seq: int) -> None:
        self.registry, self.state, self.encoding = registry, state, encoding
        self.call_id, self.channel = call_id, channel
        self.partition, self.rate = state.partition, state.rate
        self.first_seq = self.next_seq = seq
        self.chunks: list[bytes] = []
        self.sizes: list[int] = []
        self.offsets: list[Optional[int]] = []


def start_run(channels: dict[Key, ChannelState], registries: dict[tuple[int, int], ChannelRegistry], f: WireFields,
              partition: int) -> Optional[Run]:
    """A run for frame ``f`` if its channel is open and in order, else None."""
    if f.end or f.encoding == "f32le" or f.meta is not None:  # f32le: one NaN frame must not refuse its neighbours
        return None
    ch = channels.get((f.call_id, f.channel))
    if ch is None or ch.rate != f.sample_rate or ch.partition != partition or ch.ended_by is not None \
            or (f.ts_ms is not None and ch.ts_origin_ms is None):
        return None
    reg = registries.get((partition, ch.rate))
    w = reg.get(f.call_id, f.channel) if reg is not None else None
    if w is None or not w.in_order() or f.seq != w.next_seq:
        return None
    return Run(reg, ch, f.call_id, f.channel, f.encoding, f.seq)


def decoded(runs: list[Run]) -> Iterator[tuple[Run, np.ndarray]]:
    """Each run with its decoded audio, in order. The audio of all runs is decoded with one numpy call per
    encoding and each run gets its slice: live, a fetch holds about one frame per channel, so per-run
    decoding was paid per frame (bench/pyspy_shares.py)."""
    if not runs:
        return
    chunks: dict[str, list[bytes]] = {}
    for run in runs:
        chunks.setdefault(run.encoding, []).extend(run.chunks)
    audio = {enc: decode_valid_audio(enc, b"".join(parts)) for enc, parts in chunks.items()}
    at = dict.fromkeys(audio, 0)
    for run in runs:
        a = at[run.encoding]
        b = at[run.encoding] = a + sum(run.sizes)
        yield run, audio[run.encoding][a:b]
