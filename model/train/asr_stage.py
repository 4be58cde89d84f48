"""Stage 2: the ASR branch on the frozen front end, targets "<sentiment> transcript".

Sentiment labels are sampled uniformly (neutral dominates real data, and a
biased first token would bias the encoder), and SpecAugment perturbs the
features the frozen front end sees.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import ModelConfig
from model.data.augment import WaveformAugmenter, spec_augment
from model.data.dataset import WindowDataset, collate_windows
from model.data.feature_cache import FeatureDataset
from model.data.manifest import SENTIMENTS, read_manifest
from model.data.sampling import uniform_label_sampler
from model.evaluate import normalize_text
from model.layers import TransformerStack
from model.network import VoiceToneNet, build_frontend
from model.tokenizer import PAD, CharTokenizer
from model.train.common import (TrainConfig, batch_stream, entry_duration, frontend_output, freeze, seed_everything,
                                select_device, stage_metrics, summarize, to_device, train_loop, write_metrics)

log = logging.getLogger(__name__)


def pad_tokens(seqs: list[list[int]], device) -> torch.Tensor:
    out = torch.full((len(seqs), max(map(len, seqs))), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.tensor(s)
    return out.to(device)


def frame_phone_labels(phones: list, durations: list[float], frames: torch.Tensor, width: int,
                       index: dict[str, int]) -> torch.Tensor:
    """Per encoder frame, the id of the phone sounding at its centre (-100: no phones, or past the end).

    Frame i of a row covers the row's audio evenly, so its centre is at (i + 0.5) / frames of the
    *original* clip whatever speed perturbation did to its length: the timings need no rescaling."""
    out = torch.full((len(phones), width), -100, dtype=torch.long)
    for row, (ph, dur, n) in enumerate(zip(phones, durations, frames.tolist())):
        if not ph or n <= 0 or dur <= 0:
            continue
        starts = np.array([p[1] for p in ph], dtype=np.float64)
        ends = np.array([p[2] for p in ph], dtype=np.float64)
        ids = np.array([index.get(p[0], -100) for p in ph], dtype=np.int64)
        centres = (np.arange(n) + 0.5) * dur / n
        k = np.searchsorted(starts, centres, side="right") - 1
        inside = (k >= 0) & (centres < ends[np.clip(k, 0, None)])
        out[row, :n] = torch.from_numpy(np.where(inside, ids[np.clip(k, 0, None)], -100))
    return out


def transcript_words(text: str) -> set[str]:
    """The distinct words of a transcript, split as WER splits them."""
    return set(normalize_text(text))


def word_vocab(transcripts, min_count: int = 2) -> list[str]:
    """The words of the training transcripts that occur in at least ``min_count`` of them
    (a word seen once cannot be learnt to be spotted in other voices)."""
    counts = Counter(w for t in transcripts if t for w in transcript_words(t))
    return sorted(w for w, c in counts.items() if c >= min_count)


def bag_of_words(transcripts: list[str], index: dict[str, int]) -> torch.Tensor:
    """[B, K] multi-hot: which vocabulary words each transcript holds."""
    out = torch.zeros(len(transcripts), len(index))
    for row, t in enumerate(transcripts):
        cols = [index[w] for w in transcript_words(t) if w in index]
        out[row, cols] = 1.0
    return out


def word_spotting_loss(logits: torch.Tensor, mask: torch.Tensor, bag: torch.Tensor) -> dict[str, torch.Tensor]:
    """Bag-of-words target through max pooling over time: for each vocabulary word, the frame that
    scores it highest must say whether the utterance holds it. No alignment is needed, yet the
    loss can only be met by frames that name their words, which is what the frozen encoder must
    hand the classifier. BCE summed over the vocabulary per positive word (so that a 700-word
    vocabulary does not drown the few words present)."""
    pooled = logits.float().masked_fill(~mask[..., None], float("-inf")).amax(1)
    loss = F.binary_cross_entropy_with_logits(pooled, bag, reduction="sum") / bag.sum().clamp(min=1)
    with torch.no_grad():
        hit = pooled > 0
        tp = (hit & (bag > 0)).sum()
        f1 = 2 * tp / (hit.sum() + (bag > 0).sum()).clamp(min=1)
    return {"loss": loss, "f1": f1}


def word_head(d_model: int, vocab: list[str], words_per_utterance: float) -> nn.Linear:
    """The word-spotting head (training only, like the decoder), its bias at the prior so that the
    first steps' loss is the words', not the bias's."""
    head = nn.Linear(d_model, len(vocab))
    p = min(0.5, max(1e-4, words_per_utterance / max(1, len(vocab))))
    nn.init.constant_(head.bias, math.log(p / (1 - p)))
    return head


