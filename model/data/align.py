"""Phone timings for transcribed clips, by forced alignment with PocketSphinx's English model.

The ASR stage's CTC loss has to discover where each character is before it can learn what it
sounds like; on the CPU budget of this project it stays on CTC's plateau (docs/model-report.md).
A forced alignment knows the words already and only places them, so it is cheap (about 2% of
real time) and robust on clean speech; the timings give the ASR stage a frame-level phone target
(`phone_weight`) that needs no alignment search. Entries whose words the dictionary lacks, or
whose alignment fails, are kept without phones.
"""

from __future__ import annotations

import argparse
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from model.data.dataset import AudioCache
from model.data.manifest import ManifestEntry, collect_entries, read_manifest, write_manifest

SAMPLE_RATE = 16000
FRAME_S = 0.01        # PocketSphinx's frame shift
WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


class PhoneAligner:
    """Forced alignment of a known transcript to 16 kHz audio: [(phone, start_s, end_s), ...]."""

    def __init__(self):
        from pocketsphinx import Decoder

        self._decoder = Decoder(samprate=SAMPLE_RATE, logfn="/dev/null")

    def words(self, transcript: str) -> list[str] | None:
        """The transcript's words, lower case; None when the dictionary lacks one of them."""
        words = WORD.findall(transcript.lower())
        if not words or any(self._decoder.lookup_word(w) is None for w in words):
            return None
        return words

    def align(self, audio: np.ndarray, transcript: str) -> list[tuple[str, float, float]] | None:
        words = self.words(transcript)
        if words is None:
            return None
        pcm = (np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
        d = self._decoder
        try:
            d.set_align_text(" ".join(words))     # word alignment first, then phones within the words
            d.start_utt()
            d.process_raw(pcm, full_utt=True)
            d.end_utt()
            d.set_alignment()
            d.start_utt()
            d.process_raw(pcm, full_utt=True)
            d.end_utt()
            alignment = d.get_alignment()
        except RuntimeError:
            return None
        if alignment is None:
            return None
        phones = [(p.name, round(p.start * FRAME_S, 3), round((p.start + p.duration) * FRAME_S, 3))
                  for word in alignment for p in word]
        return phones or None


_worker_aligner: PhoneAligner | None = None
_worker_cache: AudioCache | None = None


def _align_one(entry: ManifestEntry) -> ManifestEntry:
    """Align one entry in a worker process (one decoder per process)."""
    global _worker_aligner, _worker_cache
    if _worker_aligner is None:
        _worker_aligner, _worker_cache = PhoneAligner(), AudioCache(SAMPLE_RATE, 64 << 20)
    return align_entry(entry, _worker_aligner, _worker_cache)


def align_entry(entry: ManifestEntry, aligner: PhoneAligner, cache: AudioCache) -> ManifestEntry:
    """The entry with `phones` set (times relative to its segment), or unchanged when it cannot be aligned."""
    if not entry.speech or not entry.transcript:
        return entry
    phones = aligner.align(cache.segment(entry), entry.transcript)
    if phones is None:
        return entry
    return entry.model_copy(update={"phones": [tuple(p) for p in phones]})


def align_manifest(entries: Sequence[ManifestEntry], workers: int = 1, progress: bool = True) -> list[ManifestEntry]:
    """Every entry, in order, with phones where the alignment succeeded."""
    entries = list(entries)
    if workers <= 1:
        aligner, cache = PhoneAligner(), AudioCache(SAMPLE_RATE, 64 << 20)
        return collect_entries((align_entry(e, aligner, cache) for e in entries), len(entries), "aligning", progress)
    with ProcessPoolExecutor(workers) as pool:
        return collect_entries(pool.map(_align_one, entries, chunksize=16), len(entries), "aligning", progress)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=True)
    try:
        entries = read_manifest(args.manifest)
    except (OSError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    aligned = align_manifest(entries, workers=args.workers, progress=not args.quiet)
    write_manifest(args.out, aligned)
    wanted = sum(1 for e in entries if e.speech and e.transcript)
    done = sum(1 for e in aligned if e.phones)
    console.print(f"{args.out}: phones for {done} of {wanted} transcribed speech entries "
                  f"({wanted - done} not aligned: words missing from the dictionary, or no alignment)")
    return 0


def add_cli(subparsers) -> None:
    """Add the ``align`` sub-command (mounted under ``voicetone data``)."""
    p = subparsers.add_parser(
        "align", help="phone timings for transcribed clips (forced alignment), for the ASR stage's phone target",
        description="Force-align each transcribed speech entry with PocketSphinx's English model and write "
                    "its phones as [phone, start_s, end_s] (relative to the entry's segment).")
    p.add_argument("manifest", type=Path, help="input manifest (JSON lines)")
    p.add_argument("--out", type=Path, required=True, help="output manifest")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)
