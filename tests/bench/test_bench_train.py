"""bench/bench_train.py end to end: the recipe's classifier command for a few steps under two fetch settings,
its loop time read from the log, and the weights compared (the fetch setting must not change them); the ASR
stage's command as the bench builds it (its run ends on a greedy decode too slow for the suite)."""

import json

import numpy as np
import pytest

from bench import bench_train
from model.train.recipe import SHIPPED
from schemas.wav import write_wav


def test_two_fetch_settings_time_the_loop_and_train_the_same_weights(tmp_path, capsys):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(20):
        path = tmp_path / f"u{i}.wav"
        write_wav(path, 16000, (0.1 * rng.standard_normal(16000 * (2 + i % 3))).astype(np.float32))
        lines.append({"audio": path.name, "transcript": "thanks a lot" if i % 2 else "this is bad",
                      "sentiment": "positive" if i % 2 else "negative"})
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert bench_train.main(["--manifest", str(manifest), "--init", str(SHIPPED), "--stage", "classifier",
                             "--steps", "3", "--repeats", "1",
                             "--settings", "fetch-threads=1,fetch-threads=2", "--workdir", str(tmp_path / "w")]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["setting"] for r in out["rows"]] == ["fetch-threads=1", "fetch-threads=2"]
    assert all(r["s_per_step"] > 0 and len(r["seconds"]) == 1 for r in out["rows"])
    assert [r["max_weight_diff_vs_first"] for r in out["rows"]] == [0.0, 0.0]
    # the runs are the recipe's own commands with this manifest, init and step count
    argv = bench_train.stage_argv("asr", str(manifest), str(SHIPPED), tmp_path / "x.pt", 3, 12.0)
    assert argv[:2] == ["train", "asr"] and argv[argv.index("--steps") + 1] == "3"
    assert argv[argv.index("--init") + 1] == str(SHIPPED) and argv[argv.index("--window-s") + 1] == "12"
    argv = bench_train.stage_argv("classifier", str(manifest), str(SHIPPED), tmp_path / "x.pt", 3, 12.0)
    assert argv[:2] == ["train", "classifier"] and argv[argv.index("--heads") + 1] == "4"
    # a named recipe step: the continuation that trains the front end too; an unknown name says which exist
    argv = bench_train.stage_argv("asr", str(manifest), str(SHIPPED), tmp_path / "x.pt", 3, 8.0, "stage 2 on (sixth)")
    assert "--train-frontend" in argv and argv[argv.index("--seed") + 1] == "1"
    with pytest.raises(SystemExit, match="no recipe step 'nope'"):
        bench_train.stage_argv("asr", str(manifest), str(SHIPPED), tmp_path / "x.pt", 3, 8.0, "nope")
    with pytest.raises(SystemExit, match="not a classifier stage step"):
        bench_train.stage_argv("classifier", str(manifest), str(SHIPPED), tmp_path / "x.pt", 3, 8.0, "stage 2 on (sixth)")
