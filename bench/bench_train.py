"""Training throughput of one stage: seconds per step under each data-loading setting, alternated, and
whether the weights come out the same.

Each run is the recipe's own command for the stage (`model.train.recipe`: the shipped architecture, batch
16, its window, learning rate and seed) for ``--steps`` steps into a fresh folder, as a child process. The
loop's own time is read from the stage's last log line ("steps 0..N of N in X s"), so start-up is left out.
Settings alternate run by run, so a drifting machine hits each alike. The weights of every run are set
against the first setting's: the loading settings must not change what is trained.

    python -m bench.bench_train --manifest data/synth-b/train.combined.jsonl --init model/weights/default.pt
    python -m bench.bench_train ... --stage classifier --settings "workers=1,fetch-threads=0" --steps 300

``--settings``: a comma list of ``flag=value`` for `voicetone train` (``fetch-threads=1``: one window at a
time; ``fetch-threads=0``: as many threads as torch computes
with, the default; ``workers=1``: one loader process; ``set=dropout=0``: a model setting, which does change
the weights, so its weight column is expected to be non-zero).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from rich.console import Console
from rich.table import Table

from model.train.recipe import shipped_recipe, with_flags

LOOP = re.compile(r"steps (\d+)\.\.(\d+) of \d+ in ([0-9.]+) s")


#: the recipe step whose command each stage's runs take
RECIPE_STEP = {"asr": "stage 2 on (fourth checkpoint)", "classifier": "stage 3: classifier"}


def stage_argv(stage: str, manifest: str, init: str, out: Path, steps: int, window_s: float,
               step_name: str | None = None) -> list[str]:
    """The recipe's command for the stage (or for the named recipe step), with this run's manifest, init,
    output and step count."""
    steps_by_name = {s.name: s for s in shipped_recipe()}
    name = step_name or RECIPE_STEP[stage]
    if name not in steps_by_name:
        raise SystemExit(f"--step: no recipe step {name!r}; the recipe's steps: {', '.join(steps_by_name)}")
    step = steps_by_name[name]
    if step.argv[:2] != ("train", stage):
        raise SystemExit(f"--step {name!r} is not a {stage} stage step (it runs: {' '.join(step.argv[:2])})")
    argv = with_flags(step.argv, {"--manifest": manifest, "--init": init, "--out": out, "--steps": steps})
    return list(with_flags(argv, {"--window-s": f"{window_s:g}"}) if stage == "asr" else argv)


def run(argv: list[str], setting: dict[str, str], log: Path) -> float:
    """Seconds of the training loop (start-up excluded) of one run."""
    flags = [x for k, v in setting.items() for x in (f"--{k}", v)]
    with log.open("w") as f:
        rc = subprocess.call([sys.executable, "-m", "voicetone", *argv, "--no-resume", *flags],
                             stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    text = log.read_text()
    m = LOOP.findall(text)
    if rc != 0 or not m:
        raise SystemExit(f"training failed (exit {rc}); its log {log}:\n{text[-2000:]}")
    return float(m[-1][2])


def max_weight_diff(a: Path, b: Path) -> float:
    from model.checkpoint import load_checkpoint, max_state_diff

    sa, sb = (load_checkpoint(x)["state"] for x in (a, b))
    return max(max_state_diff(sa[p], sb[p]) for p in sa if isinstance(sa[p], dict))


def parse_settings(text: str) -> list[dict[str, str]]:
    out = []
    for item in text.split(","):
        key, _, value = item.strip().partition("=")
        if not key or not value:
            raise argparse.ArgumentTypeError(f"a setting is flag=value, got {item!r}")
        out.append({key: value})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--manifest", required=True)
    p.add_argument("--init", required=True, help="a checkpoint of the shipped architecture (e.g. the shipped one)")
    p.add_argument("--stage", choices=("asr", "classifier"), default="asr")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--window-s", type=float, default=8.0, help="asr: the window (the recipe's 8 or 12)")
    p.add_argument("--settings", type=parse_settings, default=parse_settings("fetch-threads=1,fetch-threads=0"))
    p.add_argument("--step", default=None,
                   help="the recipe step whose command the runs take (default: the stage's first; e.g. "
                        "'stage 2 on (sixth)', whose ASR stage trains the front end too)")
    p.add_argument("--workdir", default=None, help="where runs write (default: a temporary folder)")
    args = p.parse_args(argv)
    args.manifest, args.init = (str(Path(x).resolve()) for x in (args.manifest, args.init))   # runs start in ROOT
    console = Console(stderr=True)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="voicetone-bench-train-"))
    names = [",".join(f"{k}={v}" for k, v in s.items()) for s in args.settings]
    seconds: dict[str, list[float]] = {n: [] for n in names}
    outs: dict[str, Path] = {}
    for r in range(args.repeats):
        for name, setting in zip(names, args.settings):
            out = work / f"{re.sub(r'[^A-Za-z0-9]+', '_', name)}-{r}" / "model.pt"
            out.parent.mkdir(parents=True, exist_ok=True)
            cmd = stage_argv(args.stage, args.manifest, args.init, out, args.steps, args.window_s, args.step)
            took = run(cmd, setting, out.parent / "train.log")
            seconds[name].append(took)
            outs.setdefault(name, out)
            console.print(f"  {name:<22} run {r + 1}: {took:6.1f} s for {args.steps} steps")
    first = names[0]
    best = {n: min(v) for n, v in seconds.items()}
    rows = [{"setting": n, "seconds": seconds[n], "s_per_step": best[n] / args.steps,
             "speed_vs_first": best[first] / best[n], "max_weight_diff_vs_first": max_weight_diff(outs[first], outs[n])}
            for n in names]
    t = Table(title=f"{args.stage} stage, {args.steps} steps per run, best of {args.repeats} alternated runs")
    for col in ("setting", "s per step", "steps/min", f"speed vs {first}", "weights vs first (max |diff|)"):
        t.add_column(col, justify="right")
    for row in rows:
        t.add_row(row["setting"], f"{row['s_per_step']:.3f}", f"{60 / row['s_per_step']:.0f}",
                  f"{row['speed_vs_first']:.2f}x", f"{row['max_weight_diff_vs_first']:.1e}")
    console.print(t)
    print(json.dumps({"bench": "train", "stage": args.stage, "steps": args.steps, "manifest": args.manifest,
                      "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
