"""Evaluation: sentiment (unweighted accuracy, macro F1), speech presence, ASR, and fairness slices.

Unweighted accuracy (mean per-class recall) is the headline because
neutral dominates real data: a model answering "neutral" always scores a
high plain accuracy but only 1/3 UA. Every metric is also computed per
value of each ``group`` key (voice, engine, accent, condition, ...) and the
largest gap reported, to check the model works equally across speakers and
channels. Clips are scored the way the service scores them: 5 s windows,
combined by speech-probability weighting.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from model.data.manifest import SENTIMENTS, ManifestEntry
from model.progress import ProgressBar

SAMPLE_RATE = 16000


# --------------------------------------------------------------------------- metrics
def _known(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError("y_true and y_pred differ in length")
    keep = t >= 0
    return t[keep], p[keep]


def confusion_matrix(y_true, y_pred, num_classes: int = 3) -> np.ndarray:
    """Counts [true class, predicted class]; items with an unknown true label (-1) are skipped."""
    t, p = _known(y_true, y_pred)
    if np.any(t >= num_classes) or np.any(p < 0) or np.any(p >= num_classes):
        raise ValueError("label out of range")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def accuracy(y_true, y_pred) -> float:
    """Plain (weighted) accuracy over items with a known label."""
    t, p = _known(y_true, y_pred)
    return float(np.mean(t == p)) if len(t) else float("nan")


def unweighted_accuracy(y_true, y_pred, num_classes: int = 3) -> float:
    """Mean recall over the classes present in ``y_true`` (NaN when none is)."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float(np.mean(np.diag(cm)[present] / support[present]))


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p for two systems scored on the same clips: a binomial test of the
    clips only one of them gets right (``only_a``, ``only_b``) against 1/2."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail)


