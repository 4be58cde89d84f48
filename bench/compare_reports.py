"""Is checkpoint B really better than A? A paired comparison of two ``voicetone evaluate`` reports.

Both reports must score the same held-out clips (matched by audio path and span). On the
labelled speech clips it prints each system's unweighted accuracy (UA), the clips only one of
them gets right, an exact two-sided McNemar test on those, and a paired bootstrap 95% interval
of the UA difference (B - A), overall and per condition (``--by noise``: per noise kind, or any other
key of the clips' ``group``). Every earlier session did this by hand; a new default model should clear
it, not only a higher point estimate.

    python bench/compare_reports.py data/eval/A/report.json data/eval/B/report.json [--bootstrap 2000] [--by condition]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.evaluate import mcnemar_exact, paired_ua_interval, unweighted_accuracy  # noqa: E402


def _key(clip: dict) -> tuple:
    return clip["audio"], clip.get("start_s"), clip.get("end_s")


def paired_clips(a: dict, b: dict, by: str = "condition") -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(labels, A's predictions, B's predictions, each clip's ``group[by]``, "-" where it has none) over the
    labelled speech clips both scored."""
    other = {_key(c): c for c in b["clips"]}
    rows = [(c, other[_key(c)]) for c in a["clips"] if c.get("label") is not None and c["label"] >= 0
            and _key(c) in other]
    if not rows:
        raise SystemExit("the two reports share no labelled clips: were they made on the same manifest?")
    y = np.array([ca["label"] for ca, _ in rows])
    return (y, np.array([ca["pred"] for ca, _ in rows]), np.array([cb["pred"] for _, cb in rows]),
            [str(ca.get("group", {}).get(by, "-")) for ca, _ in rows])


def compare(y: np.ndarray, pa: np.ndarray, pb: np.ndarray, n_boot: int) -> dict:
    right_a, right_b = pa == y, pb == y
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    ua_a, ua_b = unweighted_accuracy(y, pa), unweighted_accuracy(y, pb)
    lo, hi = paired_ua_interval(y, pa, pb, n_boot)
    return {"clips": int(len(y)), "ua_a": ua_a, "ua_b": ua_b, "diff": ua_b - ua_a, "only_a": only_a,
            "only_b": only_b, "mcnemar_p": mcnemar_exact(only_a, only_b), "ci95": [lo, hi]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("a", help="report.json of the reference system (A)")
    p.add_argument("b", help="report.json of the candidate (B)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--by", default="condition", help="the clips' group key to split by (e.g. noise, engine)")
    args = p.parse_args(argv)
    ra, rb = (json.loads(Path(x).read_text()) for x in (args.a, args.b))
    y, pa, pb, cond = paired_clips(ra, rb, args.by)
    rows = {"all": compare(y, pa, pb, args.bootstrap)}
    for c in sorted(set(cond)):
        sel = np.array([x == c for x in cond])
        rows[c] = compare(y[sel], pa[sel], pb[sel], args.bootstrap)
    print(f"A = {args.a} ({ra.get('model_version')})\nB = {args.b} ({rb.get('model_version')})")
    print(f"{args.by[:10]:<10} {'clips':>5} {'UA A':>6} {'UA B':>6} {'B-A':>7} {'only A':>6} {'only B':>6} "
          f"{'McNemar p':>9}  95% CI of B-A")
    for name, r in rows.items():
        print(f"{name:<10} {r['clips']:>5} {r['ua_a']:>6.3f} {r['ua_b']:>6.3f} {r['diff']:>+7.3f} {r['only_a']:>6} "
              f"{r['only_b']:>6} {r['mcnemar_p']:>9.3f}  {r['ci95'][0]:+.3f} .. {r['ci95'][1]:+.3f}")
    print(json.dumps({"a": args.a, "b": args.b, "model_a": ra.get("model_version"),
                      "model_b": rb.get("model_version"), "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
