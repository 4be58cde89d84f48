"""Stage 3: the lightweight classifier on the frozen front end + ASR encoder.

Sentiment cross-entropy (on speech windows) is weighted inversely to label
frequency; speech presence is a BCE on every window, including non-speech
entries. The output is a full inference checkpoint for ``model.load``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.checkpoint import load_checkpoint, save_checkpoint
from model.classifier import classifier_heads
from model.config import ModelConfig
from model.data.augment import WaveformAugmenter
from model.data.dataset import WindowDataset, collate_windows
from model.data.feature_cache import FeatureDataset
from model.data.manifest import read_manifest
from model.data.sampling import class_weights
from model.network import VoiceToneNet
from model.tokenizer import CharTokenizer
from model.train.common import (TrainConfig, batch_stream, freeze, frontend_output, seed_everything, select_device,
                                shuffled_order, stage_metrics, summarize, to_device, train_loop, write_metrics)

log = logging.getLogger(__name__)


def asr_net_from_checkpoint(ck: dict, head: str | None = None, weights: bool = True,
                            heads: int | None = None) -> VoiceToneNet:
    """A loaded asr- or classifier-stage checkpoint's network: its front end and ASR branch
    (random, seeded by the caller, if not ``weights``) and a fresh classifier (of kind ``head``,
    ``heads`` of them if given)."""
    if ck["stage"] not in ("asr", "classifier") or ck.get("vocab") is None:
        raise ValueError(f"expected an asr-stage checkpoint, got stage {ck['stage']!r}")
    cfg = ModelConfig.from_dict(ck["config"])
    if head is not None:
        cfg.cls_context = head
    if heads is not None:
        if heads < 1:
            raise ValueError(f"--heads must be at least 1, got {heads}")
        cfg.cls_heads = heads
    net = VoiceToneNet(cfg, len(ck["vocab"]), hf_config=ck.get("hf_config"))
    if weights:
        net.frontend.load_state_dict(ck["state"]["frontend"])
        net.asr.load_state_dict(ck["state"]["asr"])
    return net


def load_asr_net(path: str, device, head: str | None = None,
                 heads: int | None = None) -> tuple[VoiceToneNet, CharTokenizer, dict, dict | None]:
    """Front end and ASR branch of ``path``, with a fresh classifier (of kind ``head``, ``heads`` of them)."""
    ck = load_checkpoint(path)
    try:
        net = asr_net_from_checkpoint(ck, head, heads=heads)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return net.to(device), CharTokenizer(ck["vocab"]), ck.get("metrics", {}), ck.get("hf_config")


@torch.no_grad()
def accuracy_eval(net: VoiceToneNet, dataset, device, batch_size: int = 16,
                  max_items: int = 256, heads: list[nn.Module] | None = None) -> list[dict[str, float]]:
    """Sentiment accuracy / macro recall and speech accuracy on (un-augmented) windows: of the
    network's classifier, then of each of ``heads`` (classifiers on the same encoder), in that order.
    ``dataset``: audio windows, or cached front-end features."""
    net.eval()
    classifiers = [net.classifier, *(heads or [])]
    n = min(len(dataset), max_items)
    ys, st = [], []
    ps: list[list[torch.Tensor]] = [[] for _ in classifiers]
    sp: list[list[torch.Tensor]] = [[] for _ in classifiers]
    for i in range(0, n, batch_size):
        collate = getattr(dataset, "collate", collate_windows)
        b = to_device(collate([dataset[j] for j in range(i, min(n, i + batch_size))]), device)
        h, mask = frontend_output(net, b)
        enc = net.asr.encode(h, mask)
        for c, classifier in enumerate(classifiers):
            sent, speech = classifier(enc, mask)
            ps[c].append(sent.argmax(-1).cpu())
            sp[c].append((speech > 0).float().cpu())   # logit > 0: probability > 0.5
        ys.append(b["sentiment"].cpu()); st.append(b["speech"].cpu())
    y, t = torch.cat(ys), torch.cat(st)
    has = y >= 0
    out = []
    for c in range(len(classifiers)):
        p, s = torch.cat(ps[c]), torch.cat(sp[c])
        recalls = [float((p[y == k] == k).float().mean()) for k in range(3) if (y == k).any()]
        out.append({"eval_sentiment_acc": float((p[has] == y[has]).float().mean()) if has.any() else float("nan"),
                    "eval_macro_recall": float(np.mean(recalls)) if recalls else float("nan"),
                    "eval_speech_acc": float((s == t).float().mean()), "eval_items": n})
    return out


def run_classifier(tc: TrainConfig, name: str = "voicetone", speech_weight: float = 1.0,
                   head: str | None = None, heads: int = 1) -> dict[str, Any]:
    if not tc.init:
        raise ValueError("classifier stage needs --init (an asr-stage checkpoint)")
    seed_everything(tc.seed)
    device = select_device(tc.device)
    net, tok, prev_metrics, hf_config = load_asr_net(tc.init, device, head, heads=heads)
    cfg = net.cfg
    freeze(net.frontend)
    freeze(net.asr)
    entries = read_manifest(tc.manifest)
    aug = (WaveformAugmenter(seed=tc.seed, sample_rate=cfg.sample_rate, noise_kinds=tc.noise_kinds)
           if tc.augment else None)
    features = tc.extra.get("features")
    if features:
        # 5 s of each cached window, as the service classifies (the cache may hold longer ASR windows)
        dataset = FeatureDataset(features, seed=tc.seed)
        chunk = dataset.meta.get("whisper_chunk_s") or 0.0
        dataset.max_frames = (int(round(tc.window_s / chunk)) * dataset.align if chunk
                              else int(round(tc.window_s * dataset.meta["frames_per_s"])))
        if dataset.dim != net.frontend.out_dim:
            raise ValueError(f"{features}: features of width {dataset.dim}, the front end gives {net.frontend.out_dim}")
        labels = dataset.item_labels()
        log.info("classifier: %d cached windows from %s", len(dataset), features)
    else:
        dataset = WindowDataset(entries, cfg.sample_rate, tc.window_s, augment=aug, seed=tc.seed)
        labels = [entries[dataset.entry_index(i)].label_index for i in range(len(dataset))]
    weights = class_weights(labels).to(device)
    log.info("classifier: class weights %s", weights.tolist())

    head_modules = classifier_heads(net.classifier)

    def step(batch):
        batch = to_device(batch, device)
        with torch.no_grad():
            h, mask = frontend_output(net, batch)
            enc = net.asr.encode(h, mask)
        y = batch["sentiment"]
        has = y >= 0
        # every head is fitted on its own loss (their sum: each head's gradient is the one it would get alone)
        outs = [h(enc, mask) for h in head_modules]
        ces, bces = [], []
        for logits, speech_logit in outs:
            bces.append(F.binary_cross_entropy_with_logits(speech_logit.float(), batch["speech"]))
            ces.append(F.cross_entropy(logits[has].float(), y[has], weight=weights) if has.any()
                       else logits.sum() * 0.0)
        ce, bce = torch.stack(ces), torch.stack(bces)
        if has.any():
            probs = torch.stack([lg[has].float().softmax(-1) for lg, _ in outs]).mean(0)
            acc = (probs.argmax(-1) == y[has]).float().mean()
        else:
            acc = torch.tensor(float("nan"))
        return {"loss": (ce + speech_weight * bce).sum(), "sentiment_ce": ce.detach().mean(),
                "speech_bce": bce.detach().mean(), "sentiment_acc": acc}

    # each head is clipped on its own, as a lone head would be: one clip over all of them would
    # tie their step sizes together (a lone head's gradient norm passes the clip on ~6 % of steps)
    clip_groups = [list(h.parameters()) for h in head_modules] if len(head_modules) > 1 else None
    history = train_loop(desc="classifier", tc=tc, trainable={"classifier": net.classifier}, step_fn=step,
                         batches=lambda s: batch_stream(dataset, shuffled_order(len(dataset), tc.seed), tc, s),
                         device=device, clip_groups=clip_groups)
    summary = summarize(history)
    plain = dataset if features else WindowDataset(entries, cfg.sample_rate, tc.window_s, seed=tc.seed,
                                                   random_crop=False)
    # with several heads, each head's own figures too: the spread that their average narrows
    evals, *each = accuracy_eval(net, plain, device, max_items=int(tc.extra.get("eval_items", 256)),
                                 heads=head_modules if len(head_modules) > 1 else None)
    if each:
        evals["eval_heads"] = [{k: v for k, v in e.items() if k != "eval_items"} for e in each]
    metrics = dict(prev_metrics)
    metrics["classifier"] = stage_metrics(summary, tc, **evals, windows=len(dataset),
                                          class_weights=weights.tolist())
    save_checkpoint(tc.out, stage="classifier", name=name, config=cfg.to_dict(), vocab=tok.vocab,
                    parts={"frontend": net.frontend, "asr": net.asr, "classifier": net.classifier},
                    metrics=metrics, hf_config=hf_config)
    write_metrics(tc.out, "classifier", summary, tc, **evals)
    return summary | evals
