"""Bias reduction for imbalanced sentiment labels (neutral usually dominates).

The ASR stage draws training items so every sentiment label is equally
likely; the classifier stage instead weights its loss per class, inversely
to the label's frequency. Both follow the voice tone analysis design.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


def _as_label_array(labels: Sequence[int | None]) -> np.ndarray:
    return np.array([-1 if lab is None else int(lab) for lab in labels], dtype=np.int64)


class LabelBalancedSampler(Sampler[int]):
    """Draws ``num_samples`` indices with replacement, each label group equally likely.

    Items with an unknown label (-1 or None) are excluded by default
    (``unknown="exclude"``); with ``unknown="group"`` they form one more
    group drawn as often as each label -- useful when non-speech clips must
    still be seen. Each iteration (epoch) draws a fresh sequence,
    reproducible from ``seed``.
    """

    def __init__(self, labels: Sequence[int | None], num_samples: int, seed: int = 0, unknown: str = "exclude"):
        if unknown not in ("exclude", "group"):
            raise ValueError("unknown must be 'exclude' or 'group'")
        if num_samples <= 0:
            raise ValueError("num_samples must be positive")
        lab = _as_label_array(labels)
        lab = np.where(lab < 0, -1, lab)
        weights = np.zeros(len(lab), dtype=np.float64)
        groups = [g for g in np.unique(lab) if unknown == "group" or g >= 0]
        if not groups:
            raise ValueError("no items with a known label to sample from")
        for g in groups:
            mask = lab == g
            weights[mask] = 1.0 / (len(groups) * mask.sum())
        self.weights = torch.from_numpy(weights)
        self.num_samples = int(num_samples)
        self.seed = seed
        self._epoch = 0

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self._epoch)
        self._epoch += 1
        draws = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=gen)
        return iter(draws.tolist())


def uniform_label_sampler(
    labels: Sequence[int | None], num_samples: int, seed: int = 0, unknown: str = "exclude"
) -> LabelBalancedSampler:
    """Sampler making each present sentiment label equally likely (see LabelBalancedSampler)."""
    return LabelBalancedSampler(labels, num_samples, seed=seed, unknown=unknown)


def class_weights(labels: Sequence[int | None], num_classes: int = 3) -> torch.Tensor:
    """Per-class loss weights proportional to 1/frequency, mean 1 over present classes.

    Unknown labels (-1/None) are ignored; classes absent from ``labels`` get
    weight 0 so they cannot blow up the loss scale.
    """
    lab = _as_label_array(labels)
    lab = lab[(lab >= 0) & (lab < num_classes)]
    counts = np.bincount(lab, minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes, dtype=np.float64)
    if not present.any():
        return torch.zeros(num_classes, dtype=torch.float32)
    weights[present] = 1.0 / counts[present]
    weights[present] /= weights[present].mean()
    return torch.from_numpy(weights).float()
