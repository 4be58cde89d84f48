"""Wire formats of voicetone: audio frames in, JSON events out, and their codecs."""

from schemas.audio import ENCODINGS, decode_audio, encode_audio
from schemas.errors import REASONS, FrameError
from schemas.events import (
    AggregateEvent,
    CallEvent,
    DeadLetter,
    Label,
    SegmentEvent,
    Sentiment,
    Summary,
    event_id,
    make_dead_letter,
    parse_event,
    to_json,
)
from schemas.frames import AudioFrame, DecodedFrame, decode_frame, encode_frame
from schemas.resample import StreamResampler, resample

__all__ = [
    "ENCODINGS", "decode_audio", "encode_audio",
    "REASONS", "FrameError",
    "AggregateEvent", "CallEvent", "DeadLetter", "Label", "SegmentEvent", "Sentiment", "Summary",
    "event_id", "make_dead_letter", "parse_event", "to_json",
    "AudioFrame", "DecodedFrame", "decode_frame", "encode_frame",
    "StreamResampler", "resample",
]
