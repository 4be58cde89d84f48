"""Windowing: each (call, channel) audio stream cut into overlapping analysis windows, in audio time.

`window` (a window, its geometry, what a frame did), `buffer` (a channel's sliding audio), `channel`
(`ChannelWindower`: the rules, see its module docstring), `replay` (its checkpoint and the replay after a
restore) and `registry` (`ChannelRegistry`: the open channels of one input partition). Pure: no Kafka,
no clock of its own.
"""

from streams.windowing.channel import ChannelWindower
from streams.windowing.registry import ChannelRegistry, Key
from streams.windowing.window import (AFTER_END, BAD_AUDIO, BAD_SEQ, CAPACITY, CHECKPOINT_VERSION, GAP_TOO_LARGE,
                                      OUT_OF_ORDER, AddResult, Rejection, Window, WindowSpec, latest_offset)

__all__ = [
    "AFTER_END", "BAD_AUDIO", "BAD_SEQ", "CAPACITY", "CHECKPOINT_VERSION", "GAP_TOO_LARGE", "OUT_OF_ORDER",
    "AddResult", "ChannelRegistry", "ChannelWindower", "Key", "Rejection", "Window", "WindowSpec", "latest_offset",
]
