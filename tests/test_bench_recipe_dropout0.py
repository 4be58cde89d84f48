"""bench/recipe_dropout0.py: the recipe's own ASR continuations with dropout off, moved under <data>/d0, and
the classifier stage on a copy of their last checkpoint whose dropout is back to the recipe's 0.1."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import recipe_dropout0  # noqa: E402
from model.checkpoint import load_checkpoint  # noqa: E402
from model.train.recipe import SHIPPED, shipped_recipe  # noqa: E402


def _flag(argv, flag):
    return argv[argv.index(flag) + 1]


def test_the_variant_is_the_recipes_steps_with_dropout_off_under_d0(tmp_path):
    steps = recipe_dropout0.dropout0_steps(tmp_path)
    recipe = {s.name: s for s in shipped_recipe(tmp_path)}
    d0 = str(tmp_path / "d0")
    asr = [s for s in steps if s.argv[:2] == ("train", "asr")]
    assert len(asr) == 4 and all(s.argv[-2:] == ("--set", "dropout=0") for s in asr)
    # the first reads the recipe's fourth-checkpoint run; each later one reads the one before it, under d0
    assert _flag(asr[0].argv, "--init") == str(tmp_path / "s11" / "asr.pt")
    assert [_flag(s.argv, "--init") for s in asr[1:]] == [str(s.output) for s in asr[:-1]]
    for s, name in zip(asr, recipe_dropout0.ASR_STEPS):   # otherwise the recipe's command, flag for flag
        assert tuple(a.replace(d0, str(tmp_path)) for a in s.argv[:-2]) == recipe[name].argv
        assert _flag(s.argv, "--out") == str(s.output)
    cls = next(s for s in steps if s.argv[:2] == ("train", "classifier"))
    assert _flag(cls.argv, "--init") == str(tmp_path / "d0" / "s17" / "asr-dropout0.1.pt")
    evals = [s for s in steps if s.argv[:1] == ("evaluate",)]
    assert [_flag(s.argv, "--model") for s in evals] == [str(cls.output)] * 2
    assert all(str(s.output).startswith(d0) for s in steps)


def test_restore_dropout_changes_the_config_only(tmp_path):
    out = tmp_path / "back.pt"
    recipe_dropout0.restore_dropout(SHIPPED, out, dropout=0.3)
    a, b = load_checkpoint(SHIPPED), load_checkpoint(out)
    assert b["config"]["dropout"] == 0.3 and dict(b["config"], dropout=a["config"]["dropout"]) == a["config"]
    assert all(torch.equal(a["state"][p][k], b["state"][p][k]) for p in a["state"] if isinstance(a["state"][p], dict)
               for k in a["state"][p])
