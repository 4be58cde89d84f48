"""JSON Schema files for every message, for clients in other languages.

The files are generated from the pydantic models, so they cannot drift from
the code; ``tests`` check events against them.  The audio frame is msgpack,
not JSON: its schema describes the msgpack map, with ``audio`` marked as a
msgpack ``bin`` value (JSON Schema has no bytes type).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from schemas.audio import ENCODINGS
from schemas.events import AggregateEvent, CallEvent, DeadLetter, SegmentEvent
from schemas.frames import FRAME_VERSION, REQUIRED_FIELDS, AudioFrame

DRAFT = "https://json-schema.org/draft/2020-12/schema"
DEFAULT_OUT = "schemas/json"


def audio_frame_schema() -> dict:
    """Schema of the msgpack map on ``audio.frames``."""
    s = AudioFrame.model_json_schema()
    props = s["properties"]
    props["v"] = {"const": FRAME_VERSION, "type": "integer", "description": props["v"]["description"]}
    props["encoding"] = {"type": "string", "enum": list(ENCODINGS), "description": props["encoding"]["description"]}
    props["audio"] = {
        "description": "msgpack bin (raw bytes, not base64): the mono samples in `encoding`; its length "
                       "must be a whole number of samples (2 bytes pcm_s16le, 1 mulaw/alaw, 4 f32le)",
        "x-msgpack-type": "bin",
        "contentMediaType": "application/octet-stream",
    }
    s.update({
        "title": "AudioFrame",
        "description": "msgpack map, the value of each audio.frames message; the key is call_id (UTF-8). "
                       "Unknown fields are rejected.",
        "required": list(REQUIRED_FIELDS),
        "additionalProperties": False,
    })
    return {"$schema": DRAFT, **s}


def _event_schema(model) -> dict:
    return {"$schema": DRAFT, **model.model_json_schema(mode="serialization")}


SCHEMAS = {
    "audio-frame.schema.json": audio_frame_schema,
    "segment-event.schema.json": lambda: _event_schema(SegmentEvent),
    "aggregate-event.schema.json": lambda: _event_schema(AggregateEvent),
    "call-event.schema.json": lambda: _event_schema(CallEvent),
    "dead-letter.schema.json": lambda: _event_schema(DeadLetter),
}


def export_json_schemas(out_dir: str | Path = DEFAULT_OUT) -> list[Path]:
    """Write one ``*.schema.json`` per message into ``out_dir``; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, build in SCHEMAS.items():
        path = out / name
        path.write_text(json.dumps(build(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def _cmd_export(args: argparse.Namespace) -> int:
    for path in export_json_schemas(args.out):
        print(path)
    return 0


def add_cli(subparsers) -> None:
    """``voicetone schemas export [--out DIR]``."""
    p = subparsers.add_parser("schemas", help="message schemas")
    sub = p.add_subparsers(dest="schemas_command", required=True)
    e = sub.add_parser("export", help="write JSON Schema files for every message")
    e.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    e.set_defaults(func=_cmd_export)
