"""5 s training windows cut from manifest recordings.

The deployed model sees 5 s segments, so training does too: a long
recording contributes several windows (fixed hops, or fresh random crops
every epoch), a short clip one window that the collate pads. Decoded and
resampled recordings stay in a bounded LRU cache because windows of the
same recording are read many times per epoch.
"""

from __future__ import annotations

import os
import struct
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from model.data.manifest import ManifestEntry
from schemas.resample import resample as project_resample
from schemas.wav import WavError, read_wav

Augment = Callable[[np.ndarray, np.random.Generator], Any]


def resample(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Resample mono audio with the project's resampler, the one inference uses too."""
    if src == dst:
        return np.asarray(x, dtype=np.float32)
    return np.asarray(project_resample(x, src, dst), dtype=np.float32)


def wav_duration(path: str | Path) -> float:
    """Duration in seconds from the WAV header alone (no decoding), for window counts."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise WavError(f"{path}: not a RIFF/WAVE file")
        block = rate = None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                raise WavError(f"{path}: missing fmt or data chunk")
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"fmt ":
                fmt = f.read(size + (size & 1))
                _, _, rate, _, block = struct.unpack("<HHIIH", fmt[:14])
            elif cid == b"data":
                if not rate or not block:
                    raise WavError(f"{path}: data chunk before fmt chunk")
                here = f.tell()
                f.seek(0, 2)
                size = min(size, f.tell() - here)  # truncated or streaming-written files
                return (size // block) / rate
            else:
                f.seek(size + (size & 1), 1)


class AudioCache:
    """Bounded LRU of mono float32 recordings at one sample rate, keyed by path."""

    def __init__(self, sample_rate: int, max_bytes: int = 512 << 20):
        self.sample_rate = sample_rate
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()   # a batch's windows may be fetched by several threads at once

    def get(self, path: str) -> np.ndarray:
        with self._lock:
            hit = self._items.get(path)
            if hit is not None:
                self._items.move_to_end(path)
                return hit
        # decoded outside the lock: two threads may decode one file at once, and both get the same samples
        rate, samples = read_wav(path)
        mono = samples.mean(axis=0) if samples.shape[0] > 1 else samples[0]
        audio = np.ascontiguousarray(resample(mono, rate, self.sample_rate), dtype=np.float32)
        with self._lock:
            if path not in self._items:
                self._items[path] = audio
                self._bytes += audio.nbytes
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes
        return audio

    def __getstate__(self) -> dict:   # a lock does not pickle (data-loader workers under spawn)
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def segment(self, entry: ManifestEntry) -> np.ndarray:
        """The entry's [start_s, end_s) span of its recording (the whole recording without them)."""
        audio = self.get(entry.audio)
        a = int(round((entry.start_s or 0.0) * self.sample_rate))
        b = len(audio) if entry.end_s is None else int(round(entry.end_s * self.sample_rate))
        return audio[min(a, len(audio)):min(b, len(audio))]


class WindowDataset(Dataset):
    """Items are windows of ``window_s`` seconds from the entries' audio.

    With ``random_crop`` each entry yields ceil(duration / window_s) items,
    each a random crop redrawn every epoch (call ``set_epoch``, or index
    with (epoch, item) pairs); otherwise
    fixed windows every ``hop_s`` (default ``window_s``), the last one
    aligned to the segment's end. A window shorter than the whole segment
    gets ``transcript=None``: the transcript describes the segment, not the
    crop, and a mismatched transcript would teach the recogniser wrong words.
    Sentiment and speech labels are assumed to hold throughout the segment.

    ``augment(x, rng)`` is applied to each window with an RNG derived from
    (seed, epoch, item), so augmentation is reproducible yet differs per
    epoch. Augmented windows without a transcript are trimmed back to the
    window length (speed perturbation lengthens them).
    """

    def __init__(
        self,
        entries: Sequence[ManifestEntry],
        sample_rate: int = 16000,
        window_s: float = 5.0,
        hop_s: float | None = None,
        augment: Augment | None = None,
        seed: int = 0,
        random_crop: bool = True,
        cache_bytes: int = 512 << 20,
    ):
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.entries = list(entries)
        self.sample_rate = sample_rate
        self.window_s = window_s
        self.hop_s = hop_s if hop_s is not None else window_s
        if self.hop_s <= 0:
            raise ValueError("hop_s must be positive")
        self.augment = augment
        self.seed = seed
        self.random_crop = random_crop
        self.epoch = 0
        self.cache = AudioCache(sample_rate, cache_bytes)
        self.window_n = int(round(window_s * sample_rate))
        self._items: list[tuple[int, int]] = []  # (entry index, window number)
        self._spans: list[tuple[float, float]] = []  # per entry (start_s, duration_s)
        for i, entry in enumerate(self.entries):
            start, duration = self._span(entry)
            self._spans.append((start, duration))
            for k in range(self._window_count(duration)):
                self._items.append((i, k))

    def _span(self, entry: ManifestEntry) -> tuple[float, float]:
        start = entry.start_s or 0.0
        if entry.end_s is not None:
            return start, entry.end_s - start
        return start, max(0.0, wav_duration(entry.audio) - start)

    def _window_count(self, duration: float) -> int:
        if duration <= self.window_s:
            return 1
        if self.random_crop:
            return int(np.ceil(duration / self.window_s - 1e-9))
        return 1 + int(np.ceil((duration - self.window_s) / self.hop_s - 1e-9))

    #: threads that fetch one batch's windows (`__getitems__`). Decoding, cropping and augmenting are numpy
    #: and scipy work that mostly runs without the GIL, and in a loader without worker processes it runs
    #: while torch's threads wait for the batch, so 2 threads fetch a batch ~1.7x as fast on 2 cores
    #: (docs/model-report.md, "Training speed"). Each window draws from its own (seed, epoch, item) RNG,
    #: so the batch is the same bit for bit whatever the thread count.
    fetch_threads: int = 1

    def __getitems__(self, keys: Sequence[int | tuple[int, int]]) -> list[dict[str, Any]]:
        """The items of one batch (torch's DataLoader calls this instead of ``__getitem__`` per item)."""
        if self.fetch_threads <= 1 or len(keys) <= 1:
            return [self[k] for k in keys]
        pool = self.__dict__.get("_pool")
        if pool is None or pool[0] != os.getpid():   # a forked loader worker makes its own
            pool = self._pool = (os.getpid(), ThreadPoolExecutor(self.fetch_threads, thread_name_prefix="fetch"))
        return list(pool[1].map(self.__getitem__, keys))

    def __getstate__(self) -> dict:   # an executor does not pickle
        return {k: v for k, v in self.__dict__.items() if k != "_pool"}

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random crops and augmentations are drawn."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._items)

    def item_labels(self) -> list[int]:
        """Sentiment class id of every item (-1 unknown), for the label-uniform sampler and class weights."""
        return [self.entries[i].label_index for i, _ in self._items]

    def entry_index(self, item: int) -> int:
        """The manifest entry an item was cut from."""
        return self._items[item][0]

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """``key`` is an item number (drawn for the current epoch) or an (epoch, item) pair."""
        epoch, item = key if isinstance(key, tuple) else (self.epoch, key)
        index, k = self._items[item]
        entry = self.entries[index]
        rng = np.random.default_rng([self.seed, epoch, item])
        audio = self.cache.get(entry.audio)
        seg_start, duration = self._spans[index]
        a = min(len(audio), int(round(seg_start * self.sample_rate)))
        b = min(len(audio), a + int(round(duration * self.sample_rate)))
        segment = audio[a:b]
        whole = len(segment) <= self.window_n
        if whole:
            offset = 0
        elif self.random_crop:
            offset = int(rng.integers(0, len(segment) - self.window_n + 1))
        else:
            offset = min(int(round(k * self.hop_s * self.sample_rate)), len(segment) - self.window_n)
        window = segment[offset:offset + self.window_n].astype(np.float32, copy=True)
        transcript = entry.transcript if whole else None
        if self.augment is not None:
            out = self.augment(window, rng)
            window = out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
            window = window.astype(np.float32, copy=False)
            if transcript is None and len(window) > self.window_n:
                window = window[: self.window_n]
        return {
            "audio": torch.from_numpy(np.ascontiguousarray(window)),
            "transcript": transcript,
            "sentiment": entry.label_index,
            "speech": 1.0 if entry.speech else 0.0,
            "group": dict(entry.group),
            "index": index,
            "start_s": seg_start + offset / self.sample_rate,
            "phones": entry.phones if whole else None,   # timed against the whole segment, so only then
            "duration_s": len(segment) / self.sample_rate if whole else self.window_n / self.sample_rate,
        }


def collate_windows(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack items into a zero-padded batch with their true lengths."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    lengths = torch.tensor([int(it["audio"].shape[0]) for it in items], dtype=torch.long)
    audio = torch.zeros(len(items), int(lengths.max()), dtype=torch.float32)
    for row, it in enumerate(items):
        audio[row, : lengths[row]] = it["audio"]
    return {
        "audio": audio,
        "lengths": lengths,
        "sentiment": torch.tensor([int(it["sentiment"]) for it in items], dtype=torch.long),
        "speech": torch.tensor([float(it["speech"]) for it in items], dtype=torch.float32),
        "transcripts": [it["transcript"] for it in items],
        "groups": [it["group"] for it in items],
        "index": torch.tensor([int(it["index"]) for it in items], dtype=torch.long),
        "phones": [it.get("phones") for it in items],
        "durations": [float(it.get("duration_s", 0.0)) for it in items],
    }
