"""Timeline rendering from synthetic contract-shaped events (no model, no broker)."""

import argparse
import base64
import io
import re

import numpy as np
import orjson
import pytest
from matplotlib.image import imread

from tests.harness.events import aggregate, call, segment
from voicetone.report import add_cli, load_events, render_timeline

CALL_LABELS = ["neutral", "neutral", "negative", "negative", "negative", "positive", "positive", "no_speech"]


def _call_events(call_id="call-1"):
    events = []
    for channel in ("agent", "customer"):
        for i, lab in enumerate(CALL_LABELS):
            events.append(segment(call_id, channel, i, lab, speech=0.1 if lab == "no_speech" else 0.9))
            events.append(aggregate(call_id, channel, i, "negative" if 2 <= i <= 5 else "neutral", "neutral"))
        events.append(call(call_id, channel, "neutral", len(CALL_LABELS)))
    return events


def _has_color(img, rgb, tol=0.08):
    return bool(np.any(np.all(np.abs(img[..., :3] - np.array(rgb)) < tol, axis=-1)))


def test_png_timeline_draws_the_label_colours(tmp_path):
    out = render_timeline(_call_events(), tmp_path / "t.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = imread(io.BytesIO(data))
    assert img.shape[0] > 300 and img.shape[1] > 600
    assert _has_color(img, (0xd6 / 255, 0x27 / 255, 0x28 / 255))  # negative curve / band
    assert _has_color(img, (0x2c / 255, 0xa0 / 255, 0x2c / 255))  # positive curve


def test_html_embeds_the_png(tmp_path):
    out = render_timeline(_call_events("c&1"), tmp_path / "sub" / "t.html")
    page = out.read_text()
    assert "c&amp;1" in page
    match = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert match and base64.b64decode(match.group(1))[:4] == b"\x89PNG"


def test_render_without_drawable_events_raises(tmp_path):
    with pytest.raises(ValueError):
        render_timeline([call("c", "agent", "neutral", 1)], tmp_path / "x.png")


def test_load_events_skips_non_json_lines_and_unknown_types(tmp_path):
    path = tmp_path / "events.jsonl"
    evs = _call_events()[:3]
    lines = ["2024-01-01 INFO worker started", ""] + [orjson.dumps(e).decode() for e in evs]
    lines.append(orjson.dumps({"type": "alert"}).decode())
    path.write_text("\n".join(lines) + "\n")
    assert load_events(path) == evs


def _cli(argv):
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_report_from_events_file_keeps_one_call(tmp_path, capsys):
    path = tmp_path / "events.jsonl"
    evs = _call_events("a") + _call_events("b")[:4]
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in evs + evs))  # duplicates are de-duplicated
    out = tmp_path / "a.png"
    assert _cli(["report", "a", "--events", str(path), "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    assert capsys.readouterr().out.strip() == str(out)
    assert _cli(["report", "zzz", "--events", str(path), "--out", str(tmp_path / "z.png")]) == 1
    assert not (tmp_path / "z.png").exists()


def test_cli_rejects_events_and_broker_together(tmp_path):
    with pytest.raises(SystemExit):
        _cli(["report", "a", "--events", "f", "--broker", "localhost:9092"])
