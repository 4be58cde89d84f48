"""Logging setup: human-readable lines for a terminal, one JSON object per line for log shippers.

``call_id`` and ``channel`` passed with ``extra=`` become top-level JSON fields
so a log pipeline can filter one call without parsing messages.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from typing import IO, Optional

import orjson

CONTEXT_FIELDS = ("call_id", "channel", "partition", "offset")

_HANDLER_NAME = "voicetone"


class JsonFormatter(logging.Formatter):
    """One object per line: ts (ISO 8601 UTC), level, logger, msg, context fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                obj[key] = value
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(obj, default=str).decode()


class TextFormatter(logging.Formatter):
    """Plain format, with ``[call_id/channel]`` appended when the record carries them."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        call_id = getattr(record, "call_id", None)
        if call_id is not None:
            channel = getattr(record, "channel", None)
            line += f" [{call_id}{'/' + str(channel) if channel is not None else ''}]"
        return line


def setup_logging(level: str | int = "INFO", json: bool = False, stream: Optional[IO[str]] = None,
                  repeat_s: float = 30.0) -> logging.Handler:
    """Install one handler on the root logger (replacing the one a previous call installed).

    Idempotent so the CLI, tests and the demo can all call it without duplicating lines. The Kafka
    clients' repeated lines (librdkafka's and aiokafka's) pass at most once per `repeat_s` each.
    """
    from streams.kafka_client import RateLimit

    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    handler.addFilter(RateLimit(repeat_s))
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