def paired_ua_interval(y_true, pred_a, pred_b, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% paired bootstrap interval of UA(b) - UA(a), resampling clips: whether a new model's gain
    over the shipped one on the same held-out clips is more than the luck of the draw."""
    y, pa, pb = (np.asarray(v) for v in (y_true, pred_a, pred_b))
    rng = np.random.default_rng(seed)
    diffs = np.empty(n)
    for i in range(n):
        idx = rng.integers(0, len(y), len(y))
        diffs[i] = unweighted_accuracy(y[idx], pb[idx]) - unweighted_accuracy(y[idx], pa[idx])
    return float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))


def _clip_key(clip: dict) -> tuple:
    return clip["audio"], clip.get("start_s"), clip.get("end_s")


def paired_clips(a: dict, b: dict, by: str = "condition") -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(labels, A's predictions, B's predictions, each clip's ``group[by]``, "-" where it has none) over the
    labelled speech clips both ``evaluate`` reports scored (matched by audio path and span)."""
    other = {_clip_key(c): c for c in b["clips"]}
    rows = [(c, other[_clip_key(c)]) for c in a["clips"] if c.get("label") is not None and c["label"] >= 0
            and _clip_key(c) in other]
    if not rows:
        raise ValueError("the two reports share no labelled clips: were they made on the same manifest?")
    y = np.array([ca["label"] for ca, _ in rows])
    return (y, np.array([ca["pred"] for ca, _ in rows]), np.array([cb["pred"] for _, cb in rows]),
            [str(ca.get("group", {}).get(by, "-")) for ca, _ in rows])


def paired_comparison(y, pred_a, pred_b, n_boot: int = 2000) -> dict[str, Any]:
    """UA of each system on the same clips, the clips only one gets right, exact McNemar p on those and
    the paired bootstrap 95% interval of UA(b) - UA(a): whether B differs from A by more than luck."""
    y, pa, pb = (np.asarray(v) for v in (y, pred_a, pred_b))
    right_a, right_b = pa == y, pb == y
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    ua_a, ua_b = unweighted_accuracy(y, pa), unweighted_accuracy(y, pb)
    lo, hi = paired_ua_interval(y, pa, pb, n_boot)
    return {"clips": int(len(y)), "ua_a": ua_a, "ua_b": ua_b, "diff": ua_b - ua_a, "only_a": only_a,
            "only_b": only_b, "mcnemar_p": mcnemar_exact(only_a, only_b), "ci95": [lo, hi]}


def compare_reports(a: dict, b: dict, by: str = "condition", n_boot: int = 2000) -> dict[str, dict[str, Any]]:
    """`paired_comparison` of two reports over all shared clips ("all") and per ``group[by]`` value."""
    y, pa, pb, groups = paired_clips(a, b, by)
    rows = {"all": paired_comparison(y, pa, pb, n_boot)}
    for g in sorted(set(groups)):
        sel = np.array([x == g for x in groups])
        rows[g] = paired_comparison(y[sel], pa[sel], pb[sel], n_boot)
    return rows


def comparison_table(rows: dict[str, dict[str, Any]], by: str = "condition") -> str:
    """`compare_reports`' rows as a fixed-width text table."""
    lines = [f"{by[:10]:<10} {'clips':>5} {'UA A':>6} {'UA B':>6} {'B-A':>7} {'only A':>6} {'only B':>6} "
             f"{'McNemar p':>9}  95% CI of B-A"]
    for name, r in rows.items():
        lines.append(f"{name:<10} {r['clips']:>5} {r['ua_a']:>6.3f} {r['ua_b']:>6.3f} {r['diff']:>+7.3f} "
                     f"{r['only_a']:>6} {r['only_b']:>6} {r['mcnemar_p']:>9.3f}  "
                     f"{r['ci95'][0]:+.3f} .. {r['ci95'][1]:+.3f}")
    return "\n".join(lines)


def macro_f1(y_true, y_pred, num_classes: int = 3) -> float:
    """Mean F1 over classes that occur in ``y_true`` or ``y_pred`` (a class only predicted scores 0)."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    used = (support + predicted) > 0
    if not used.any():
        return float("nan")
    f1 = 2 * tp[used] / (support[used] + predicted[used])
    return float(np.mean(f1))


def roc_auc(y_true, score) -> float:
    """Area under the ROC curve via the Mann-Whitney rank statistic (ties count half)."""
    from scipy.stats import rankdata

    t = np.asarray(y_true).astype(bool).reshape(-1)
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[t].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def speech_presence(y_true, prob, threshold: float = 0.5) -> dict[str, float]:
    """Speech/no-speech detection: accuracy at ``threshold`` and ROC AUC."""
    t = np.asarray(y_true).astype(bool).reshape(-1)
    p = np.asarray(prob, dtype=np.float64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError("y_true and prob differ in length")
    acc = float(np.mean((p >= threshold) == t)) if len(t) else float("nan")
    return {"accuracy": acc, "auc": roc_auc(t, p), "n": int(len(t))}


def per_group(records: Iterable[dict[str, Any]], key: str, num_classes: int = 3) -> dict[str, Any]:
    """Sentiment metrics per value of ``record["group"][key]`` and the largest gap between groups.

    Records are dicts with ``label`` (int, -1 unknown), ``pred`` (int) and
    ``group`` (dict). Records lacking ``key`` or a known label are left out.
    Returns ``{"groups": {value: {"ua", "macro_f1", "n"}}, "ua_gap", "macro_f1_gap",
    "worst"}`` where the gaps are max - min over groups and ``worst`` is the
    group with the lowest UA.
    """
    buckets: dict[str, tuple[list[int], list[int]]] = {}
    for r in records:
        value = (r.get("group") or {}).get(key)
        if value is None or int(r["label"]) < 0:
            continue
        t, p = buckets.setdefault(str(value), ([], []))
        t.append(int(r["label"]))
        p.append(int(r["pred"]))
    groups = {
        value: {"ua": unweighted_accuracy(t, p, num_classes), "macro_f1": macro_f1(t, p, num_classes), "n": len(t)}
        for value, (t, p) in sorted(buckets.items())
    }
    ua = {v: m["ua"] for v, m in groups.items()}
    f1 = [m["macro_f1"] for m in groups.values()]
    return {
        "groups": groups,
        "ua_gap": float(max(ua.values()) - min(ua.values())) if ua else float("nan"),
        "macro_f1_gap": float(max(f1) - min(f1)) if f1 else float("nan"),
        "worst": min(ua, key=ua.get) if ua else None,
    }


_PUNCT = re.compile(r"[^\w' ]+")


def normalize_text(text: str) -> list[str]:
    """Lower-case words with punctuation (except apostrophes) removed, as WER compares them."""
    return _PUNCT.sub(" ", text.lower()).split()


def _edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def word_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus WER: total word edits (substitutions, insertions, deletions) / total reference words.

    With no reference words at all, 0 when nothing was hypothesised either, else 1.
    """
    if len(refs) != len(hyps):
        raise ValueError("refs and hyps differ in length")
    edits = words = 0
    for ref, hyp in zip(refs, hyps):
        r, h = normalize_text(ref), normalize_text(hyp)
        edits += _edit_distance(r, h)
        words += len(r)
    if words == 0:
        return 0.0 if edits == 0 else 1.0
    return edits / words


def sentiment_token_error(ref_labels: Sequence[str | None], hyp_labels: Sequence[str | None]) -> float:
    """Share of utterances whose decoded sentiment token differs from the reference label.

    The ASR stage learns to emit the sentiment before the words; this scores
    that token alone. References that are None are skipped.
    """
    if len(ref_labels) != len(hyp_labels):
        raise ValueError("ref_labels and hyp_labels differ in length")
    pairs = [(r, h) for r, h in zip(ref_labels, hyp_labels) if r is not None]
    if not pairs:
        return float("nan")
    return sum(r != h for r, h in pairs) / len(pairs)


# --------------------------------------------------------------------------- model evaluation
def window_starts(n: int, window_n: int, hop_n: int) -> list[int]:
    """Start samples of the windows covering ``n`` samples; the last one ends at ``n``."""
    if n <= window_n:
        return [0]
    starts = list(range(0, n - window_n, hop_n))
    starts.append(n - window_n)
    return sorted(set(starts))


def combine_windows(speech: np.ndarray, sentiment: np.ndarray) -> tuple[float, np.ndarray]:
    """Clip-level (speech prob, sentiment probs): mean speech prob; sentiment weighted by speech prob.

    Windows without speech say little about sentiment, so they count
    little; if no window has any speech weight, the plain mean is used.
    """
    speech = np.asarray(speech, dtype=np.float64)
    sentiment = np.asarray(sentiment, dtype=np.float64)
    weight = speech.sum()
    probs = (speech[:, None] * sentiment).sum(0) / weight if weight > 1e-6 else sentiment.mean(0)
    return float(speech.mean()), probs / probs.sum()


def _run_windows(model, clips: list[np.ndarray], window_n: int, hop_n: int, batch_size: int, progress: bool):
    windows = [(c, s) for c, audio in enumerate(clips) for s in window_starts(len(audio), window_n, hop_n)]
    speech = np.zeros(len(windows))
    sentiment = np.zeros((len(windows), len(SENTIMENTS)))
    with ProgressBar("evaluating", len(windows), progress, transient=True, unit="window") as bar:
        for b0 in range(0, len(windows), batch_size):
            part = windows[b0:b0 + batch_size]
            pieces = [clips[c][s:s + window_n] for c, s in part]
            lengths = np.array([len(p) for p in pieces], dtype=np.int64)
            batch = np.zeros((len(part), max(1, int(lengths.max()))), dtype=np.float32)
            for row, piece in enumerate(pieces):
                batch[row, : len(piece)] = piece
            sp, se = model.predict(batch, lengths)
            speech[b0:b0 + len(part)] = np.asarray(sp, dtype=np.float64).reshape(-1)
            sentiment[b0:b0 + len(part)] = np.asarray(se, dtype=np.float64).reshape(len(part), -1)
            bar.advance(len(part))
    owner = np.array([c for c, _ in windows])
    return owner, speech, sentiment


def _asr_metrics(model, entries, clips, progress: bool) -> dict[str, Any] | None:
    from model.data.pseudo_label import ModelTranscriber

    idx = [i for i, e in enumerate(entries) if e.speech and e.transcript and len(clips[i])]
    if not idx or not hasattr(model, "transcribe"):
        return None
    tr = ModelTranscriber(model)
    refs, hyps, ref_labels, hyp_labels = [], [], [], []
    with ProgressBar("decoding", len(idx), progress, transient=True, unit="clip") as bar:
        for i in idx:
            hyps.append(tr.transcribe(clips[i]))
            refs.append(entries[i].transcript)
            ref_labels.append(entries[i].sentiment)
            hyp_labels.append(Counter(tr.last_sentiments).most_common(1)[0][0] if tr.last_sentiments else None)
            bar.advance()
    return {"wer": word_error_rate(refs, hyps), "sentiment_token_error": sentiment_token_error(ref_labels, hyp_labels),
            "n": len(idx), "examples": [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyps))[:10]]}


