"""JSON-lines manifests describing labelled (or partly labelled) recordings.

One line per recording or per segment of one. Datasets are heterogeneous:
some have transcripts, some sentiment labels, some neither, so both are
optional and carry their provenance (human or pseudo) -- the pseudo-labeller
fills the gaps and must never overwrite human labels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

SENTIMENTS: tuple[str, str, str] = ("positive", "neutral", "negative")
"""Label order; a label's index in this tuple is its class id (pos=0, neu=1, neg=2)."""

Sentiment = Literal["positive", "neutral", "negative"]
Source = Literal["human", "pseudo"]


class ManifestError(ValueError):
    """A manifest line could not be parsed; the message names file and line."""


class ManifestEntry(BaseModel):
    """One recording (or a [start_s, end_s) segment of it) and what is known about it."""

    model_config = ConfigDict(extra="forbid")

    audio: str
    transcript: str | None = None
    sentiment: Sentiment | None = None
    speech: bool = True
    start_s: float | None = None
    end_s: float | None = None
    speaker: str | None = None
    group: dict[str, str] = {}
    transcript_source: Source | None = None
    sentiment_source: Source | None = None
    split: str | None = None
    phones: list[tuple[str, float, float]] | None = None
    """Forced-alignment phone timings (phone, start_s, end_s) relative to the segment (`voicetone data align`)."""

    @model_validator(mode="after")
    def _check(self) -> "ManifestEntry":
        if self.start_s is not None and self.start_s < 0:
            raise ValueError("start_s must be >= 0")
        if self.start_s is not None and self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError("end_s must be greater than start_s")
        if not self.speech and self.sentiment is not None:
            raise ValueError("a non-speech clip cannot carry a sentiment label")
        if self.phones is not None and any(end < start for _, start, end in self.phones):
            raise ValueError("phones: each end_s must be >= its start_s")
        return self

    @property
    def label_index(self) -> int:
        """Class id of the sentiment, -1 when unknown or the clip is not speech."""
        if not self.speech or self.sentiment is None:
            return -1
        return SENTIMENTS.index(self.sentiment)

    def resolve(self, base: str | Path) -> "ManifestEntry":
        """Return a copy whose relative audio path is made absolute against ``base``."""
        p = Path(self.audio)
        if p.is_absolute():
            return self
        return self.model_copy(update={"audio": str((Path(base) / p).resolve())})


def read_manifest(path: str | Path, resolve: bool = True) -> list[ManifestEntry]:
    """Read a JSON-lines manifest; relative audio paths resolve against its folder.

    Blank lines and lines starting with ``#`` are skipped. A bad line raises
    ManifestError naming the file and the 1-based line number.
    """
    path = Path(path)
    base = path.parent
    entries: list[ManifestEntry] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                entry = ManifestEntry.model_validate(json.loads(text))
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{path}:{number}: not valid JSON: {exc.msg}") from exc
            except ValidationError as exc:
                detail = "; ".join(
                    f"{'.'.join(str(p) for p in err['loc']) or 'entry'}: {err['msg']}" for err in exc.errors()
                )
                raise ManifestError(f"{path}:{number}: {detail}") from exc
            entries.append(entry.resolve(base) if resolve else entry)
    return entries


def collect_entries(entries: Iterable[ManifestEntry], total: int, label: str, progress: bool = True) -> list[ManifestEntry]:
    """The entries of a pass over a manifest as a list, with a progress bar while they come."""
    if not progress:
        return list(entries)
    from model.progress import ProgressBar

    out = []
    with ProgressBar(label, total, transient=True, unit="entry", units="entries") as bar:
        for entry in entries:
            out.append(entry)
            bar.advance()
    return out


def write_manifest(path: str | Path, entries: Iterable[ManifestEntry], relative: bool = True) -> None:
    """Write entries as JSON lines, omitting unset fields.

    With ``relative``, audio paths under the manifest's folder are written
    relative to it so a corpus folder can be moved as a whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    with path.open("w", encoding="utf-8") as f:
        for entry in entries:
            data = entry.model_dump(exclude_defaults=True)
            data["audio"] = entry.audio
            if relative and Path(entry.audio).is_absolute():
                try:
                    data["audio"] = str(Path(entry.audio).resolve().relative_to(base))
                except ValueError:
                    pass
            f.write(json.dumps(data, ensure_ascii=False) + "\n")
