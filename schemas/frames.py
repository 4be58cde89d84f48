"""The audio frame: the one input message, as a pydantic model and a fast codec.

``decode_frame`` runs once per Kafka message at tens of thousands of
messages a second and decides between "process" and "dead-letter". Two
paths accept exactly the same frames:

* the reference, ``check_frame_fields``: plain Python checks on the unpacked
  map, in an order that names the right reason code; the pydantic model runs
  it too, so frames built in Python obey the same rules;
* the fast path, a msgspec decoder typed by ``WireFields`` (parse and validate
  in C, ~0.5 us instead of ~3.3 us a frame). It only says yes or no: any
  frame it refuses goes through the reference, which says why.

A differential fuzz test holds the two to the same answers. Anything wrong
raises ``FrameError`` with a reason code, and nothing else: arbitrary bytes
from the topic must never crash the worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Mapping, Optional

import msgpack
import msgspec
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from schemas.audio import ENCODINGS, SAMPLE_WIDTH, decode_valid_audio
from schemas.errors import FrameError

FRAME_VERSION = 1
MAX_CALL_ID_CHARS = 256
MAX_CHANNEL_CHARS = 64
MAX_SEQ = 2**53  # largest integer a JSON consumer can hold exactly
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 48000
MAX_META_ENTRIES, MAX_META_KEY_CHARS, MAX_META_VALUE_CHARS = 16, 64, 1024
REQUIRED_FIELDS: tuple[str, ...] = ("v", "call_id", "seq", "sample_rate", "encoding", "audio")
OPTIONAL_FIELDS: tuple[str, ...] = ("channel", "ts_ms", "end", "meta")
FIELDS = frozenset(REQUIRED_FIELDS + OPTIONAL_FIELDS)


def _type_name(x: Any) -> str:
    return type(x).__name__


def _int_field(d: Mapping, name: str, lo: int, hi: int, reason: str = "bad_field") -> int:
    x = d[name]
    if type(x) is not int:  # bool is an int subclass; it is refused on purpose
        raise FrameError("bad_field", f"{name} must be an int, not {_type_name(x)}")
    if not lo <= x <= hi:
        raise FrameError(reason, f"{name}={x} is outside {lo}..{hi}")
    return x


def _str_field(d: Mapping, name: str, max_chars: int) -> str:
    x = d[name]
    if type(x) is not str:
        raise FrameError("bad_field", f"{name} must be a str, not {_type_name(x)}")
    if not x or len(x) > max_chars:
        raise FrameError("bad_field", f"{name} must have 1..{max_chars} characters, has {len(x)}")
    return x


def check_meta(x: Any) -> Optional[dict]:
    """A frame's ``meta``: None, or a map of up to 16 str keys (1..64 chars) to str values (up to 1024
    chars), returned as a new dict. Raises FrameError."""
    if x is None:
        return None
    if type(x) is not dict:
        raise FrameError("bad_field", f"meta must be a map, not {_type_name(x)}")
    if len(x) > MAX_META_ENTRIES:
        raise FrameError("bad_field", f"meta has {len(x)} entries, at most {MAX_META_ENTRIES}")
    for k, val in x.items():
        if type(k) is not str or not 1 <= len(k) <= MAX_META_KEY_CHARS:
            raise FrameError("bad_field", f"meta keys must be str of 1..{MAX_META_KEY_CHARS} characters")
        if type(val) is not str or len(val) > MAX_META_VALUE_CHARS:
            raise FrameError("bad_field", f"meta[{k!r}] must be a str of at most {MAX_META_VALUE_CHARS} characters")
    return dict(x)


def check_frame_fields(d: Any) -> dict:
    """Validate a frame map; return a normalised dict (defaults filled) or raise FrameError.

    Order matters for the reason reported: the version is checked before the
    field names, so a future v2 frame says ``unsupported_version`` rather
    than ``unknown_field``.
    """
    if not isinstance(d, Mapping):
        raise FrameError("not_a_map", f"frame must be a msgpack map, not {_type_name(d)}")
    if "v" not in d:
        raise FrameError("missing_field", "v is required")
    v = d["v"]
    if type(v) is not int:
        raise FrameError("bad_field", f"v must be an int, not {_type_name(v)}")
    if v != FRAME_VERSION:
        raise FrameError("unsupported_version", f"frame version {v}, this worker reads {FRAME_VERSION}")
    if len(d) > len(FIELDS) or not FIELDS.issuperset(d):
        extra = sorted(repr(k) for k in d if k not in FIELDS)
        raise FrameError("unknown_field", f"unknown field(s) {', '.join(extra)[:200]}")
    for name in REQUIRED_FIELDS:
        if name not in d:
            raise FrameError("missing_field", f"{name} is required")
    call_id = _str_field(d, "call_id", MAX_CALL_ID_CHARS)
    channel = _str_field(d, "channel", MAX_CHANNEL_CHARS) if "channel" in d else "0"
    seq = _int_field(d, "seq", 0, MAX_SEQ)
    sample_rate = _int_field(d, "sample_rate", MIN_SAMPLE_RATE, MAX_SAMPLE_RATE, "bad_sample_rate")
    encoding = d["encoding"]
    if type(encoding) is not str:
        raise FrameError("bad_field", f"encoding must be a str, not {_type_name(encoding)}")
    if encoding not in SAMPLE_WIDTH:
        raise FrameError("unknown_encoding", f"encoding {encoding[:40]!r} is not one of {', '.join(ENCODINGS)}")
    audio = d["audio"]
    if type(audio) is not bytes:
        if not isinstance(audio, (bytes, bytearray, memoryview)):
            raise FrameError("bad_field", f"audio must be bytes (msgpack bin), not {_type_name(audio)}")
        audio = bytes(audio)
    ts_ms = d.get("ts_ms")
    if ts_ms is not None:
        ts_ms = _int_field(d, "ts_ms", 0, MAX_SEQ)
    end = d.get("end", False)
    if type(end) is not bool:
        raise FrameError("bad_field", f"end must be a bool, not {_type_name(end)}")
    meta = check_meta(d.get("meta"))
    if len(audio) % SAMPLE_WIDTH[encoding]:
        raise FrameError("misaligned_audio",
                         f"{len(audio)} bytes is not a multiple of the {SAMPLE_WIDTH[encoding]}-byte {encoding} sample")
    return {"v": v, "call_id": call_id, "channel": channel, "seq": seq, "sample_rate": sample_rate,
            "encoding": encoding, "audio": audio, "ts_ms": ts_ms, "end": end, "meta": meta}


class WireFields(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A validated frame's fields, as the fast decoder types them (the same rules as
    ``check_frame_fields``; the differential test in tests/schemas/test_schemas_frames.py checks it)."""

    v: Literal[FRAME_VERSION]  # type: ignore[valid-type]
    call_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CALL_ID_CHARS)]
    seq: Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]
    sample_rate: Annotated[int, msgspec.Meta(ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE)]
    encoding: Literal[ENCODINGS]  # type: ignore[valid-type]
    audio: bytes
    channel: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CHANNEL_CHARS)] = "0"
    ts_ms: Optional[Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]] = None
    end: bool = False
    meta: Optional[Annotated[
        dict[Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_META_KEY_CHARS)],
             Annotated[str, msgspec.Meta(max_length=MAX_META_VALUE_CHARS)]],
        msgspec.Meta(max_length=MAX_META_ENTRIES)]] = None


