"""k-means in torch, for the HuBERT-style pretraining targets.

Cluster IDs of MFCC frames are the "pseudo phonetic units" the front end
learns to predict for masked frames; a plain Lloyd's algorithm with
k-means++ seeding is enough at this scale and runs on the training device.
"""

from __future__ import annotations

import torch


def kmeans_pp_init(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    first = torch.randint(n, (1,), generator=generator, device="cpu").item()
    centroids = [x[first]]
    d2 = ((x - x[first]) ** 2).sum(1)
    for _ in range(1, k):
        probs = (d2 / d2.sum().clamp(min=1e-12)).cpu()
        if not torch.isfinite(probs).all() or probs.sum() <= 0:
            idx = torch.randint(n, (1,), generator=generator).item()
        else:
            idx = torch.multinomial(probs, 1, generator=generator).item()
        centroids.append(x[idx])
        d2 = torch.minimum(d2, ((x - x[idx]) ** 2).sum(1))
    return torch.stack(centroids)


def assign(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Nearest centroid index for each row of x ([N, F] -> [N])."""
    d = (x * x).sum(1, keepdim=True) - 2 * x @ centroids.T + (centroids * centroids).sum(1)[None]
    return d.argmin(1)


def kmeans(x: torch.Tensor, k: int, iters: int = 30, seed: int = 0, tol: float = 1e-5):
    """Return (centroids [k, F], inertia per point) from data x [N, F]."""
    x = x.float()
    if x.shape[0] < k:
        raise ValueError(f"k-means needs at least k={k} points, got {x.shape[0]}")
    gen = torch.Generator().manual_seed(seed)
    c = kmeans_pp_init(x, k, gen)
    prev = float("inf")
    inertia = prev
    for _ in range(iters):
        a = assign(x, c)
        sums = torch.zeros_like(c).index_add_(0, a, x)
        counts = torch.bincount(a, minlength=k).to(x.dtype)
        empty = counts == 0
        c = torch.where(empty[:, None], c, sums / counts.clamp(min=1)[:, None])
        if empty.any():  # re-seed empty clusters on the points farthest from their centroid
            far = ((x - c[a]) ** 2).sum(1).topk(int(empty.sum())).indices
            c[empty] = x[far]
        inertia = ((x - c[assign(x, c)]) ** 2).sum(1).mean().item()
        if prev - inertia < tol * max(prev, 1e-12):
            break
        prev = inertia
    return c, inertia
