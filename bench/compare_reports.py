"""Is checkpoint B really better than A? A paired comparison of two ``voicetone evaluate`` reports.

Both reports must score the same held-out clips (matched by audio path and span). On the
labelled speech clips it prints each system's unweighted accuracy (UA), the clips only one of
them gets right, an exact two-sided McNemar test on those, and a paired bootstrap 95% interval
of the UA difference (B - A), overall and per condition (``--by noise``: per noise kind, or any other
key of the clips' ``group``). A new default model should clear it, not only a higher point estimate.
The statistics live in ``model.evaluate`` (``voicetone train recipe`` ends on the same comparison
against the shipped checkpoint).

    python -m bench.compare_reports data/eval/A/report.json data/eval/B/report.json [--bootstrap 2000] [--by condition]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from model.evaluate import comparison_table, compare_reports


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("a", help="report.json of the reference system (A)")
    p.add_argument("b", help="report.json of the candidate (B)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--by", default="condition", help="the clips' group key to split by (e.g. noise, engine)")
    args = p.parse_args(argv)
    ra, rb = (json.loads(Path(x).read_text()) for x in (args.a, args.b))
    try:
        rows = compare_reports(ra, rb, args.by, args.bootstrap)
    except ValueError as e:
        raise SystemExit(str(e))
    print(f"A = {args.a} ({ra.get('model_version')})\nB = {args.b} ({rb.get('model_version')})")
    print(comparison_table(rows, args.by))
    print(json.dumps({"a": args.a, "b": args.b, "model_a": ra.get("model_version"),
                      "model_b": rb.get("model_version"), "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
