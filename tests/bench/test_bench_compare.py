"""The paired comparison of two evaluation reports (model.evaluate, and its CLI bench/compare_reports.py):
clips paired by audio and span, split by any group key."""

import json

from bench import compare_reports
from model.evaluate import paired_clips, paired_comparison as compare


def _clip(audio, label, pred, **group):
    return {"audio": audio, "start_s": None, "end_s": None, "label": label, "pred": pred, "group": group}


def test_clips_pair_by_audio_and_split_by_the_chosen_key():
    a = {"clips": [_clip("x.wav", 0, 0, condition="noisy", noise="babble"), _clip("y.wav", 1, 2, condition="clean"),
                   _clip("n.wav", -1, 0, condition="clean"), _clip("z.wav", 2, 2, condition="noisy", noise="white")]}
    b = {"clips": [_clip("z.wav", 2, 1, condition="noisy", noise="white"), _clip("y.wav", 1, 1, condition="clean"),
                   _clip("x.wav", 0, 0, condition="noisy", noise="babble")]}
    y, pa, pb, groups = paired_clips(a, b, "noise")
    assert list(y) == [0, 1, 2] and list(pa) == [0, 2, 2] and list(pb) == [0, 1, 1]   # the non-speech clip left out
    assert groups == ["babble", "-", "white"]
    assert paired_clips(a, b)[3] == ["noisy", "clean", "noisy"]
    r = compare(y, pa, pb, n_boot=50)
    assert (r["clips"], r["only_a"], r["only_b"]) == (3, 1, 1)


def test_the_cli_prints_the_table_and_a_json_line(tmp_path, capsys):
    a = {"model_version": "A", "clips": [_clip("x.wav", 0, 0, condition="noisy"), _clip("y.wav", 1, 2, condition="clean")]}
    b = {"model_version": "B", "clips": [_clip("x.wav", 0, 1, condition="noisy"), _clip("y.wav", 1, 1, condition="clean")]}
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert compare_reports.main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--bootstrap", "20"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    rows = json.loads(out[-1])["rows"]
    assert set(rows) == {"all", "clean", "noisy"}
    assert (rows["all"]["only_a"], rows["all"]["only_b"]) == (1, 1)
    assert any(line.startswith("clean ") for line in out)