def asr_entries(entries, window_s: float):
    """Speech entries with both a transcript and a sentiment that fit in one window
    (a crop of a longer segment would not match its transcript)."""
    keep = [e for e in entries if e.speech and e.transcript and e.sentiment is not None]
    fit = [e for e in keep if entry_duration(e) <= window_s + 0.05]
    if len(fit) < len(keep):
        log.warning("asr: skipping %d entries longer than the %.1f s window", len(keep) - len(fit), window_s)
    return fit


def load_frontend(init: str | None, cfg: ModelConfig | None, device):
    """The front end from a pretrain checkpoint, or a transformers one (cfg.frontend == 'hf')."""
    if init is not None:
        ck = load_checkpoint(init)
        cfg = ModelConfig.from_dict(ck["config"]) if cfg is None else cfg
        fe = build_frontend(cfg, ck.get("hf_config"))
        fe.load_state_dict(ck["state"]["frontend"])
        return cfg, fe.to(device), ck.get("metrics", {}), ck.get("hf_config")
    if cfg is None or cfg.frontend not in ("hf", "whisper"):
        raise ValueError("asr stage needs --init (a pretrain checkpoint), the 'whisper' or an 'hf' front end")
    fe = build_frontend(cfg)
    return cfg, fe.to(device), {}, (fe.config_dict() if cfg.frontend == "hf" else None)


def warm_start(net: VoiceToneNet, init: str | None, tok: CharTokenizer) -> None:
    """With an ASR-stage checkpoint as ``--init``, start from its ASR branch too: a finished run
    continues under new settings (schedule, batch size, loss weights) with a fresh optimiser;
    tensors whose shape changed start fresh. A different vocabulary would scramble the output
    layers, so it is refused."""
    if init is None:
        return
    ck = load_checkpoint(init)
    state = ck["state"].get("asr")
    if state is None:
        return
    if list(ck.get("vocab") or []) != list(tok.vocab):
        raise ValueError(f"{init}: its vocabulary differs from this manifest's; start from its pretrain checkpoint")
    own = net.asr.state_dict()
    keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    fresh = sorted(set(own) - set(keep))
    net.asr.load_state_dict(keep, strict=False)
    grown = grow_as_identity(net.asr.encoder, {k.removeprefix("encoder.") for k in keep})
    log.info("asr: warm start from %s (%d tensors; fresh: %s%s)", init, len(keep), ", ".join(fresh) or "none",
             f"; encoder layers {grown} start as identities" if grown else "")


def grow_as_identity(encoder: nn.Module, loaded: set[str]) -> list[int]:
    """A deeper transformer encoder warm-started from a shallower one: the layers the checkpoint
    lacks get zero output projections on both residual branches, so each starts as the identity
    and the grown encoder begins exactly where the trained one ended (random layers on top would
    scramble what the decoder and CTC head read). Returns the indices of the grown layers."""
    if not isinstance(encoder, TransformerStack):
        return []
    grown = []
    for i, layer in enumerate(encoder.layers):
        if any(k.startswith(f"layers.{i}.") for k in loaded):
            continue
        with torch.no_grad():
            for lin in (layer.attn.out, layer.ffn[-1]):
                lin.weight.zero_()
                lin.bias.zero_()
        grown.append(i)
    return grown


