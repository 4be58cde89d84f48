"""Faust codecs for the wire formats, so agents can declare ``value_serializer``.

``vt_msgpack`` reads and writes audio frames (validated both ways);
``vt_json`` writes event models or dicts as compact JSON and reads events
back as models.  A worker that must dead-letter bad frames should consume raw
bytes and call ``decode_frame`` itself: a codec error inside Faust only logs
and skips the message.
"""

from __future__ import annotations

from typing import Any

from faust.serializers import codecs as faust_codecs

from schemas.events import parse_event, to_json
from schemas.frames import DecodedFrame, decode_frame, encode_frame

MSGPACK_CODEC = "vt_msgpack"
JSON_CODEC = "vt_json"


class FrameCodec(faust_codecs.Codec):
    """msgpack audio frames: dumps an AudioFrame/DecodedFrame/field dict, loads a DecodedFrame."""

    def _dumps(self, obj: Any) -> bytes:
        if isinstance(obj, DecodedFrame):
            obj = obj.frame
        return encode_frame(obj)

    def _loads(self, s: bytes) -> DecodedFrame:
        return decode_frame(s)


class EventCodec(faust_codecs.Codec):
    """orjson events: dumps a model or dict, loads a validated event model."""

    def _dumps(self, obj: Any) -> bytes:
        return to_json(obj)

    def _loads(self, s: bytes) -> Any:
        return parse_event(s)


def register_codecs() -> None:
    """Add both codecs to Faust's registry; calling again is harmless."""
    if not isinstance(faust_codecs.codecs.get(MSGPACK_CODEC), FrameCodec):
        faust_codecs.register(MSGPACK_CODEC, FrameCodec())
    if not isinstance(faust_codecs.codecs.get(JSON_CODEC), EventCodec):
        faust_codecs.register(JSON_CODEC, EventCodec())


__all__ = ["FrameCodec", "EventCodec", "register_codecs", "MSGPACK_CODEC", "JSON_CODEC"]