_FAST_DECODER = msgspec.msgpack.Decoder(WireFields)


def fast_fields(raw: bytes) -> Optional[WireFields]:
    """The frame's fields if the fast path accepts it, else None (the reference then says why).
    Not checked here: the key and ``max_frame_bytes`` / ``max_frame_ms`` (``decode_frame``)."""
    try:
        f = _FAST_DECODER.decode(raw)
    except Exception:  # msgspec's DecodeError/ValidationError, or anything odd: the reference decides
        return None
    return f if not len(f.audio) % SAMPLE_WIDTH[f.encoding] else None


class AudioFrame(BaseModel):
    """One chunk of one channel's audio, as carried in ``audio.frames``."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    v: int = Field(FRAME_VERSION, description="schema version, 1")
    call_id: str = Field(min_length=1, max_length=MAX_CALL_ID_CHARS, description="the call; equals the message key")
    channel: str = Field("0", min_length=1, max_length=MAX_CHANNEL_CHARS,
                         description="the speaker's stream within the call, e.g. agent, customer")
    seq: int = Field(ge=0, le=MAX_SEQ, description="frame number within (call, channel), from 0, +1 per frame")
    sample_rate: int = Field(ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE, description="samples per second")
    encoding: str = Field(description="pcm_s16le, mulaw, alaw or f32le", json_schema_extra={"enum": list(ENCODINGS)})
    audio: bytes = Field(description="the samples, mono, in the given encoding (msgpack bin)")
    ts_ms: Optional[int] = Field(None, ge=0, le=MAX_SEQ,
                                 description="wall-clock time of the first sample, epoch milliseconds")
    end: bool = Field(False, description="true on the channel's last frame (may carry no audio)")
    meta: Optional[dict[str, str]] = Field(
        None, description="the channel's call metadata, passed through to its aggregate and call events (e.g. "
        "transactionId, voiceConnectorId, streamArn); usually on the first frame only; a key keeps its first value",
        json_schema_extra={"maxProperties": MAX_META_ENTRIES,
                           "propertyNames": {"minLength": 1, "maxLength": MAX_META_KEY_CHARS},
                           "additionalProperties": {"type": "string", "maxLength": MAX_META_VALUE_CHARS}})

    @model_validator(mode="before")
    @classmethod
    def _same_checks_as_decoder(cls, data: Any) -> Any:
        """Run ``check_frame_fields`` so models built in Python obey the wire rules."""
        if isinstance(data, Mapping):
            fields = dict(data)
            fields.setdefault("v", FRAME_VERSION)
            try:
                return check_frame_fields(fields)
            except FrameError as e:  # keep the reason code as the pydantic error type
                raise PydanticCustomError(e.reason, "{detail}", {"detail": e.detail}) from None
        return data

    @property
    def sample_count(self) -> int:
        return len(self.audio) // SAMPLE_WIDTH[self.encoding]

    @property
    def duration_ms(self) -> float:
        return 1000.0 * self.sample_count / self.sample_rate


@dataclass(frozen=True, slots=True)
class DecodedFrame:
    """A validated frame and its samples (float32 at the frame's own rate), decoded once.

    ``fields`` holds the validated wire fields; the pydantic ``frame`` is built
    only when asked for (building it for every consumed frame was 16% of the
    worker's ingest time)."""

    fields: WireFields
    samples: np.ndarray

    @property
    def frame(self) -> AudioFrame:
        return AudioFrame.model_construct(**msgspec.structs.asdict(self.fields))

    @property
    def duration_ms(self) -> float:
        return 1000.0 * self.samples.size / self.fields.sample_rate


def _unpack(raw: bytes) -> Any:
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=True, use_list=True)
    except UnicodeDecodeError as e:
        raise FrameError("malformed_msgpack", f"a msgpack str is not valid UTF-8 ({e.reason})") from None
    except Exception as e:  # msgpack raises ValueError subclasses, TypeError, OverflowError...
        raise FrameError("malformed_msgpack", f"{type(e).__name__}: {str(e)[:200]}") from None


def _key_text(key: bytes | str) -> str | None:
    if isinstance(key, str):
        return key
    if isinstance(key, (bytes, bytearray, memoryview)):
        try:
            return bytes(key).decode("utf-8")
        except UnicodeDecodeError:
            return None
    raise FrameError("key_mismatch", f"message key must be bytes or str, not {_type_name(key)}")


def key_matches(key: bytes | str, call_id: str) -> bool:
    """Whether a message key (UTF-8 bytes or str) names ``call_id``."""
    if isinstance(key, (bytes, bytearray, memoryview)):
        return key == call_id.encode()  # UTF-8 both ways: the same test as decoding the key, cheaper
    return isinstance(key, str) and key == call_id


def _check_key(key: bytes | str, call_id: str) -> None:
    if key_matches(key, call_id):
        return
    text = _key_text(key)
    shown = repr(text[:80]) if text is not None else "not UTF-8"
    raise FrameError("key_mismatch", f"message key {shown} != call_id {call_id[:80]!r}")


def decode_frame(raw: bytes, key: bytes | str | None = None, max_frame_bytes: int = 1_000_000,
                 max_frame_ms: int = 5000) -> DecodedFrame:
    """Parse, validate and decode one ``audio.frames`` message value.

    ``key`` is the Kafka message key (the call ID, UTF-8); ``None`` skips that
    check.  Raises only ``FrameError``.
    """
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise FrameError("malformed_msgpack", f"message value must be bytes, not {_type_name(raw)}")
    if len(raw) > max_frame_bytes:  # before unpacking: do no work for oversized input
        raise FrameError("frame_too_large", f"{len(raw)} bytes > max_frame_bytes={max_frame_bytes}")
    f = fast_fields(raw)
    if f is None:
        f = WireFields(**check_frame_fields(_unpack(raw)))
    if key is not None:
        _check_key(key, f.call_id)
    n = len(f.audio) // SAMPLE_WIDTH[f.encoding]
    if n * 1000 > max_frame_ms * f.sample_rate:
        raise FrameError("frame_too_long",
                         f"{n} samples at {f.sample_rate} Hz is more than max_frame_ms={max_frame_ms}")
    return DecodedFrame(f, decode_valid_audio(f.encoding, f.audio))  # both paths checked the length


def encode_frame(frame_or_fields: AudioFrame | Mapping[str, Any]) -> bytes:
    """Serialise a frame (model or field dict, validated) to the msgpack wire form.

    ``ts_ms`` and ``meta`` are left out when unset and ``end`` when false, to keep frames small.
    """
    if isinstance(frame_or_fields, AudioFrame):
        fields = {
            "v": frame_or_fields.v, "call_id": frame_or_fields.call_id, "channel": frame_or_fields.channel,
            "seq": frame_or_fields.seq, "sample_rate": frame_or_fields.sample_rate,
            "encoding": frame_or_fields.encoding, "audio": frame_or_fields.audio,
            "ts_ms": frame_or_fields.ts_ms, "end": frame_or_fields.end, "meta": frame_or_fields.meta,
        }
    else:
        fields = dict(frame_or_fields) if isinstance(frame_or_fields, Mapping) else frame_or_fields
        if isinstance(fields, dict):
            fields.setdefault("v", FRAME_VERSION)
        fields = check_frame_fields(fields)
    if fields["ts_ms"] is None:
        del fields["ts_ms"]
    if not fields["end"]:
        del fields["end"]
    if fields["meta"] is None:
        del fields["meta"]
    return msgpack.packb(fields, use_bin_type=True)
