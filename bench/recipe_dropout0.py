"""Does the ASR stage need dropout? The recipe's ASR continuations (steps 10-13 of `voicetone train recipe
--dry-run`) rerun with every dropout off (1.76x faster on 2 cores: docs/model-report.md, "Training
speed"), then its classifier stage with the classifier's dropout put back to 0.1 as the recipe trains it,
both held-out sets, and the paired comparison against the recipe's own checkpoint.

The steps are the recipe's own (`model.train.recipe.shipped_recipe`) with ``--set dropout=0`` added and
their outputs moved under ``<data>/d0``, so they cannot drift from it. Needs a finished ``voicetone train
recipe --data <data>``. Rerun to resume: finished steps are skipped and a training step resumes its state.

    python bench/recipe_dropout0.py --data data/full [--dry-run]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.train.recipe import Step, compare_with_shipped, run_recipe, shipped_recipe, with_flags  # noqa: E402

ASR_STEPS = ("stage 2 on, front end trained (fifth)", "stage 2 on (sixth)", "stage 2 on",
             "stage 2 on, 12 s window (seventh)")
LATER_STEPS = ("stage 3: classifier", "held-out evaluation", "held-out evaluation, second set")


def restore_dropout(src: Path, out: Path, dropout: float = 0.1) -> None:
    """``src`` with its config's dropout set to ``dropout``: the classifier stage takes its config from
    its init checkpoint, and should train as the recipe's does."""
    import torch

    from model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(src)
    ckpt["config"] = dict(ckpt["config"], dropout=dropout)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(out)


def dropout0_steps(data: str | Path = "data") -> list[Step]:
    d = Path(data)
    d0 = d / "d0"
    recipe = {s.name: s for s in shipped_recipe(d)}
    moved: dict[str, str] = {}   # a recipe output -> this run's

    def move(step: Step, extra: tuple[str, ...] = ()) -> Step:
        out_flag = step.argv[step.argv.index("--out") + 1]
        argv = with_flags(tuple(moved.get(a, a) for a in step.argv), {"--out": d0 / Path(out_flag).relative_to(d)})
        output = d0 / step.output.relative_to(d)
        moved[str(step.output)] = str(output)
        return Step(step.name + ", dropout 0" * bool(extra), output, step.minutes, argv + extra)

    steps = [move(recipe[name], ("--set", "dropout=0")) for name in ASR_STEPS]
    asr_out = steps[-1].output
    restored = asr_out.with_name(asr_out.stem + "-dropout0.1.pt")
    steps.append(Step("the classifier's dropout back to 0.1", restored, 0,
                      action=lambda: restore_dropout(asr_out, restored),
                      about="the classifier stage trains as the recipe's does"))
    moved[str(recipe[ASR_STEPS[-1]].output)] = str(restored)
    steps += [move(recipe[name]) for name in LATER_STEPS]
    ev = d / "eval"
    pairs = {"first set": (ev / "recipe" / "report.json", steps[-2].output),
             "second set": (ev / "recipe-t" / "report.json", steps[-1].output)}
    steps.append(Step("against the recipe's checkpoint", d0 / "eval" / "vs-recipe.json", 0,
                      action=lambda: compare_with_shipped(pairs, d0 / "eval" / "vs-recipe.json"),
                      about="paired McNemar test and bootstrap interval per set and condition (A: the recipe's)"))
    return steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="data/full", help="the finished recipe run's data folder")
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    return run_recipe(dropout0_steps(args.data), dry_run=args.dry_run)


if __name__ == "__main__":
    raise SystemExit(main())
