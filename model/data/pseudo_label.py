"""Fill missing transcripts and sentiment labels so every dataset can join multitask training.

The design needs a transcript *and* a sentiment label for every speech
clip. Corpora rarely have both, so the gaps are filled by machines: a
speech recogniser for transcripts (Whisper base, the default: word-accurate
on real 8 kHz calls; PocketSphinx's bundled English model; or our own
model's decoder once trained) and a text sentiment model for labels (VADER). Human labels always win: only missing fields are filled,
and each filled field is marked ``*_source="pseudo"``.
"""

from __future__ import annotations

from typing import Iterable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from model.data.dataset import AudioCache
from model.data.manifest import SENTIMENTS, ManifestEntry, collect_entries

SAMPLE_RATE = 16000


@runtime_checkable
class Transcriber(Protocol):
    """Speech to text: mono float32 audio at 16 kHz in, lower-case words out."""

    def transcribe(self, audio: np.ndarray) -> str: ...


@runtime_checkable
class SentimentLabeller(Protocol):
    """Text to one of SENTIMENTS."""

    def label(self, text: str) -> str: ...


class PocketSphinxTranscriber:
    """CMU PocketSphinx with the US English acoustic model, LM and dictionary it ships with.

    Audio quieter than ``min_level_db`` (RMS, dBFS) is not decoded: it
    holds no speech, yet the decoder would still emit words. Offline and
    small, so pseudo-labelling needs no network; far less
    accurate than a cloud recogniser, which is why our own trained decoder
    can replace it (``ModelTranscriber``) for a second labelling round.
    """

    def __init__(self, min_level_db: float = -55.0, **decoder_options):
        from pocketsphinx import Decoder

        self.min_level_db = min_level_db

        options = {"samprate": SAMPLE_RATE, "logfn": "/dev/null"}
        options.update(decoder_options)
        self._decoder = Decoder(**options)

    def transcribe(self, audio: np.ndarray) -> str:
        x = np.asarray(audio, dtype=np.float32)
        if x.size == 0 or 10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-20) < self.min_level_db:
            return ""  # the decoder hallucinates words ("and") on silence
        pcm = (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
        d = self._decoder
        d.start_utt()
        d.process_raw(pcm, no_search=False, full_utt=True)
        d.end_utt()
        hyp = d.hyp()
        words = hyp.hypstr.split() if hyp is not None and hyp.hypstr else []
        # drop fillers such as <sil>, [noise], ++garbage++ should a model emit them
        return " ".join(w for w in words if not (w.startswith(("<", "[", "++")))).lower()


class VaderLabeller:
    """VADER's compound score, thresholded: >= ``pos`` positive, <= ``neg`` negative, else neutral."""

    def __init__(self, pos: float = 0.05, neg: float = -0.05):
        if neg > pos:
            raise ValueError("the negative threshold must not exceed the positive one")
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()
        self.pos, self.neg = pos, neg

    def score(self, text: str) -> float:
        return float(self._analyzer.polarity_scores(text)["compound"])

    def label(self, text: str) -> str:
        compound = self.score(text)
        if compound >= self.pos:
            return "positive"
        if compound <= self.neg:
            return "negative"
        return "neutral"


class WhisperTranscriber:
    """Whisper base's own decoder (CTranslate2, greedy) on the pinned weights the front end uses.

    Audio is cut into 30 s pieces (Whisper's input) padded with zeros, as Whisper reads it. Audio
    quieter than ``min_level_db`` is not decoded (Whisper, too, invents words in silence)."""

    PROMPT = ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]

    def __init__(self, min_level_db: float = -55.0, beam_size: int = 1, threads: int = 0):
        from model.whisper_frontend import CT2WhisperEncoder, WhisperLogMel

        self._ct2 = CT2WhisperEncoder(threads)
        self._mel = WhisperLogMel()
        self.min_level_db, self.beam_size = min_level_db, beam_size
        self._bytes = {c: b for b, c in _byte_chars().items()}

    def _text(self, tokens: list[str]) -> str:
        raw = bytes(self._bytes.get(ch, 32) for tok in tokens if not tok.startswith("<|") for ch in tok)
        return raw.decode("utf-8", errors="replace").strip()

    def transcribe(self, audio: np.ndarray) -> str:
        x = np.asarray(audio, dtype=np.float32)
        if x.size == 0 or 10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-20) < self.min_level_db:
            return ""
        piece = 30 * SAMPLE_RATE
        texts = []
        for start in range(0, len(x), piece):
            chunk = torch.from_numpy(np.ascontiguousarray(x[start:start + piece]))[None]
            mel, flen = self._mel(chunk, torch.tensor([chunk.shape[1]]))
            padded = np.zeros((1, 80, 3000), np.float32)
            padded[:, :, :int(flen[0])] = mel[:, :, :int(flen[0])].numpy()
            texts.append(self._text(self._ct2.generate(padded, self.PROMPT, self.beam_size)))
        return " ".join(t for t in texts if t)


