"""Character tokenizer whose sequences start with a sentiment token.

The ASR branch is trained on "<positive> i am so happy": predicting the
sentiment as the first token makes the encoder carry tone as well as words.
Characters keep the vocabulary tiny and need no trained subword model.
"""

from __future__ import annotations

import unicodedata
from typing import Iterable

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
SENTIMENT_TOKENS = ("<positive>", "<neutral>", "<negative>")
SENTIMENTS = ("positive", "neutral", "negative")
PAD, BOS, EOS, UNK = 0, 1, 2, 3


def normalize_text(text: str) -> str:
    """Lower case, NFKC, collapsed whitespace: transcripts from different corpora agree."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


class CharTokenizer:
    def __init__(self, vocab: list[str]):
        if tuple(vocab[: len(SPECIALS) + len(SENTIMENT_TOKENS)]) != SPECIALS + SENTIMENT_TOKENS:
            raise ValueError("vocabulary must start with the special and sentiment tokens")
        self.vocab = list(vocab)
        self.index = {tok: i for i, tok in enumerate(self.vocab)}
        self.sentiment_ids = [self.index[t] for t in SENTIMENT_TOKENS]

    @classmethod
    def build(cls, transcripts: Iterable[str | None]) -> "CharTokenizer":
        chars = set()
        for t in transcripts:
            if t:
                chars.update(normalize_text(t))
        return cls(list(SPECIALS) + list(SENTIMENT_TOKENS) + sorted(chars))

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, sentiment: str | None, text: str | None) -> list[int]:
        """[<bos>, <sentiment>?, chars..., <eos>]; unseen characters map to <unk>."""
        ids = [BOS]
        if sentiment is not None:
            ids.append(self.index[f"<{sentiment}>"])
        for ch in normalize_text(text or ""):
            ids.append(self.index.get(ch, UNK))
        ids.append(EOS)
        return ids

    def decode(self, ids: Iterable[int]) -> tuple[str | None, str]:
        """(sentiment or None, text); stops at <eos>, skips other specials."""
        sentiment = None
        chars = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i in self.sentiment_ids:
                if sentiment is None and not chars:
                    sentiment = SENTIMENTS[self.sentiment_ids.index(i)]
                continue
            if i < len(SPECIALS) or i >= len(self.vocab):
                continue
            chars.append(self.vocab[i])
        return sentiment, "".join(chars)