def evaluate_model(
    model,
    entries: Sequence[ManifestEntry],
    batch_size: int = 32,
    progress: bool = True,
    window_s: float = 5.0,
    hop_s: float = 2.5,
    asr: bool = False,
) -> dict[str, Any]:
    """Score ``model.predict`` on every entry, clip by clip, overall and per group key.

    Each clip is cut into ``window_s`` windows every ``hop_s`` (the whole
    clip if shorter), like the streaming service; window outputs are
    combined with ``combine_windows``. Sentiment metrics use speech clips
    with a known label, speech-presence metrics every clip. With ``asr``,
    clips with a transcript are also decoded (``model.transcribe``) for WER
    and the sentiment-token error.
    """
    from model.data.dataset import AudioCache

    entries = list(entries)
    cache = AudioCache(SAMPLE_RATE, 256 << 20)
    clips = [cache.segment(e) for e in entries]
    window_n, hop_n = int(window_s * SAMPLE_RATE), int(hop_s * SAMPLE_RATE)
    owner, w_speech, w_sentiment = _run_windows(model, clips, window_n, hop_n, batch_size, progress)
    records = []
    for i, e in enumerate(entries):
        mine = owner == i
        speech_prob, probs = combine_windows(w_speech[mine], w_sentiment[mine])
        records.append({
            "audio": e.audio, "start_s": e.start_s, "end_s": e.end_s, "group": dict(e.group),
            "speech": bool(e.speech), "speech_prob": speech_prob, "label": e.label_index,
            "pred": int(np.argmax(probs)), "probs": [float(v) for v in probs], "windows": int(mine.sum()),
        })
    labels = [r["label"] for r in records]
    preds = [r["pred"] for r in records]
    keys = sorted({k for e in entries for k in e.group})
    return {
        "n_clips": len(records),
        "n_windows": int(len(owner)),
        "sentiment": {
            "n": int(sum(lab >= 0 for lab in labels)),
            "ua": unweighted_accuracy(labels, preds),
            "accuracy": accuracy(labels, preds),
            "macro_f1": macro_f1(labels, preds),
            "confusion": confusion_matrix(labels, preds).tolist(),
            "classes": list(SENTIMENTS),
        },
        "speech": speech_presence([r["speech"] for r in records], [r["speech_prob"] for r in records]),
        "groups": {k: per_group(records, k) for k in keys},
        "asr": _asr_metrics(model, entries, clips, progress) if asr else None,
        "model_version": str(getattr(model, "version", "unknown")),
        "clips": records,
    }


