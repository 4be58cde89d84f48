"""`voicetone train recipe`: the shipped chain parses against today's CLI, each link reads what an
earlier link made, and the runner skips what is done, stops on a failure and resumes from there."""

import io
import json
from pathlib import Path

import numpy as np
import pytest

from model.train.cli import _train_config
from model.train.common import RUN_SETTINGS
from model.train.recipe import (SHIPPED, Step, combine_manifests, compare_classifiers, first_entries, last_stage_recipe,
                                run_recipe, shipped_recipe, whisper_recipe)
from tests.harness import ROOT
from voicetone.cli import build_parser


def _flag(argv, name):
    return argv[argv.index(name) + 1] if name in argv else None


@pytest.mark.parametrize("chain", [shipped_recipe, whisper_recipe])
def test_every_step_of_the_shipped_chain_parses_against_the_cli(tmp_path, chain):
    parser = build_parser()
    steps = chain(tmp_path / "data")
    assert len({s.name for s in steps}) == len(steps)
    for step in steps:
        assert bool(step.argv) != (step.action is not None), step.name
        if step.argv:
            args = parser.parse_args(list(step.argv))   # a renamed or removed flag fails here
            assert callable(args.func)


def test_each_link_reads_only_what_an_earlier_link_made(tmp_path):
    steps = shipped_recipe(tmp_path / "data")
    made: set[Path] = set()
    for step in steps:
        argv = list(step.argv)
        for needed in (_flag(argv, "--init"), _flag(argv, "--manifest")):
            if needed is not None:
                assert Path(needed) in made, (step.name, needed)
        if argv[:1] == ["evaluate"] or argv[:2] == ["data", "pseudo-label"]:
            src = Path(argv[1] if argv[0] == "evaluate" else argv[2])
            # the corpus step writes both splits; a held-out-only set is made as its test.jsonl
            assert src.parent / "train.jsonl" in made or src in made, (step.name, src)
            model_path = _flag(argv, "--model")
            assert model_path is None or Path(model_path) in made or Path(model_path) == SHIPPED, step.name
        out = _flag(argv, "--out")
        if out is not None and argv[:2] != ["data", "synth"] and argv[0] != "evaluate":
            assert Path(out) == step.output, step.name
        made.add(step.output)
    by_name = {s.name: s for s in steps}
    final = [s for s in steps if s.argv[:2] == ("train", "classifier")][-1]
    assert _flag(list(by_name["held-out evaluation"].argv), "--model") == str(final.output)
    # the chain ends on the made and the shipped checkpoints scored on both held-out sets, then compared
    assert steps[-1].action is not None and steps[-1].name == "against the shipped checkpoint"
    scored = [(Path(s.argv[1]).parent.name, Path(_flag(list(s.argv), "--model"))) for s in steps
              if s.argv[:1] == ("evaluate",)]
    assert sorted(scored) == sorted((held, m) for held in ("synth", "synth-t") for m in (final.output, SHIPPED))


def test_the_recipe_is_the_shipped_checkpoints(tmp_path):
    """Architecture and the step counts the checkpoint records for its last run of each stage."""
    from model.checkpoint import load_checkpoint
    ck = load_checkpoint(ROOT / "model" / "weights" / "default.pt")
    shipped, metrics = ck["config"], ck["metrics"]
    steps = shipped_recipe(tmp_path / "data")
    last = {stage: [s for s in steps if s.argv[:2] == ("train", stage)][-1].argv
            for stage in ("pretrain", "asr", "classifier")}
    parser = build_parser()
    for stage, argv in last.items():
        assert metrics[stage]["steps"] == int(_flag(list(argv), "--steps")), stage
        if "run" in metrics[stage]:   # recorded since the eighth checkpoint: seed, lr, batch, warm-up, window, --ema
            tc = _train_config(parser.parse_args(list(argv)))
            assert metrics[stage]["run"] == {k: getattr(tc, k) for k in RUN_SETTINGS}, stage
    assert "run" in metrics["classifier"]
    assert shipped["cls_heads"] == int(_flag(list(last["classifier"]), "--heads") or 1)
    assert metrics["asr"].get("train_frontend", False) == ("--train-frontend" in last["asr"])
    overrides = {}
    for step in steps:
        for i, tok in enumerate(step.argv):
            if tok == "--set":
                key, value = step.argv[i + 1].split("=")
                overrides[key] = value
    for key in ("d_model", "frontend_layers", "asr_layers", "decoder_layers", "n_mels", "conv_channels"):
        assert str(shipped[key]) == overrides[key], key


