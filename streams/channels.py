"""`ChannelState`: what the pipeline keeps per (call, channel) between its frames and its events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from schemas.frames import MAX_META_ENTRIES
from streams.aggregation import ChannelAggregate

Key = tuple[str, str]


@dataclass
class ChannelState:
    """Bookkeeping for one (call, channel) between its frames and its events."""

    partition: int
    rate: int
    aggregate: ChannelAggregate
    outstanding: int = 0          # windows handed out, results not yet applied
    last_applied: int = -1        # index of the last window whose result was applied
    last_handed: int = -1         # index of the last window handed out for inference
    ended_by: Optional[str] = None
    duration_ms: int = 0
    ts_origin_ms: Optional[int] = None   # wall time of audio offset 0, from the frames' ts_ms
    meta: dict = field(default_factory=dict)  # the frames' `meta`, a key's first value kept; replaced, never mutated

    def merge_meta(self, meta: dict) -> None:
        """Add a frame's ``meta``: a key keeps its first value (the ids in a channel's events do not change
        mid-channel), at most ``MAX_META_ENTRIES`` keys; a new dict, as events share the old one."""
        new = {k: v for k, v in meta.items() if k not in self.meta}
        room = MAX_META_ENTRIES - len(self.meta)
        if new and room > 0:
            self.meta = {**self.meta, **dict(list(new.items())[:room])}
