"""Encode each 2.5 s of a channel once: Whisper's encoder on fixed chunks, and a cache of their features.

The service's 5 s windows overlap by half, so with the whole window encoded at once every stretch of
audio goes through the encoder twice. With ``whisper_chunk_s`` set, a window is cut into chunks of that
many seconds from its start (a remainder shorter than half a chunk joins the chunk before it), each
chunk is encoded alone (its own log-mel scale, positions from 0) and the window's features are the
chunks' features end to end. The second chunk of one window is then the first chunk of the next, and
`ChunkCache` hands its features back instead of encoding it again: one chunk encoded per window
instead of two whole windows' worth of frames, and a fixed chunk shape that batches with no padding.

The cache is keyed by the chunk's samples (a hash of their bytes, the rate and the count), not by a
channel or an offset: a window re-made after a restart finds the same features or computes them again,
so recovery needs no cache in any checkpoint. Features are rounded to float16 whether kept or not;
a chunk encoded in a batch of another size may land one float16 step away (probabilities within
~1e-3: tests/model/test_whisper_chunks.py).

Audio at a rate the front end does not read (8 kHz telephone audio) is resampled chunk by chunk, not
window by window: an FFT resampler sees the whole input, so a chunk resampled as part of two different
windows would come out different and never be found again.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Callable

import torch

from model.features import length_mask, resample_fft_torch

Encode = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


def chunk_spans(length: int, chunk_n: int) -> list[tuple[int, int]]:
    """(start, end) of each chunk of a ``length``-sample window: whole chunks from the start; a remainder
    shorter than half a chunk joins the chunk before it (an empty window is one empty chunk)."""
    if length <= 0:
        return [(0, 0)]
    spans = [(s, min(s + chunk_n, length)) for s in range(0, length, chunk_n)]
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] < chunk_n // 2:
        spans[-2:] = [(spans[-2][0], length)]
    return spans


class ChunkCache:
    """Least-recently-used features of encoded chunks, keyed by their samples.

    A live channel needs one entry between two of its windows (the shared chunk), so a capacity of
    about twice the channels a worker holds keeps every reuse; features are kept as float16 (a 2.5 s
    chunk: 63 x 512 values, 64 KB)."""

    def __init__(self, capacity: int = 2048):
        if capacity < 1:
            raise ValueError(f"chunk cache capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()   # the worker's model threads share one cache
        self.hits = self.misses = 0

    @staticmethod
    def key(samples: torch.Tensor, rate: int) -> bytes:
        data = samples.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
        return hashlib.blake2b(data, digest_size=16, person=rate.to_bytes(8, "little")).digest()

    def get(self, key: bytes) -> torch.Tensor | None:
        with self._lock:
            feats = self._items.get(key)
            if feats is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return feats

    def put(self, key: bytes, feats: torch.Tensor) -> None:
        with self._lock:
            self._items[key] = feats
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def encode_chunked(encode: Encode, audio: torch.Tensor, lengths: torch.Tensor, rate: int, model_rate: int,
                   chunk_s: float, cache: ChunkCache | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] windows at ``rate`` -> ([B, T', D] features, [B, T'] mask), each chunk through ``encode``
    (model-rate audio and lengths -> pooled features and mask) alone; chunks found in ``cache`` are
    not encoded again, and a chunk met twice in one batch is encoded once. Chunk features are rounded
    to float16 (as the cache keeps them, and as training caches store them) whether kept or not."""
    chunk_n = int(round(chunk_s * rate))
    rows: list[list[bytes | int]] = []
    todo: dict[bytes | int, torch.Tensor] = {}
    found: dict[bytes | int, torch.Tensor] = {}
    for r in range(audio.shape[0]):
        ids: list[bytes | int] = []
        for s, e in chunk_spans(int(lengths[r]), chunk_n):
            piece = audio[r, s:e]
            cid: bytes | int = len(todo) if cache is None else ChunkCache.key(piece, rate)
            if cid not in todo and cid not in found:
                hit = cache.get(cid) if cache is not None else None
                if hit is not None:
                    found[cid] = hit
                else:
                    todo[cid] = piece
            ids.append(cid)
        rows.append(ids)
    if todo:
        pieces = list(todo.values())
        if rate != model_rate:
            pieces = [resample_fft_torch(p[None], rate, model_rate)[0] for p in pieces]
        lens = torch.tensor([len(p) for p in pieces], device=audio.device)
        batch = audio.new_zeros(len(pieces), max(1, int(lens.max())))
        for i, p in enumerate(pieces):
            batch[i, :len(p)] = p
        h, mask = encode(batch, lens)
        frames = mask.sum(1).tolist()
        for i, cid in enumerate(todo):   # float16 whether kept or not, as the cache keeps them
            found[cid] = h[i, :int(frames[i])].to(torch.float16)
            if cache is not None:
                cache.put(cid, found[cid])
    feats = [torch.cat([found[c].to(audio.device, torch.float32) for c in ids]) for ids in rows]
    out_len = torch.tensor([len(f) for f in feats], device=audio.device)
    out = audio.new_zeros(len(feats), int(out_len.max()), feats[0].shape[1])
    for r, f in enumerate(feats):
        out[r, :len(f)] = f
    return out, length_mask(out_len, out.shape[1])


def chunked_out_lengths(lengths: torch.Tensor, chunk_n: int, chunk_frames: Callable[[torch.Tensor], torch.Tensor]
                        ) -> torch.Tensor:
    """Feature frames of windows of ``lengths`` samples cut as `chunk_spans` cuts them, given the frames
    of one chunk of n samples (``chunk_frames``)."""
    out = []
    for n in lengths.tolist():
        spans = chunk_spans(int(n), chunk_n)
        out.append(int(chunk_frames(torch.tensor([e - s for s, e in spans])).sum()))
    return torch.tensor(out, dtype=torch.long, device=lengths.device)