# --------------------------------------------------------------------------- report output
def plot_report(report: dict[str, Any], out_png: str | Path) -> None:
    """Confusion matrix (row-normalised) beside per-group UA bars, one panel per group key."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(report.get("groups", {}))
    fig, axes = plt.subplots(1, 1 + len(keys), figsize=(4.5 * (1 + len(keys)), 4.2), squeeze=False)
    ax = axes[0, 0]
    cm = np.asarray(report["sentiment"]["confusion"], dtype=np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(len(SENTIMENTS)), SENTIMENTS)
    ax.set_yticks(range(len(SENTIMENTS)), SENTIMENTS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (r, c), v in np.ndenumerate(cm):
        ax.text(c, r, f"{int(v)}\n{norm[r, c]:.0%}", ha="center", va="center",
                color="white" if norm[r, c] > 0.5 else "black", fontsize=9)
    ua = report["sentiment"]["ua"]
    ax.set_title(f"UA {ua:.3f}  macro-F1 {report['sentiment']['macro_f1']:.3f}")
    for ax, key in zip(axes[0, 1:], keys):
        g = report["groups"][key]
        names = list(g["groups"])
        values = [g["groups"][n]["ua"] for n in names]
        ax.bar(range(len(names)), values, color="tab:blue")
        ax.axhline(ua, color="tab:red", linestyle="--", linewidth=1, label="overall UA")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_ylim(0, 1)
        ax.set_title(f"UA by {key} (gap {_fmt(g['ua_gap'])})")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def _jsonable(value):
    """NaN becomes null so report.json is strict JSON."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.3f}"


