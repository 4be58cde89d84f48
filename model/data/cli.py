"""``voicetone data pseudo-label``: fill a manifest's missing transcripts and sentiment labels."""

from __future__ import annotations

import argparse
from pathlib import Path

from model.data.manifest import read_manifest, write_manifest
from model.data.pseudo_label import (
    ModelTranscriber,
    PocketSphinxTranscriber,
    VaderLabeller,
    WhisperTranscriber,
    label_counts,
    pseudo_label_manifest,
)


def make_transcriber(spec: str, device: str = "cpu"):
    """``whisper`` (Whisper base), ``pocketsphinx``, ``model:PATH`` (our checkpoint's decoder) or ``none``."""
    if spec == "none":
        return None
    if spec == "whisper":
        return WhisperTranscriber()
    if spec == "pocketsphinx":
        return PocketSphinxTranscriber()
    if spec.startswith("model:"):
        from model.inference import load

        return ModelTranscriber(load(spec[len("model:"):], device))
    raise ValueError(f"unknown --asr {spec!r}: use whisper, pocketsphinx, model:PATH or none")


def make_labeller(spec: str, pos: float, neg: float):
    """``vader`` or ``none``."""
    if spec == "none":
        return None
    if spec == "vader":
        return VaderLabeller(pos=pos, neg=neg)
    raise ValueError(f"unknown --sentiment {spec!r}: use vader or none")


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    try:
        entries = read_manifest(args.manifest)
        transcriber = make_transcriber(args.asr, args.device)
        labeller = make_labeller(args.sentiment, args.pos_threshold, args.neg_threshold)
    except (OSError, ValueError, ImportError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    labelled = pseudo_label_manifest(entries, transcriber, labeller, progress=not args.quiet)
    write_manifest(args.out, labelled)
    before, after = label_counts(entries), label_counts(labelled)
    table = Table(title=f"{args.out}")
    table.add_column("count")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for key in after:
        table.add_row(key, str(before[key]), str(after[key]))
    console.print(table)
    return 0


def add_cli(subparsers) -> None:
    """Add the ``pseudo-label`` sub-command (mounted under ``voicetone data``)."""
    p = subparsers.add_parser(
        "pseudo-label",
        help="fill missing transcripts (ASR) and sentiment labels (text sentiment) in a manifest",
        description="Fill only missing transcripts and sentiment labels; human labels are kept. "
                    "Filled fields are marked transcript_source/sentiment_source = pseudo.",
    )
    p.add_argument("manifest", type=Path, help="input manifest (JSON lines)")
    p.add_argument("--out", type=Path, required=True, help="output manifest")
    p.add_argument("--asr", default="whisper", help="whisper | pocketsphinx | model:PATH | none (default whisper)")
    p.add_argument("--sentiment", default="vader", help="vader | none (default vader)")
    p.add_argument("--pos-threshold", type=float, default=0.05, help="VADER compound at or above: positive")
    p.add_argument("--neg-threshold", type=float, default=-0.05, help="VADER compound at or below: negative")
    p.add_argument("--device", default="cpu", help="device for --asr model:PATH")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)
