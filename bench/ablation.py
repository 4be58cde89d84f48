"""Ablation of the hybrid (tone + words) model on the held-out test set.

Three systems, scored on the same held-out manifest with the same metrics
(``model.evaluate``: unweighted accuracy, macro-F1, confusion, per condition):

* ``hybrid``   -- the shipped checkpoint (front end -> ASR encoder -> classifier);
                  just ``voicetone evaluate``, repeated here for the table.
* ``acoustic`` -- (a) acoustic only: the same pretrained front end and the same
                  classifier stage, but NO ASR stage: the ASR encoder stays at
                  its random initialisation (frozen, 0 ASR steps), so the
                  classifier sees front-end features that never learnt words or
                  the ``<sentiment>`` token.
* ``text``     -- (b) text only: transcripts of the test audio (Whisper base with
                  ``--asr whisper``, or PocketSphinx), labelled by VADER
                  (``model.data.pseudo_label``), i.e. what a words-only pipeline
                  would say.

Rerun (from the repository root, venv active)::

    python -m bench.ablation acoustic --pretrain data/ckpt/pretrain.pt \\
        --manifest data/synth/train.pl.jsonl --test data/synth/test.jsonl \\
        --out data/ckpt/ablation-acoustic.pt --steps 600 --batch-size 16
    python -m bench.ablation text --test data/synth/test.jsonl --out data/eval/ablation-text.json
    python -m bench.ablation table --hybrid data/eval/default/report.json \\
        --acoustic data/ckpt/ablation-acoustic.eval.json --text data/eval/ablation-text.json

``--limit N`` on ``text`` scores only the first N test entries, ``--per-class N``
the first N of each class (the recognisers are slow); ``table`` then compares all
systems on that same subset too. On the real-speech set::

    python -m bench.ablation text --asr whisper --test data/w/real/manifest.jsonl --per-class 60 \
        --out data/w/eval/text-whisper.json
    python -m bench.ablation table --hybrid data/w/eval/real/report.json --text data/w/eval/text-whisper.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from model.data.manifest import SENTIMENTS, read_manifest
from model.evaluate import (accuracy, confusion_matrix, macro_f1, per_group,
                            unweighted_accuracy)


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def _summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    labels = [r["label"] for r in records]
    preds = [r["pred"] for r in records]
    out = {"n": int(sum(lab >= 0 for lab in labels)), "ua": unweighted_accuracy(labels, preds),
           "accuracy": accuracy(labels, preds), "macro_f1": macro_f1(labels, preds),
           "confusion": confusion_matrix(labels, preds).tolist()}
    cond = per_group(records, "condition")
    out["per_condition"] = {k: v["ua"] for k, v in cond["groups"].items()}
    out["condition_ua_gap"] = cond["ua_gap"]
    return out


# --------------------------------------------------------------------------- (a) acoustic only
def frontend_only(path: str, copy: Path) -> str:
    """A pretrain-stage checkpoint holding just ``path``'s front end. Given a later-stage checkpoint
    (e.g. the shipped model), the ASR stage would warm-start its trained encoder from it and the
    "no ASR stage" system would silently read a trained one."""
    from model.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(path)
    if ck["stage"] == "pretrain":
        return path
    save_checkpoint(copy, stage="pretrain", name=ck["name"], config=ck["config"],
                    parts={"frontend": ck["state"]["frontend"]}, hf_config=ck.get("hf_config"))
    return str(copy)


def run_acoustic(args) -> int:
    """Random (untrained, frozen) ASR encoder on the pretrained front end, then the usual classifier stage."""
    _threads(args.threads)
    from model.evaluate import evaluate_model
    from model.inference import load
    from model.train.asr_stage import run_asr
    from model.train.classifier_stage import run_classifier
    from model.train.common import TrainConfig

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    no_asr = out.with_name(out.stem + ".no-asr.pt")
    t0 = time.time()
    pretrain = frontend_only(args.pretrain, out.with_name(out.stem + ".frontend.pt"))
    # steps=0: the ASR stage only builds the network (random encoder, the tokenizer) and saves it untrained
    run_asr(TrainConfig(manifest=args.manifest, out=str(no_asr), init=pretrain, steps=0, warmup=0,
                        seed=args.seed, device="cpu", resume=False, progress=False, extra={"eval_items": 1}))
    run_classifier(TrainConfig(manifest=args.manifest, out=str(out), init=str(no_asr), steps=args.steps,
                               batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, seed=args.seed,
                               device="cpu", resume=not args.no_resume, progress=not args.quiet),
                   name="voicetone-acoustic-only", speech_weight=args.speech_weight, head=args.head,
                   heads=args.heads)
    train_s = time.time() - t0
    model = load(out, device="cpu")
    report = evaluate_model(model, read_manifest(args.test), batch_size=32, progress=not args.quiet)
    report["train_seconds"] = train_s
    path = out.with_name(out.stem + ".eval.json")
    path.write_text(json.dumps(report, default=float, indent=1))
    print(json.dumps({"system": "acoustic-only", "report": str(path), "train_seconds": round(train_s, 1),
                      **{k: report["sentiment"][k] for k in ("ua", "macro_f1", "accuracy")},
                      "speech_acc": report["speech"]["accuracy"]}))
    return 0


# --------------------------------------------------------------------------- (b) text only
def first_of_each_class(entries: list, n: int) -> list:
    """The first ``n`` entries of each sentiment class, in manifest order."""
    taken: dict[int, int] = {}
    out = []
    for e in entries:
        if taken.get(e.label_index, 0) < n:
            taken[e.label_index] = taken.get(e.label_index, 0) + 1
            out.append(e)
    return out


def run_text(args) -> int:
    """Transcript (Whisper or PocketSphinx) -> VADER label, on the test audio (transcripts and labels withheld)."""
    from model.data.dataset import AudioCache
    from model.data.pseudo_label import PocketSphinxTranscriber, VaderLabeller, WhisperTranscriber

    entries = [e for e in read_manifest(args.test) if e.speech and e.sentiment is not None]
    if args.limit:
        entries = entries[: args.limit]
    if args.per_class:
        entries = first_of_each_class(entries, args.per_class)
    asr = WhisperTranscriber() if args.asr == "whisper" else PocketSphinxTranscriber()
    vader, cache = VaderLabeller(args.pos, args.neg), AudioCache(16000, 256 << 20)
    records, t0 = [], time.time()
    for i, e in enumerate(entries):
        hyp = asr.transcribe(cache.segment(e))
        pred = SENTIMENTS.index(vader.label(hyp)) if hyp else SENTIMENTS.index("neutral")
        ref_pred = SENTIMENTS.index(vader.label(e.transcript)) if e.transcript else -1
        records.append({"audio": e.audio, "group": dict(e.group), "label": e.label_index, "pred": pred,
                        "hyp": hyp, "ref": e.transcript, "vader_on_reference": ref_pred})
        if (i + 1) % 25 == 0 or i + 1 == len(entries):  # partial reports survive an interrupted run
            report = _text_report(records, time.time() - t0, args.out, args.asr)
            if not args.quiet:
                print(f"text-only: {i + 1}/{len(entries)} ({time.time() - t0:.0f} s)", file=sys.stderr)
    print(json.dumps({"system": "text-only", "n": len(records), "ua": report["sentiment"]["ua"],
                      "macro_f1": report["sentiment"]["macro_f1"],
                      "ua_vader_on_true_transcript": report["vader_on_true_transcript"]["ua"]}))
    return 0


def _text_report(records: list[dict[str, Any]], seconds: float, out: str, asr: str = "pocketsphinx") -> dict[str, Any]:
    # the ceiling of the words-only path: VADER on the true transcript (a perfect recogniser)
    oracle = [dict(r, pred=r["vader_on_reference"]) for r in records if r["vader_on_reference"] >= 0]
    report = {"system": f"text-only ({'Whisper base' if asr == 'whisper' else 'PocketSphinx'} + VADER)", "seconds": seconds, "n": len(records),
              "sentiment": _summary(records), "vader_on_true_transcript": _summary(oracle), "clips": records}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, default=float, indent=1))
    return report


# --------------------------------------------------------------------------- comparison table
def _records(path: str) -> list[dict[str, Any]]:
    rep = json.loads(Path(path).read_text())
    return [r for r in rep["clips"] if r.get("label", -1) >= 0]


def run_table(args) -> int:
    systems = {"hybrid": args.hybrid, "(a) acoustic only": args.acoustic, "(b) text only": args.text}
    systems = {k: v for k, v in systems.items() if v}
    recs = {k: _records(v) for k, v in systems.items()}
    # score every system on the clips all of them have (the text run may be a subset)
    common = set.intersection(*({r["audio"] for r in rs} for rs in recs.values()))
    rows = {k: _summary([r for r in rs if r["audio"] in common]) for k, rs in recs.items()}
    conds = sorted({c for row in rows.values() for c in row["per_condition"]})
    lines = [f"Held-out clips scored by every system: {len(common)}", "",
             "| system | UA | macro-F1 | accuracy | " + " | ".join(f"UA {c}" for c in conds) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in conds) + " |"]
    for name, row in rows.items():
        per = " | ".join(f"{row['per_condition'].get(c, float('nan')):.3f}" for c in conds)
        lines.append(f"| {name} | {row['ua']:.3f} | {row['macro_f1']:.3f} | {row['accuracy']:.3f} | {per} |")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps({"n_common": len(common), "systems": rows}, default=float, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("acoustic", help="(a) classifier on the pretrained front end, no ASR stage")
    p.add_argument("--pretrain", required=True, help="the hybrid's pretrain-stage checkpoint, or a later one whose front end is taken")
    p.add_argument("--manifest", required=True, help="training manifest (the hybrid's)")
    p.add_argument("--test", required=True)
    p.add_argument("--out", required=True, help="classifier checkpoint to write")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--speech-weight", type=float, default=1.0, help="as 'voicetone train classifier'")
    p.add_argument("--head", choices=["conv", "pool"], default="conv", help="as 'voicetone train classifier'")
    p.add_argument("--heads", type=int, default=1, help="as 'voicetone train classifier' (the shipped hybrid has 4)")
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_acoustic)
    p = sub.add_parser("text", help="(b) VADER on PocketSphinx transcripts of the test audio")
    p.add_argument("--test", required=True)
    p.add_argument("--out", required=True, help="JSON report to write")
    p.add_argument("--limit", type=int, default=0, help="only the first N labelled speech entries")
    p.add_argument("--per-class", type=int, default=0, help="only the first N labelled speech entries of each class")
    p.add_argument("--asr", choices=("whisper", "pocketsphinx"), default="pocketsphinx",
                   help="the recogniser (default pocketsphinx, the ablation's original)")
    p.add_argument("--pos", type=float, default=0.05, help="VADER compound threshold for positive")
    p.add_argument("--neg", type=float, default=-0.05, help="VADER compound threshold for negative")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_text)
    p = sub.add_parser("table", help="compare the systems on their common clips")
    p.add_argument("--hybrid", help="report.json of voicetone evaluate")
    p.add_argument("--acoustic", help="*.eval.json written by 'acoustic'")
    p.add_argument("--text", help="JSON written by 'text'")
    p.add_argument("--json", help="also write the table as JSON here")
    p.set_defaults(func=run_table)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
