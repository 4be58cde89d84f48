"""The model-only ceiling that `bench_e2e.py --ceiling` reads beside each live run: `bench_drain.py
--model-only` on a tiny network, and the run's windows/s set against it."""

import json

from bench import bench_drain, bench_e2e
from model.config import tiny_config
from model.inference import VoiceToneModel


def test_model_only_counts_every_window_of_the_sample_calls(tmp_path, capsys, monkeypatch):
    ckpt = tmp_path / "tiny.pt"
    VoiceToneModel.untrained(tiny_config(), seed=3).save(ckpt)
    monkeypatch.setenv("VOICETONE_MODEL_PATH", str(ckpt))
    monkeypatch.setenv("VOICETONE_MAX_BATCH_SIZE", "4")
    monkeypatch.setenv("VOICETONE_INFERENCE_WORKERS", "1")
    assert bench_drain.main(["--model-only", "--channels", "3", "--seconds", "10"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["bench"] == "model-only"
    # 10 s per channel: full windows at 0, 2.5 and 5 s
    assert r["windows"] == 3 * bench_drain.expected_windows(1, 10) == 9
    assert r["batch"] == 4 and r["inference_workers"] == 1
    assert 0 <= r["silent"] < r["windows"] and r["windows_per_s"] > 0
    assert r["cpu_s"] > 0 and r["seconds_timed"] > 0
    assert abs(r["cpu_ms_per_model_window"] - r["cpu_s"] * 1000 / (r["windows"] - r["silent"])) < 1e-9


def test_run_against_the_mean_of_the_ceilings_around_it():
    got = bench_e2e.against_ceiling(500, {"windows_per_s": 300.0}, {"windows_per_s": 200.0})
    assert got["ceiling_windows_per_s"] == [300.0, 200.0]
    assert abs(got["vs_ceiling"] - (500 / 2.5) / 250.0) < 1e-12
    assert "model_cores_alone" not in got


def test_the_shortfall_splits_into_cores_and_cost_per_window():
    before = {"windows_per_s": 300.0, "cpu_s": 6.0, "seconds_timed": 3.0, "cpu_ms_per_model_window": 7.0}
    after = {"windows_per_s": 300.0, "cpu_s": 5.0, "seconds_timed": 2.5, "cpu_ms_per_model_window": 6.0}
    got = bench_e2e.against_ceiling(300, before, after, {"model_cpu_cores": 1.3})
    assert got["model_cores_alone"] == 2.0 and got["model_cpu_ms_per_window_alone"] == 6.5
    assert got["model_cores_live"] == 1.3 and abs(got["vs_ceiling"] - 0.4) < 1e-12


def test_the_workers_own_cost_per_window_leaves_out_what_the_gate_answered():
    before = {"voicetone_batch_size_sum": 100.0, bench_e2e.SILENT: 10.0, bench_e2e.MODEL_CPU: 1.0}
    after = {"voicetone_batch_size_sum": 300.0, bench_e2e.SILENT: 50.0, bench_e2e.MODEL_CPU: 2.6}
    view = bench_e2e.worker_view(before, after)
    assert abs(view["worker_model_cpu_ms_per_window"] - 1600 / 160) < 1e-9   # 200 batched, 40 silent