def _byte_chars() -> dict[int, str]:
    """GPT-2's byte-level BPE alphabet: each byte as the printable character its tokens spell it with."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, n = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(keep, chars)}


class ModelTranscriber:
    """Our own model's ASR decoder as a pseudo-labeller (``model.transcribe``).

    The decoder was trained on 5 s windows, so longer audio is decoded in
    consecutive ``window_s`` chunks whose texts are joined; a word cut by a
    chunk boundary may be lost. The sentiment token the decoder prepends is
    kept in ``last_sentiments`` but not used as a label: labels come from
    the text labeller, as in the design.
    """

    def __init__(self, model, window_s: float = 5.0, batch_size: int = 16):
        self.model = model
        self.window_n = int(window_s * SAMPLE_RATE)
        self.batch_size = batch_size
        self.last_sentiments: list[str] = []

    def transcribe(self, audio: np.ndarray) -> str:
        x = np.asarray(audio, dtype=np.float32)
        if x.size == 0:
            return ""
        chunks = [x[i:i + self.window_n] for i in range(0, len(x), self.window_n)]
        if len(chunks) > 1 and len(chunks[-1]) < 0.2 * SAMPLE_RATE:  # too short to hold a word
            tail = chunks.pop()
            chunks[-1] = np.concatenate([chunks[-1], tail])
        texts, self.last_sentiments = [], []
        for start in range(0, len(chunks), self.batch_size):
            part = chunks[start:start + self.batch_size]
            lengths = torch.tensor([len(c) for c in part], dtype=torch.long)
            batch = torch.zeros(len(part), int(lengths.max()))
            for row, c in enumerate(part):
                batch[row, : len(c)] = torch.from_numpy(c)
            with torch.no_grad():
                for label, text in self.model.transcribe(batch, lengths):
                    self.last_sentiments.append(label)
                    texts.append(text.strip())
        return " ".join(t for t in texts if t)


def pseudo_label_entry(
    entry: ManifestEntry,
    transcriber: Transcriber | None,
    labeller: SentimentLabeller | None,
    cache: AudioCache,
) -> ManifestEntry:
    """One entry with its missing transcript and/or sentiment filled, if it is speech.

    An empty recognition result leaves the transcript missing (an empty
    transcript would teach the recogniser that speech says nothing), and
    no sentiment is guessed from no text.
    """
    if not entry.speech:
        return entry
    update: dict = {}
    text = entry.transcript
    if text is None and transcriber is not None:
        text = transcriber.transcribe(cache.segment(entry)).strip() or None
        if text is not None:
            update.update(transcript=text, transcript_source="pseudo")
    if entry.sentiment is None and labeller is not None and text:
        label = labeller.label(text)
        if label not in SENTIMENTS:
            raise ValueError(f"labeller returned {label!r}, expected one of {SENTIMENTS}")
        update.update(sentiment=label, sentiment_source="pseudo")
    return entry.model_copy(update=update) if update else entry


def pseudo_label_manifest(
    entries: Iterable[ManifestEntry],
    transcriber: Transcriber | None,
    labeller: SentimentLabeller | None,
    progress: bool = True,
    cache_bytes: int = 256 << 20,
) -> list[ManifestEntry]:
    """Every entry, with only its missing transcript/sentiment filled and marked pseudo."""
    entries = list(entries)
    cache = AudioCache(SAMPLE_RATE, cache_bytes)
    return collect_entries((pseudo_label_entry(e, transcriber, labeller, cache) for e in entries), len(entries),
                           "pseudo-labelling", progress)


def label_counts(entries: Sequence[ManifestEntry]) -> dict[str, int]:
    """How many entries have each kind of label, for the CLI summary."""
    counts = {"entries": len(entries), "non_speech": 0, "transcript_human": 0, "transcript_pseudo": 0,
              "transcript_missing": 0, "sentiment_human": 0, "sentiment_pseudo": 0, "sentiment_missing": 0}
    for e in entries:
        if not e.speech:
            counts["non_speech"] += 1
            continue
        for field in ("transcript", "sentiment"):
            if getattr(e, field) is None:
                counts[f"{field}_missing"] += 1
            else:
                counts[f"{field}_{getattr(e, field + '_source') or 'human'}"] += 1
    return counts
