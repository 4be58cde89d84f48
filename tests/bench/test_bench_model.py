"""bench/bench_model.py end to end on a tiny network: 16 kHz windows, and 8 kHz windows handed over as the
worker hands them (`--rate`), which the model reads as they are."""

import json

from bench import bench_model
from model.config import tiny_config
from model.inference import VoiceToneModel


def _run(args, capsys) -> dict:
    assert bench_model.main(args) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_both_rates(tmp_path, capsys, monkeypatch):
    ckpt = tmp_path / "tiny.pt"
    VoiceToneModel.untrained(tiny_config(), seed=3).save(ckpt)
    common = ["--checkpoint", str(ckpt), "--devices", "cpu", "--precisions", "fp32", "--batch-sizes", "1,2",
              "--min-time", "0.01", "--threads", "1", "--ratio-batch", "1"]
    monkeypatch.setattr(bench_model, "AUDIO_RATE", None)
    wide = _run(common, capsys)
    narrow = _run(common + ["--rate", "8000"], capsys)
    assert wide["rate"] == 16000 and narrow["rate"] == 8000
    for r in (wide, narrow):
        assert [row["batch"] for row in r["results"]] == [1, 2]
        assert all(row["windows_per_s"] > 0 for row in r["results"])
        # achieved FLOP/s read against one large matrix product at the same threads: a tiny network on
        # one window is far below it
        assert all(row["peak_gflop_per_s"] > 0 and 0 < row["of_peak"] < 1 for row in r["results"])
        assert all(abs(row["of_peak"] - row["gflop_per_s"] / row["peak_gflop_per_s"]) < 1e-9 for row in r["results"])
    # the same network on the same 8 kHz windows: only reduced precision would move the answers
    assert narrow["results"][0]["max_prob_diff_vs_fp32"] == 0.0
