"""Turn a ``voicetone evaluate`` report.json into the metrics summary and the Markdown tables.

    voicetone evaluate data/synth/test.jsonl --out data/eval/default
    python -m bench.model_report data/eval/default/report.json --summary model/weights/default.json

Prints Markdown (overall, confusion matrix, per condition, per engine,
per gender/accent/tone, the voice spread) for docs/model-report.md and writes
the compact JSON summary that ships next to the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from model.evaluate import speech_presence

CLASSES = ("positive", "neutral", "negative")


def condition_speech(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Speech-presence accuracy per condition, and the share of non-speech clips called no_speech."""
    out = {}
    for cond in sorted({(r["group"] or {}).get("condition", "?") for r in records}):
        rs = [r for r in records if (r["group"] or {}).get("condition", "?") == cond]
        out[cond] = speech_presence([r["speech"] for r in rs], [r["speech_prob"] for r in rs])["accuracy"]
    return out


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    clips = report["clips"]
    nonspeech = [r for r in clips if not r["speech"]]
    speech = [r for r in clips if r["speech"]]
    groups = {}
    for key in ("condition", "engine", "gender", "accent", "tone", "voice", "sentences"):
        if key in report["groups"]:
            g = report["groups"][key]
            groups[key] = {"ua": {k: round(v["ua"], 4) for k, v in g["groups"].items()},
                           "macro_f1": {k: round(v["macro_f1"], 4) for k, v in g["groups"].items()},
                           "n": {k: v["n"] for k, v in g["groups"].items()},
                           "ua_gap": round(g["ua_gap"], 4), "worst": g["worst"]}
    # per condition x class: recall table
    s = report["sentiment"]
    return {
        "model_version": report["model_version"],
        "test_clips": report["n_clips"], "test_windows": report["n_windows"],
        "sentiment": {"n": s["n"], "ua": round(s["ua"], 4), "macro_f1": round(s["macro_f1"], 4),
                      "accuracy": round(s["accuracy"], 4), "confusion": s["confusion"], "classes": s["classes"]},
        "speech": {"accuracy": round(report["speech"]["accuracy"], 4), "auc": round(report["speech"]["auc"], 4),
                   "n": report["speech"]["n"],
                   "nonspeech_labelled_no_speech": round(float(np.mean([r["speech_prob"] < 0.5 for r in nonspeech])), 4)
                   if nonspeech else None,
                   "speech_labelled_speech": round(float(np.mean([r["speech_prob"] >= 0.5 for r in speech])), 4),
                   "per_condition_accuracy": {k: round(v, 4) for k, v in condition_speech(clips).items()}},
        "groups": groups,
    }


def markdown(summary: dict[str, Any]) -> str:
    s, sp, g = summary["sentiment"], summary["speech"], summary["groups"]
    out = [f"Model `{summary['model_version']}`, {summary['test_clips']} held-out clips "
           f"({summary['test_windows']} windows), {s['n']} with a sentiment label.", "",
           "| metric | value |", "| --- | --- |",
           f"| unweighted accuracy (UA) | {s['ua']:.3f} |", f"| macro-F1 | {s['macro_f1']:.3f} |",
           f"| accuracy | {s['accuracy']:.3f} |",
           f"| speech presence accuracy (all clips) | {sp['accuracy']:.3f} (AUC {sp['auc']:.3f}) |",
           f"| non-speech clips labelled no_speech | {sp['nonspeech_labelled_no_speech']:.3f} |",
           f"| speech clips labelled speech | {sp['speech_labelled_speech']:.3f} |", "",
           "Confusion matrix (rows: true, columns: predicted):", "",
           "| true \\ pred | " + " | ".join(CLASSES) + " |", "| --- | --- | --- | --- |"]
    for name, row in zip(CLASSES, s["confusion"]):
        out.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    for key in ("condition", "engine", "gender", "tone", "sentences"):
        if key not in g:
            continue
        out += ["", f"Per {key} (UA gap {g[key]['ua_gap']:.3f}, worst: {g[key]['worst']}):", "",
                f"| {key} | n | UA | macro-F1 |" + (" speech acc |" if key == "condition" else ""),
                "| --- | --- | --- | --- |" + (" --- |" if key == "condition" else "")]
        for v in g[key]["ua"]:
            extra = f" {sp['per_condition_accuracy'].get(v, float('nan')):.3f} |" if key == "condition" else ""
            out.append(f"| {v} | {g[key]['n'][v]} | {g[key]['ua'][v]:.3f} | {g[key]['macro_f1'][v]:.3f} |{extra}")
    for key in ("voice", "accent"):
        if key not in g:
            continue
        ua = g[key]["ua"]
        n = g[key]["n"]
        big = {k: v for k, v in ua.items() if n[k] >= 5}
        vals = np.array(list(big.values())) if big else np.array([np.nan])
        out += ["", f"Per {key}: {len(ua)} held-out values; among the {len(big)} with >= 5 labelled clips, "
                f"UA median {np.median(vals):.3f}, min {vals.min():.3f}, max {vals.max():.3f} "
                f"(gap {vals.max() - vals.min():.3f}); over all, gap {g[key]['ua_gap']:.3f}."]
        worst = sorted(big, key=big.get)[:5]
        if worst:
            out.append("Lowest: " + ", ".join(f"`{k}` {big[k]:.2f} (n={n[k]})" for k in worst) + ".")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", help="report.json written by voicetone evaluate")
    ap.add_argument("--summary", help="write the compact JSON summary here")
    ap.add_argument("--extra", help="JSON object merged into the summary (e.g. training times)")
    args = ap.parse_args(argv)
    summary = summarize(json.loads(Path(args.report).read_text()))
    if args.extra:
        summary.update(json.loads(Path(args.extra).read_text()))
    if args.summary:
        Path(args.summary).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary).write_text(json.dumps(summary, indent=1) + "\n")
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
