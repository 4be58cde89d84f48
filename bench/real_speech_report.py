"""Tables of the real-speech evaluation set (``voicetone data real-eval``) from ``voicetone evaluate`` reports.

For each report (``NAME=PATH/report.json``): speech presence (speech clips read as speech, non-speech clips
as ``no_speech``; short replies inside silence apart) and sentiment UA, by source, by channel condition and
by whether the words carry the label; then, for two or more reports, the paired comparison of each with the
first on the clips where the words carry the label (McNemar, bootstrap interval). Rerun::

    python -m bench.real_speech_report shipped=data/w/eval/real-shipped/report.json \\
        whisper=data/w/eval/real/report.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from model.evaluate import comparison_table, compare_reports, unweighted_accuracy


def _rate(hits: list[bool]) -> str:
    return f"{sum(hits) / len(hits):.3f} ({sum(hits)}/{len(hits)})" if hits else "-"


def summarise(clips: list[dict[str, Any]]) -> dict[str, str]:
    """Speech found in speech clips, non-speech found as such, and UA over labelled clips."""
    speech = [c["speech_prob"] >= 0.5 for c in clips if c["speech"]]
    quiet = [c["speech_prob"] < 0.5 for c in clips if not c["speech"]]
    labelled = [c for c in clips if c["label"] >= 0]
    ua = unweighted_accuracy([c["label"] for c in labelled], [c["pred"] for c in labelled]) if labelled else None
    return {"clips": str(len(clips)), "speech found": _rate(speech), "non-speech found": _rate(quiet),
            "labelled": str(len(labelled)), "UA": "-" if ua is None else f"{ua:.3f}"}


def group_table(report: dict[str, Any], key) -> str:
    """A markdown table of `summarise` per value of ``key(clip)``."""
    buckets: dict[str, list[dict[str, Any]]] = {}
    for c in report["clips"]:
        buckets.setdefault(key(c), []).append(c)
    rows = {"all": summarise(report["clips"]), **{k: summarise(v) for k, v in sorted(buckets.items())}}
    cols = list(next(iter(rows.values())))
    lines = ["| | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
    lines += [f"| {name} | " + " | ".join(r[c] for c in cols) + " |" for name, r in rows.items()]
    return "\n".join(lines)


def words_only(report: dict[str, Any]) -> dict[str, Any]:
    return {**report, "clips": [c for c in report["clips"] if c["group"].get("words") == "yes"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reports", nargs="+", metavar="NAME=REPORT", help="evaluate reports of the real-speech set")
    args = p.parse_args(argv)
    named = {}
    for item in args.reports:
        name, _, path = item.partition("=")
        if not path:
            p.error(f"{item!r}: expected NAME=PATH")
        named[name] = json.loads(Path(path).read_text())
    g = lambda c: c["group"]   # noqa: E731
    for name, rep in named.items():
        print(f"## {name} ({rep.get('model_version')})\n")
        print("By source:\n\n" + group_table(rep, lambda c: g(c).get("source", "?")) + "\n")
        print("By condition and kind:\n\n"
              + group_table(rep, lambda c: f"{g(c).get('condition')} / {g(c).get('kind')}") + "\n")
        print("Where the words carry the label (words=yes), by condition:\n\n"
              + group_table(words_only(rep), lambda c: g(c).get("condition", "?")) + "\n")
        print("Acted emotion on neutral sentences (words=no):\n\n"
              + group_table({**rep, "clips": [c for c in rep["clips"] if g(c).get("words") == "no"]},
                            lambda c: g(c).get("source", "?")) + "\n")
    first, *others = named
    for other in others:
        rows = compare_reports(words_only(named[first]), words_only(named[other]), "condition")
        print(f"## {other} against {first}, paired, words=yes clips\n\n```\n{comparison_table(rows)}\n```\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
