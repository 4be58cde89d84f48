"""Output events (segment, aggregate, call summary) and dead letters, as JSON.

These models are the one definition of each event: the worker builds them
(``trusted``, without validation, on the hot path), ``to_json`` writes them with
pydantic's compiled serialiser, and ``voicetone schemas export`` writes their JSON
Schemas (schemas/json/). Consumers de-duplicate on ``event_id`` after a worker
crash replays a segment, so the ID is a pure function of (call, channel, kind, index).
"""

from __future__ import annotations

import base64
import json
import math
import uuid
from typing import Annotated, Literal, Optional, Union

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.errors import FrameError

EVENT_VERSION = 1
Label = Literal["positive", "neutral", "negative", "no_speech"]
EndedBy = Literal["end", "idle_timeout"]
#: Fixed namespace for event IDs; changing it changes every ID ever emitted.
EVENT_ID_NAMESPACE = uuid.UUID("6f1d7c52-3a8e-5b0e-9a51-0c7e2d4b9f13")
PROB_SUM_TOLERANCE = 1e-3

_new, _set = object.__new__, object.__setattr__
_Prob = Annotated[float, Field(ge=0.0, le=1.0)]
_Ms = Annotated[int, Field(ge=0)]


class _Strict(BaseModel):
    # Serialised events always carry every field, defaults included, so the
    # exported schema lists them all as required.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True,
                              json_schema_serialization_defaults_required=True)

    @classmethod
    def trusted(cls, values: dict):
        """An instance holding ``values`` as they are: every field, already of the model's types, in the order
        they are to be written. No validation: the worker builds two to six models per window from values it
        computed itself, and `model_construct` cost ~5 us each (validation more); ``parse_event`` and the
        tests check what these write against the models and their exported schemas."""
        obj = _new(cls)
        _set(obj, "__dict__", values)
        _set(obj, "__pydantic_fields_set__", set(values))
        _set(obj, "__pydantic_extra__", None)
        _set(obj, "__pydantic_private__", None)
        return obj

    def __getitem__(self, name: str):
        """A field by its JSON name (``event["label"]``), as a consumer of the JSON reads it."""
        try:
            return self.__dict__[name]
        except KeyError:
            raise KeyError(name) from None


class Sentiment(_Strict):
    """Class probabilities; they sum to 1."""

    positive: _Prob
    neutral: _Prob
    negative: _Prob

    @model_validator(mode="after")
    def _sums_to_one(self) -> "Sentiment":
        s = self.positive + self.neutral + self.negative
        if not math.isclose(s, 1.0, abs_tol=PROB_SUM_TOLERANCE):
            raise ValueError(f"sentiment probabilities sum to {s:.6f}, not 1")
        return self


class Summary(_Strict):
    """Sentiment over a stretch of a channel: ``current`` (last 30 s of speech) or ``overall``."""

    start_ms: _Ms
    end_ms: _Ms
    active_speech_ms: _Ms
    sentiment: Sentiment
    label: Label


class _Event(_Strict):
    type: str  # narrowed to a Literal by each event; declared here so it serialises first
    v: Literal[1] = EVENT_VERSION
    event_id: str = Field(min_length=1)
    call_id: str = Field(min_length=1)
    channel: str = Field(min_length=1)
    model_version: str
    emitted_at_ms: _Ms


class SegmentEvent(_Event):
    """Model output for one 5 s window (hop 2.5 s; the last may be shorter)."""

    type: Literal["segment"] = "segment"
    segment_index: _Ms
    start_ms: _Ms
    end_ms: _Ms
    speech_probability: _Prob
    sentiment: Sentiment
    label: Label


_StartTs = Annotated[Optional[_Ms], Field(
    description="wall-clock time of the channel's audio offset 0, epoch ms, from its frames' ts_ms; "
                "null when they carry none")]
_Meta = Annotated[dict[str, str], Field(
    default_factory=dict, description="the channel's frame metadata (ids such as transactionId); {} when none")]


