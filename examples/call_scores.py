"""Call scores: keep one row per (call, channel) from ``sentiment.calls`` in SQLite or Postgres.

The upsert on (call_id, channel) makes replaying the topic from the start
idempotent, and the SQL (``CREATE TABLE IF NOT EXISTS``, ``ON CONFLICT ... DO
UPDATE SET col = excluded.col``, DOUBLE PRECISION / BIGINT) runs unchanged on
SQLite >= 3.24 and Postgres; only the placeholder style differs.

    python -m examples.call_scores --broker localhost:9092 --db sqlite:///scores.db
    python -m examples.call_scores --broker localhost:9092 --db postgresql://user:pw@host/db   # needs psycopg
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from typing import Any, Optional


COLUMNS = (
    "call_id", "channel", "label", "positive", "neutral", "negative",
    "active_speech_ms", "start_ms", "end_ms", "duration_ms", "segments",
    "model_version", "event_id", "emitted_at_ms",
)
KEY = ("call_id", "channel")

CREATE_SQL = """
CREATE TABLE IF NOT EXISTS call_scores (
    call_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    label TEXT NOT NULL,
    positive DOUBLE PRECISION NOT NULL,
    neutral DOUBLE PRECISION NOT NULL,
    negative DOUBLE PRECISION NOT NULL,
    active_speech_ms BIGINT NOT NULL,
    start_ms BIGINT NOT NULL,
    end_ms BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    segments INTEGER NOT NULL,
    model_version TEXT,
    event_id TEXT,
    emitted_at_ms BIGINT,
    PRIMARY KEY (call_id, channel)
)
"""


def _upsert_sql(placeholder: str) -> str:
    updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in KEY)
    return (
        f"INSERT INTO call_scores ({', '.join(COLUMNS)}) VALUES ({', '.join([placeholder] * len(COLUMNS))}) "
        f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET {updates}"
    )


def row_from_event(event: dict) -> dict[str, Any]:
    """Flatten a call summary event (``overall`` SUMMARY + segments + duration_ms) into a row."""
    overall = event["overall"]
    sentiment = overall["sentiment"]
    return {
        "call_id": event["call_id"],
        "channel": event["channel"],
        "label": overall["label"],
        "positive": float(sentiment["positive"]),
        "neutral": float(sentiment["neutral"]),
        "negative": float(sentiment["negative"]),
        "active_speech_ms": int(overall["active_speech_ms"]),
        "start_ms": int(overall["start_ms"]),
        "end_ms": int(overall["end_ms"]),
        "duration_ms": int(event["duration_ms"]),
        "segments": int(event["segments"]),
        "model_version": event.get("model_version"),
        "event_id": event.get("event_id"),
        "emitted_at_ms": event.get("emitted_at_ms"),
    }


class CallScoreStore:
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db``, ``sqlite://`` (memory) or ``postgresql://...``."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite://"):
            path = url[len("sqlite://"):]
            path = path[1:] if path.startswith("/") else path
            self._conn = sqlite3.connect(path or ":memory:")
            placeholder = "?"
        elif url.startswith(("postgresql://", "postgres://")):
            try:
                import psycopg
            except ImportError as exc:
                raise RuntimeError("Postgres needs psycopg: pip install 'psycopg[binary]'") from exc
            self._conn = psycopg.connect(url)
            placeholder = "%s"
        else:
            raise ValueError(f"unsupported database URL: {url!r} (sqlite:/// or postgresql://)")
        self._upsert = _upsert_sql(placeholder)
        cur = self._conn.cursor()
        cur.execute(CREATE_SQL)
        self._conn.commit()

    def write(self, event: dict) -> bool:
        """Store a ``type: call`` event; other event types are ignored (returns False)."""
        if event.get("type") != "call":
            return False
        row = row_from_event(event)
        cur = self._conn.cursor()
        cur.execute(self._upsert, tuple(row[c] for c in COLUMNS))
        self._conn.commit()
        return True

    def rows(self) -> list[dict[str, Any]]:
        cur = self._conn.cursor()
        cur.execute(f"SELECT {', '.join(COLUMNS)} FROM call_scores ORDER BY call_id, channel")
        return [dict(zip(COLUMNS, r)) for r in cur.fetchall()]

    def close(self) -> None:
        self._conn.close()


def main(argv: Optional[list[str]] = None) -> int:
    from confluent_kafka import Consumer

    from examples._consume import run_loop
    from streams.settings import Settings

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--broker", default=None, help="bootstrap servers (default: VOICETONE_BROKER)")
    p.add_argument("--db", default="sqlite:///call_scores.db")
    p.add_argument("--topic", default=None, help="call summaries topic (default: the worker's)")
    p.add_argument("--group", default="voicetone-call-scores")
    args = p.parse_args(argv)

    settings = Settings(**({"broker": args.broker} if args.broker else {}))
    store = CallScoreStore(args.db)
    # Offsets are committed only after the row is written: a crash replays, the upsert absorbs it.
    consumer = Consumer({**settings.confluent_config(), "group.id": args.group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([args.topic or settings.calls_topic])
    def handle(msg, event) -> None:
        if store.write(event):
            print(f"{event['call_id']}/{event['channel']}: {event['overall']['label']}", flush=True)
        consumer.commit(message=msg, asynchronous=False)

    try:
        run_loop(consumer, handle)
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