@torch.no_grad()
def decode_eval(net: VoiceToneNet, tok: CharTokenizer, dataset, device, n: int = 32) -> dict[str, float]:
    """Greedy-decode up to n training windows (audio or cached features): sentiment-token accuracy and
    character error rate."""
    net.eval()
    n = min(n, len(dataset))
    items = [dataset[i] for i in range(n)]
    batch = to_device(getattr(dataset, "collate", collate_windows)(items), device)
    h, mask = frontend_output(net, batch)
    enc = net.asr.encode(h, mask)
    seqs = net.asr.greedy_decode(enc, mask, tok.sentiment_ids)
    correct, edits, chars = 0, 0, 0
    for it, s in zip(items, seqs):
        sentiment, text = tok.decode(s)
        correct += sentiment == SENTIMENTS[it["sentiment"]]
        ref = tok.decode(tok.encode(None, it["transcript"]))[1]
        edits += levenshtein(text, ref)
        chars += max(1, len(ref))
    return {"decode_sentiment_acc": correct / max(1, n), "decode_cer": edits / max(1, chars), "decode_items": n}


def levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def run_asr(tc: TrainConfig, cfg: ModelConfig | None = None, name: str = "voicetone") -> dict[str, Any]:
    seed_everything(tc.seed)
    device = select_device(tc.device)
    cfg, frontend, prev_metrics, hf_config = load_frontend(tc.init, cfg, device)
    entries = asr_entries(read_manifest(tc.manifest), tc.window_s)
    if not entries:
        raise ValueError(f"{tc.manifest}: no speech entries with transcript and sentiment")
    features = tc.extra.get("features")
    cached = (FeatureDataset(features, where=lambda r: bool(r["transcript"]) and r["sentiment"] >= 0)
              if features else None)
    if cached is not None and cached.dim != frontend.out_dim:
        raise ValueError(f"{features}: features of width {cached.dim}, the front end gives {frontend.out_dim}")
    tok = CharTokenizer.build(e.transcript for e in entries)
    net = VoiceToneNet(cfg, len(tok), frontend=frontend).to(device)
    phone_weight = float(tc.extra.get("phone_weight", 0.0))
    phone_vocab = sorted({p[0] for e in entries for p in (e.phones or [])}) if phone_weight > 0 else []
    if phone_weight > 0 and not phone_vocab:
        raise ValueError(f"{tc.manifest}: --phone-weight needs phone timings (voicetone data align)")
    phone_index = {p: i for i, p in enumerate(phone_vocab)}
    # training only, like the decoder's role: a frame-level phone target needs no alignment search
    phone_head = nn.Linear(cfg.d_model, len(phone_vocab)).to(device) if phone_vocab else None
    if phone_head is not None:
        log.info("asr: phone target on %d of %d entries, %d phones, weight %.2f",
                 sum(1 for e in entries if e.phones), len(entries), len(phone_vocab), phone_weight)
    bow_weight = float(tc.extra.get("bow_weight", 0.0))
    bow_vocab = word_vocab(e.transcript for e in entries) if bow_weight > 0 else []
    if bow_weight > 0 and not bow_vocab:
        raise ValueError(f"{tc.manifest}: --bow-weight needs words that occur in at least two transcripts")
    bow_index = {w: i for i, w in enumerate(bow_vocab)}
    bow_head = None
    if bow_vocab:
        per_utt = float(np.mean([len(transcript_words(e.transcript) & bow_index.keys()) for e in entries]))
        bow_head = word_head(cfg.d_model, bow_vocab, per_utt).to(device)
        log.info("asr: word-spotting target, %d words (%.1f per utterance), weight %.2f",
                 len(bow_vocab), per_utt, bow_weight)
    warm_start(net, tc.init, tok)
    # The published design freezes the front end here; --train-frontend measures what that costs when the
    # front end is a small one pretrained on little data (ours), not a large pretrained model.
    train_frontend = bool(tc.extra.get("train_frontend", False))
    if train_frontend:
        log.info("asr: the front end is trained too (a deviation from the design's frozen front end)")
    else:
        freeze(net.frontend)
    aug = (WaveformAugmenter(seed=tc.seed, sample_rate=cfg.sample_rate, noise_kinds=tc.noise_kinds)
           if tc.augment else None)
    if cached is not None:
        if train_frontend:
            raise ValueError("--features holds the frozen front end's output: it cannot go with --train-frontend")
        dataset = cached
        labels = dataset.item_labels()
        log.info("asr: %d cached windows with transcripts from %s", len(dataset), features)
    else:
        dataset = WindowDataset(entries, cfg.sample_rate, tc.window_s, augment=aug, seed=tc.seed)
        labels = [entries[dataset.entry_index(i)].label_index for i in range(len(dataset))]

    def specaug(feats, lengths):  # global RNG: restored on resume
        return spec_augment(feats, lengths) if tc.augment else feats

    def order(epoch: int) -> list[int]:
        return list(iter(uniform_label_sampler(labels, len(labels), seed=tc.seed * 1000 + epoch)))

    def step(batch):
        keep = [i for i, t in enumerate(batch["transcripts"]) if t]
        if not keep:
            raise ValueError("asr: a batch without transcripts (manifest filtering failed)")
        batch = to_device(batch, device)
        tokens = pad_tokens([tok.encode(SENTIMENTS[int(batch["sentiment"][i])], batch["transcripts"][i])
                             for i in keep], device)
        rows = {k: batch[k][keep] for k in ("audio", "lengths", "features", "feature_lengths") if k in batch}
        with torch.set_grad_enabled(train_frontend):
            h, mask = frontend_output(net, rows, augment=specaug)
        enc = net.asr.encode(h, mask)
        out = net.asr.loss(enc, mask, tokens)
        if phone_head is not None:
            target = frame_phone_labels([batch["phones"][i] for i in keep], [batch["durations"][i] for i in keep],
                                        mask.sum(1).cpu(), enc.shape[1], phone_index).to(enc.device)
            logits = phone_head(enc).float()
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)
            if torch.isfinite(ce):   # a batch without any aligned entry has no phone frames
                out["loss"] = out["loss"] + phone_weight * ce
            valid = target != -100
            out["phone_ce"] = ce.detach().nan_to_num(0.0)
            out["phone_acc"] = ((logits.argmax(-1) == target) & valid).sum() / valid.sum().clamp(min=1)
        if bow_head is not None:
            bag = bag_of_words([batch["transcripts"][i] for i in keep], bow_index).to(enc.device)
            words = word_spotting_loss(bow_head(enc), mask, bag)
            out["loss"] = out["loss"] + bow_weight * words["loss"]
            out["bow_loss"] = words["loss"].detach()
            out["bow_f1"] = words["f1"]
        return out

    parts = {"asr": net.asr, "phones": phone_head, "words": bow_head,
             "frontend": net.frontend if train_frontend else None}
    trainable = {k: m for k, m in parts.items() if m is not None}
    history = train_loop(desc="asr", tc=tc, trainable=trainable, step_fn=step,
                         batches=lambda s: batch_stream(dataset, order, tc, s), device=device)
    summary = summarize(history)
    plain = cached if cached is not None else WindowDataset(entries, cfg.sample_rate, tc.window_s, seed=tc.seed,
                                                            random_crop=False)
    evals = decode_eval(net, tok, plain, device, n=int(tc.extra.get("eval_items", 32)))
    metrics = dict(prev_metrics)
    metrics["asr"] = stage_metrics(summary, tc, **evals, windows=len(dataset))
    if phone_head is not None:
        metrics["asr"] |= {"phone_weight": phone_weight, "phones": phone_vocab}
    if bow_head is not None:
        metrics["asr"] |= {"bow_weight": bow_weight, "bow_words": len(bow_vocab)}
    if train_frontend:
        metrics["asr"] |= {"train_frontend": True}
    save_checkpoint(tc.out, stage="asr", name=name, config=cfg.to_dict(), vocab=tok.vocab,
                    parts={"frontend": net.frontend, "asr": net.asr}, metrics=metrics, hf_config=hf_config)
    write_metrics(tc.out, "asr", summary, tc, **evals)
    return summary | evals