def test_combine_manifests_keeps_entries_and_rewrites_relative_audio_paths(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "train.jsonl").write_text(json.dumps({"audio": "audio/x.wav", "sentiment": "positive"}) + "\n"
                                   "# a comment\n\n" + json.dumps({"audio": "/abs/y.wav", "speech": False}) + "\n")
    (b / "train.jsonl").write_text(json.dumps({"audio": "audio/z.wav", "transcript": "hi"}) + "\n")
    out = b / "combined.jsonl"
    combine_manifests(out, [a / "train.jsonl", b / "train.jsonl"])
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows == [{"audio": "../a/audio/x.wav", "sentiment": "positive"}, {"audio": "/abs/y.wav", "speech": False},
                    {"audio": "audio/z.wav", "transcript": "hi"}]
    assert not list(b.glob("*.tmp"))


def test_the_runner_skips_done_steps_stops_on_a_failure_and_resumes_there(tmp_path):
    calls = []
    made = tmp_path / "made.txt"
    schemas = tmp_path / "schemas"
    steps = [
        Step("done already", tmp_path / "exists.txt", 1, action=lambda: calls.append("never")),
        Step("python step", made, 0, action=lambda: (calls.append("python"), made.write_text("x"))),
        Step("cli step", schemas / "audio-frame.schema.json", 0, ("schemas", "export", "--out", str(schemas))),
        Step("failing step", tmp_path / "never.pt", 1,
             ("evaluate", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "ev"))),
        Step("after the failure", tmp_path / "after.txt", 0, action=lambda: calls.append("after")),
    ]
    (tmp_path / "exists.txt").write_text("")
    log = io.StringIO()
    assert run_recipe(steps, dry_run=True, out=log) == 0
    assert calls == [] and not made.exists()
    assert "voicetone evaluate" in log.getvalue() and "done (" in log.getvalue()

    log = io.StringIO()
    rc = run_recipe(steps, out=log)
    assert rc != 0 and calls == ["python"], log.getvalue()
    assert "failing step failed" in log.getvalue() and "rerun the recipe" in log.getvalue()
    assert (schemas / "audio-frame.schema.json").exists()

    steps[3] = Step("failing step", tmp_path / "never.pt", 1, action=lambda: (tmp_path / "never.pt").write_text(""))
    log = io.StringIO()
    assert run_recipe(steps, out=log) == 0
    assert calls == ["python", "after"]   # the done ones are not run again
    assert log.getvalue().count(": done (") == 3

    with pytest.raises(ValueError, match="no step named"):
        run_recipe(steps, through="nope", out=io.StringIO())


def test_a_dry_run_says_where_an_interrupted_training_step_resumes(tmp_path):
    import torch
    from model.train.common import state_path

    out = tmp_path / "asr.pt"
    steps = [Step("train", out, 60, ("train", "asr", "--out", str(out), "--steps", "100")),
             Step("not started", tmp_path / "b.pt", 30, ("train", "asr", "--steps", "50")),
             Step("python", tmp_path / "c.txt", 0, action=lambda: None)]
    log = io.StringIO()
    assert run_recipe(steps, dry_run=True, out=log) == 0
    assert "about 1.5 h" in log.getvalue() and "resumes" not in log.getvalue()

    torch.save({"step": 40, "modules": {}}, state_path(out))   # what train_loop saves every 200 steps
    log = io.StringIO()
    assert run_recipe(steps, dry_run=True, out=log) == 0
    text = log.getvalue()
    assert "[1/3] train (~60 min; resumes from step 40 of 100 (its saved state))" in text
    assert "about 1.1 h" in text   # 60 min x 0.6 left + 30 min


def test_through_stops_after_the_named_step(tmp_path):
    calls = []
    steps = [Step(n, tmp_path / n, 0, action=lambda n=n: (calls.append(n), (tmp_path / n).write_text("")))
             for n in ("a", "b", "c")]
    assert run_recipe(steps, through="b", out=io.StringIO()) == 0
    assert calls == ["a", "b"]


