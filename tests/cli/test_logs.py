import io
import json
import logging

import pytest

from voicetone.logs import setup_logging


@pytest.fixture
def restore_root():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_context_fields(restore_root):
    buf = io.StringIO()
    setup_logging("debug", json=True, stream=buf)
    log = logging.getLogger("voicetone.test")
    log.info("window %d scored", 4, extra={"call_id": "c1", "channel": "agent"})
    log.debug("no context")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["msg"] == "window 4 scored"
    assert first["level"] == "INFO" and first["logger"] == "voicetone.test"
    assert first["call_id"] == "c1" and first["channel"] == "agent"
    assert first["ts"].endswith("+00:00")
    assert "call_id" not in second


def test_json_includes_exception(restore_root):
    buf = io.StringIO()
    setup_logging("INFO", json=True, stream=buf)
    try:
        raise ValueError("bad frame")
    except ValueError:
        logging.getLogger("x").exception("failed")
    obj = json.loads(buf.getvalue())
    assert "ValueError: bad frame" in obj["exc"]


def test_level_filters_and_repeat_setup_does_not_duplicate(restore_root):
    buf = io.StringIO()
    setup_logging("WARNING", json=False, stream=buf)
    setup_logging("WARNING", json=False, stream=buf)
    log = logging.getLogger("y")
    log.info("hidden")
    log.warning("shown", extra={"call_id": "c9", "channel": "0"})
    out = buf.getvalue().splitlines()
    assert len(out) == 1
    assert "shown" in out[0] and out[0].endswith("[c9/0]")