class AggregateEvent(_Event):
    """Running summaries after a segment."""

    type: Literal["aggregate"] = "aggregate"
    segment_index: _Ms
    current: Summary
    overall: Summary
    audio_start_ts_ms: _StartTs = None
    meta: _Meta


class CallEvent(_Event):
    """Final summary of one channel, once, when it ends."""

    type: Literal["call"] = "call"
    overall: Summary
    segments: _Ms
    duration_ms: _Ms
    ended_by: EndedBy
    current: Optional[Summary] = Field(None, description="the most recent 30 s of active speech at the end")
    audio_start_ts_ms: _StartTs = None
    meta: _Meta


class DeadLetter(_Strict):
    """A rejected input message, kept verbatim (base64) with the reason."""

    type: Literal["dead_letter"] = "dead_letter"
    v: Literal[1] = EVENT_VERSION
    reason: str = Field(min_length=1)
    detail: str
    topic: str
    partition: Optional[int] = None
    offset: Optional[int] = None
    key_b64: Optional[str] = None
    value_b64: str
    received_at_ms: _Ms


Event = Union[SegmentEvent, AggregateEvent, CallEvent, DeadLetter]
EVENT_TYPES: dict[str, type[BaseModel]] = {
    "segment": SegmentEvent, "aggregate": AggregateEvent, "call": CallEvent, "dead_letter": DeadLetter,
}


def event_id(call_id: str, channel: str, kind: str, index: int) -> str:
    """Deterministic UUID (v5) of (call, channel, kind, index).

    The parts are JSON-encoded as a list, so no two different tuples share
    an encoding (no separator can be smuggled inside a part).
    """
    name = json.dumps([call_id, channel, kind, index], ensure_ascii=False, separators=(",", ":"))
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, name))


def make_dead_letter(error: FrameError, value: bytes, key: bytes | None, topic: str,
                     partition: int | None, offset: int | None, received_at_ms: int) -> DeadLetter:
    """Wrap a rejected message; the raw bytes survive base64-encoded for replay."""
    return DeadLetter.model_construct(
        type="dead_letter", v=EVENT_VERSION, reason=error.reason, detail=error.detail[:1000], topic=topic,
        partition=partition, offset=offset,
        key_b64=None if key is None else base64.b64encode(bytes(key)).decode("ascii"),
        value_b64=base64.b64encode(bytes(value)).decode("ascii"), received_at_ms=received_at_ms,
    )


def to_json(event: BaseModel | dict) -> bytes:
    """Serialise an event (model or plain dict) to compact JSON bytes."""
    if isinstance(event, BaseModel):
        return event.__pydantic_serializer__.to_json(event)
    return orjson.dumps(event)


def as_json_dict(event: BaseModel | dict) -> dict:
    """The event as a consumer of its topic reads it: the JSON `to_json` writes, parsed."""
    return orjson.loads(to_json(event))


def parse_event(raw: bytes | str) -> Event:
    """Parse and validate one event; dispatches on ``type``. Raises FrameError."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise FrameError("malformed_json", str(e)[:200]) from None
    except TypeError as e:
        raise FrameError("malformed_json", f"event must be bytes or str: {e}") from None
    if not isinstance(obj, dict):
        raise FrameError("not_a_map", f"event must be a JSON object, not {type(obj).__name__}")
    model = EVENT_TYPES.get(obj.get("type")) if isinstance(obj.get("type"), str) else None
    if model is None:
        raise FrameError("unknown_type", f"type {obj.get('type')!r} is not one of {', '.join(EVENT_TYPES)}")
    try:
        return model.model_validate(obj)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        reason = {"missing": "missing_field", "extra_forbidden": "unknown_field"}.get(err["type"], "bad_field")
        raise FrameError(reason, f"{model.__name__}.{where}: {err['msg']}"[:300]) from None