def test_the_last_stage_chain_is_the_shipped_stage_on_the_shipped_encoder(tmp_path):
    """`--last-stage`: the corpora the classifier reads, the shipped classifier command with only --init (the
    shipped checkpoint) and --out changed, and the evaluation of what it made."""
    full, short = shipped_recipe(tmp_path / "data"), last_stage_recipe(tmp_path / "data")
    parser = build_parser()
    made: set[Path] = {SHIPPED}
    for step in short:
        argv = list(step.argv)
        if argv:
            parser.parse_args(argv)
        for needed in (_flag(argv, "--init"), _flag(argv, "--manifest"), _flag(argv, "--model")):
            if needed is not None:
                assert Path(needed) in made, (step.name, needed)
        made.add(step.output)
    stage = next(s for s in full if s.name == "stage 3: classifier").argv
    new = short[-2].argv
    assert Path(_flag(list(new), "--init")) == SHIPPED and SHIPPED.exists()
    changed = {i for i, (a, b) in enumerate(zip(stage, new)) if a != b}
    assert len(stage) == len(new) and {stage[i - 1] for i in changed} == {"--init", "--out"}
    assert [s.name for s in short[:4]] == ["corpus", "second corpus", "broad-grammar corpus", "manifest: three corpora"]
    assert sum(s.minutes for s in short) < 70


def test_compare_classifiers_says_bit_for_bit_or_how_far(tmp_path):
    import torch

    assert "bit for bit" in compare_classifiers(SHIPPED)
    ck = torch.load(SHIPPED, weights_only=True)
    name = next(k for k, v in ck["state"]["classifier"].items() if v.is_floating_point())
    ck["state"]["classifier"][name] = ck["state"]["classifier"][name] + 0.25
    torch.save(ck, tmp_path / "other.pt")
    said = compare_classifiers(tmp_path / "other.pt")
    assert "differ" in said and "0.25" in said


def _report(preds, labels, conditions, version):
    return {"model_version": version, "clips": [
        {"audio": f"c{i}.wav", "start_s": None, "end_s": None, "label": y, "pred": p, "group": {"condition": c}}
        for i, (p, y, c) in enumerate(zip(preds, labels, conditions))]}


def test_the_chain_ends_on_a_paired_comparison_with_the_shipped_checkpoint(tmp_path):
    from model.train.recipe import compare_with_shipped

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300).tolist()
    cond = ["clean", "telephone", "noisy"] * 100
    shipped = [v if rng.random() < 0.85 else (v + 1) % 3 for v in y]
    same = list(shipped)   # three clips lost and three gained: noise
    right = [i for i in range(300) if shipped[i] == y[i]][:3]
    wrong = [i for i in range(300) if shipped[i] != y[i]][:3]
    for i in right:
        same[i] = (y[i] + 1) % 3
    for i in wrong:
        same[i] = y[i]
    worse = [(v + 1) % 3 if i % 3 else v for i, v in enumerate(shipped)]   # two thirds of the answers wrong
    for name, made in (("same", same), ("worse", worse)):
        a, b = tmp_path / f"{name}-a.json", tmp_path / f"{name}-b.json"
        a.write_text(json.dumps(_report(shipped, y, cond, "shipped")))
        b.write_text(json.dumps(_report(made, y, cond, "made")))
        out = tmp_path / f"{name}.json"
        buf = io.StringIO()
        got = compare_with_shipped({"first set": (a, b)}, out, n_boot=50, print_to=buf)
        assert json.loads(out.read_text()) == json.loads(json.dumps(got))
        assert set(got["sets"]["first set"]["rows"]) == {"all", "clean", "noisy", "telephone"}
        assert got["within_noise"] is (name == "same"), name
        assert "verdict: " in buf.getvalue() and "telephone" in buf.getvalue()


def test_first_entries_keeps_the_head_of_a_manifest(tmp_path):
    src = tmp_path / "m.jsonl"
    src.write_text("".join(json.dumps({"audio": f"a{i}.wav"}) + "\n" for i in range(5)))
    first_entries(tmp_path / "head.jsonl", src, 3)
    assert [json.loads(t)["audio"] for t in (tmp_path / "head.jsonl").read_text().splitlines()] == ["a0.wav", "a1.wav", "a2.wav"]


def test_the_whisper_chain_reads_only_what_an_earlier_link_made(tmp_path):
    steps = whisper_recipe(tmp_path / "data")
    made: set[Path] = set()
    for step in steps:
        argv = list(step.argv)
        for needed in (_flag(argv, "--init"), _flag(argv, "--manifest"), _flag(argv, "--model")):
            assert needed is None or Path(needed) in made, (step.name, needed)
        features = _flag(argv, "--features") or (_flag(argv, "--out") if argv[:2] == ["data", "features"] else None)
        if argv[:2] == ["train", "asr"] or argv[:2] == ["train", "classifier"]:
            assert Path(features) / "meta.json" in made, step.name
        if argv[:1] == ["evaluate"]:
            src = Path(argv[1])
            assert src in made or src.parent / "train.jsonl" in made, (step.name, src)
        made.add(step.output)
    assert [s.argv[:2] for s in steps if s.argv[:1] == ("train",)] == [("train", "asr"), ("train", "classifier")]
