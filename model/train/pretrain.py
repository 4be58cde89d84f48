"""Stage 1: self-supervised pretraining of the front end (HuBERT-style masked prediction).

Needs audio only -- any manifest entry, labelled or not -- which is why it
can use far more data than the labelled stages. Targets are k-means
clusters of MFCC frames, fitted once on a sample of the training windows and
stored in the checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import save_checkpoint
from model.config import ModelConfig
from model.data.dataset import WindowDataset, collate_windows
from model.data.manifest import read_manifest
from model.features import length_mask, mfcc_with_deltas, pool_frames
from model.frontend import SUBSAMPLING, MaskedPredictionHead, SSLFrontEnd, pretrain_loss
from model.kmeans import kmeans
from model.train.common import (TrainConfig, batch_stream, seed_everything, select_device, shuffled_order,
                                stage_metrics, summarize, to_device, train_loop, write_metrics)

log = logging.getLogger(__name__)


@torch.no_grad()
def fit_cluster_targets(frontend: SSLFrontEnd, dataset: WindowDataset, k: int, seed: int, device: torch.device,
                        max_windows: int = 256, max_frames: int = 100_000, batch_size: int = 16) -> torch.Tensor:
    """k-means centroids over pooled MFCC(+delta) frames of up to ``max_windows`` windows."""
    n = min(len(dataset), max_windows)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    frames = []
    for i in range(0, n, batch_size):
        batch = to_device(collate_windows([dataset[j] for j in order[i:i + batch_size]]), device)
        feats, flen = frontend.featurize(batch["audio"], batch["lengths"])
        pooled, plen = pool_frames(mfcc_with_deltas(feats, frontend.cfg.n_mfcc), flen, SUBSAMPLING)
        frames.append(pooled[length_mask(plen, pooled.shape[1])])
    x = torch.cat(frames)
    if x.shape[0] > max_frames:
        x = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:max_frames].to(x.device)]
    centroids, inertia = kmeans(x, k, seed=seed)
    log.info("k-means: %d clusters on %d frames, inertia %.3f", k, x.shape[0], inertia)
    return centroids


def run_pretrain(tc: TrainConfig, cfg: ModelConfig | None = None, name: str = "voicetone") -> dict[str, Any]:
    """Train the SSL front end; writes ``tc.out`` (stage "pretrain") and its metrics JSON."""
    cfg = cfg or ModelConfig()
    if cfg.frontend != "ssl":
        raise ValueError("pretraining applies to the 'ssl' front end only")
    seed_everything(tc.seed)
    device = select_device(tc.device)
    entries = read_manifest(tc.manifest)
    dataset = WindowDataset(entries, cfg.sample_rate, tc.window_s, seed=tc.seed)
    frontend = SSLFrontEnd(cfg).to(device)
    head = MaskedPredictionHead(cfg.d_model, cfg.n_clusters,
                                recon_dim=SUBSAMPLING * cfg.n_mels if cfg.recon_weight > 0 else 0).to(device)

    km_path = Path(tc.out).with_name(Path(tc.out).name + ".kmeans.pt")
    if tc.resume and km_path.exists():  # a resumed run must keep its targets
        centroids = torch.load(km_path, weights_only=True).to(device)
    else:
        centroids = fit_cluster_targets(frontend, dataset, cfg.n_clusters, tc.seed, device)
        km_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(centroids.cpu(), km_path)

    def step(batch):
        batch = to_device(batch, device)
        loss, acc = pretrain_loss(frontend, head, batch["audio"], batch["lengths"], centroids)
        return {"loss": loss, "masked_acc": acc}

    history = train_loop(desc="pretrain", tc=tc, trainable={"frontend": frontend, "head": head}, step_fn=step,
                         batches=lambda s: batch_stream(dataset, shuffled_order(len(dataset), tc.seed), tc, s),
                         device=device)
    summary = summarize(history)
    metrics = {"pretrain": stage_metrics(summary, tc, windows=len(dataset))}
    save_checkpoint(tc.out, stage="pretrain", name=name, config=cfg.to_dict(),
                    parts={"frontend": frontend, "pretrain_head": head}, metrics=metrics,
                    tensors={"kmeans": centroids})
    write_metrics(tc.out, "pretrain", summary, tc, windows=len(dataset))
    return summary