def print_report(report: dict[str, Any], console) -> None:
    from rich.table import Table

    s, sp = report["sentiment"], report["speech"]
    t = Table(title=f"voicetone evaluation ({report['n_clips']} clips, {report['n_windows']} windows)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("sentiment UA (mean recall)", _fmt(s["ua"]))
    t.add_row("sentiment accuracy", _fmt(s["accuracy"]))
    t.add_row("sentiment macro F1", _fmt(s["macro_f1"]))
    t.add_row("speech presence accuracy", _fmt(sp["accuracy"]))
    t.add_row("speech presence AUC", _fmt(sp["auc"]))
    if report.get("asr"):
        t.add_row("WER", _fmt(report["asr"]["wer"]))
        t.add_row("sentiment token error", _fmt(report["asr"]["sentiment_token_error"]))
    console.print(t)
    for key, g in report["groups"].items():
        gt = Table(title=f"by {key}: UA gap {_fmt(g['ua_gap'])}, worst {g['worst']}")
        for col in (key, "n", "UA", "macro F1"):
            gt.add_column(col, justify="left" if col == key else "right")
        for name, m in g["groups"].items():
            gt.add_row(name, str(m["n"]), _fmt(m["ua"]), _fmt(m["macro_f1"]))
        console.print(gt)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from model.data.manifest import read_manifest

    console = Console(stderr=args.json)
    try:
        entries = read_manifest(args.manifest)
        from model.inference import load

        model = load(args.model, args.device, precision=args.precision)
    except (OSError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    report = _jsonable(evaluate_model(model, entries, batch_size=args.batch_size, progress=not args.json,
                                      asr=args.asr))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    plot_report(report, out / "report.png")
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "clips"}))
    else:
        print_report(report, console)
        console.print(f"wrote {out / 'report.json'} and {out / 'report.png'}")
    return 0


def add_cli(subparsers) -> None:
    """Add the ``evaluate`` sub-command."""
    p = subparsers.add_parser("evaluate", help="score a model on a labelled manifest (UA, F1, speech AUC, per group)")
    p.add_argument("manifest", type=Path, help="manifest (JSON lines) with sentiment labels")
    p.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    p.add_argument("--out", default="eval", help="folder for report.json and report.png (default ./eval)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "int8"),
                   help="inference precision, to measure what a reduced one costs in accuracy")
    p.add_argument("--asr", action="store_true", help="also decode transcripts: WER and sentiment-token error")
    p.set_defaults(func=_run)
