"""The `voicetone` command line as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from schemas.events import parse_event
from schemas.wav import write_wav
from tests.harness import ROOT
from voicetone.cli import build_parser, main



def test_every_contract_command_exists():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("demo", "worker", "broker", "replay", "watch", "analyze", "data", "train", "evaluate",
                 "schemas", "report", "chime"):
        assert name in sub.choices, name
    args = parser.parse_args(["replay", "a.wav", "b.wav", "--broker", "x:1", "--speed", "0", "--frame-ms", "20",
                              "--encoding", "mulaw", "--sample-rate", "8000", "--channel", "agent,customer"])
    assert (args.speed, args.frame_ms, args.encoding, args.sample_rate) == (0.0, 20, "mulaw", 8000)
    assert parser.parse_args(["worker", "--device", "cpu"]).device == "cpu"
    assert parser.parse_args(["worker", "--precision", "int8"]).precision == "int8"


def test_analyze_json_stereo_any_rate(tmp_path, capsys):
    rate = 11025
    t = np.arange(int(rate * 6.2)) / rate
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), np.zeros_like(t)]).astype(np.float32)
    write_wav(tmp_path / "my-call.wav", rate, stereo)
    assert main(["analyze", str(tmp_path / "my-call.wav"), "--json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for ev in events:
        parse_event(json.dumps(ev))
    segs = [e for e in events if e["type"] == "segment"]
    assert {e["call_id"] for e in events} == {"my-call"}
    assert sorted({e["channel"] for e in segs}) == ["0", "1"]
    assert [(e["segment_index"], e["start_ms"], e["end_ms"]) for e in segs if e["channel"] == "0"] == \
        [(0, 0, 5000), (1, 2500, 6200)]
    assert sum(e["type"] == "aggregate" for e in events) == len(segs)
    assert sum(e["type"] == "call" for e in events) == 2


def test_analyze_table_and_missing_file(tmp_path, capsys):
    write_wav(tmp_path / "a.wav", 16000, np.zeros(16000 * 3, np.float32))
    assert main(["analyze", str(tmp_path / "a.wav")]) == 0
    assert "voicetone analyze" in capsys.readouterr().out
    assert main(["analyze", str(tmp_path / "nope.wav")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_schemas_export(tmp_path):
    assert main(["schemas", "export", "--out", str(tmp_path)]) == 0
    names = sorted(p.name for p in tmp_path.glob("*.json"))
    assert "segment-event.schema.json" in names and "audio-frame.schema.json" in names


@pytest.mark.broker
def test_demo_runs_and_ends_by_itself(tmp_path):
    """What the README's first command runs: broker, worker, sample calls, pictures."""
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "voicetone", "demo", "--out", str(out), "--speed", "8"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "4/4 channels summarised" in proc.stdout
    pngs = list(out.glob("*.png"))
    assert len(pngs) == 2 and all(p.stat().st_size > 10_000 for p in pngs)
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert sum(e["type"] == "call" for e in events) == 4


def test_analyze_with_int8_precision_from_the_environment(tmp_path, capsys, monkeypatch):
    write_wav(tmp_path / "q.wav", 8000, (0.2 * np.sin(np.arange(8000 * 6) / 8000 * 2 * np.pi * 300)).astype(np.float32))
    monkeypatch.setenv("VOICETONE_PRECISION", "int8")
    assert main(["analyze", str(tmp_path / "q.wav"), "--json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events and all(e["model_version"].endswith("+int8") for e in events if "model_version" in e)


def test_training_noise_kinds_reach_the_train_config(capsys):
    from model.data.augment import NOISE_KINDS
    from model.train.cli import _train_config

    parser = build_parser()
    base = ["train", "classifier", "--manifest", "m.jsonl", "--out", "c.pt", "--init", "a.pt"]
    assert _train_config(parser.parse_args(base)).noise_kinds == NOISE_KINDS
    args = parser.parse_args(base + ["--noise-kinds", "babble, babble,white"])
    assert _train_config(args).noise_kinds == ("babble", "babble", "white")   # babble drawn 2 times in 3
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--noise-kinds", "babble,rain"])
    assert "unknown noise kind(s) rain" in capsys.readouterr().err
