"""The self-supervised front end: log-mel -> x4 conv subsampling -> transformer.

It replaces hand-made acoustic features (pitch, energy) with learned ones, as
the voice tone design does. Pretraining is HuBERT-style masked prediction:
spans of subsampled frames are replaced by a learned mask embedding and the
network predicts the k-means cluster of each masked frame's MFCCs, which
forces it to model context rather than copy its input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ModelConfig
from model.features import LogMel, length_mask, mfcc_with_deltas, pool_frames
from model.layers import TransformerStack, sinusoidal_positions

SUBSAMPLING = 4


class ConvSubsampler(nn.Module):
    """Two stride-2 3x3 convs over (time, mel): [B, T, F] -> [B, ceil(T/4), D].

    Padded frames are zeroed before each conv, so a valid output frame sees
    the same zeros whether the padding came from the batch or the conv.
    """

    def __init__(self, n_mels: int, channels: int, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        f = (n_mels + 1) // 2
        f = (f + 1) // 2
        self.proj = nn.Linear(channels * f, dim)

    @staticmethod
    def out_lengths(lengths: torch.Tensor) -> torch.Tensor:
        l1 = torch.div(lengths + 1, 2, rounding_mode="floor")
        return torch.div(l1 + 1, 2, rounding_mode="floor")

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        x = (x * length_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)).unsqueeze(1)
        l1 = torch.div(lengths + 1, 2, rounding_mode="floor")
        x = F.relu(self.conv1(x))
        x = x * length_mask(l1, x.shape[2])[:, None, :, None].to(x.dtype)
        l2 = torch.div(l1 + 1, 2, rounding_mode="floor")
        x = F.relu(self.conv2(x))
        x = x * length_mask(l2, x.shape[2])[:, None, :, None].to(x.dtype)
        b, c, t, f = x.shape
        return self.proj(x.permute(0, 2, 1, 3).reshape(b, t, c * f)), l2


class SSLFrontEnd(nn.Module):
    """Waveform + lengths -> ([B, T', D] hidden states, [B, T'] bool valid mask)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.out_dim = cfg.d_model
        self.features = LogMel(cfg.sample_rate, cfg.n_fft, cfg.win_ms, cfg.hop_ms, cfg.n_mels)
        self.subsample = ConvSubsampler(cfg.n_mels, cfg.conv_channels, cfg.d_model)
        self.in_norm = nn.LayerNorm(cfg.d_model)
        self.mask_embedding = nn.Parameter(torch.randn(cfg.d_model) * 0.02)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = TransformerStack(cfg.frontend_layers, cfg.d_model, cfg.heads, cfg.ffn_mult, cfg.dropout)

    def reads_rate(self, rate: int) -> bool:
        """Whether audio at ``rate`` can be featurized as it is (`LogMel.rate_plan`)."""
        return self.features.rate_plan(rate) is not None

    def featurize(self, audio: torch.Tensor, lengths: torch.Tensor | None = None, sample_rate: int | None = None):
        """Normalised log-mel [B, frames, n_mels] and frame lengths."""
        return self.features(audio, lengths, sample_rate)

    def encode(self, feats: torch.Tensor, frame_lengths: torch.Tensor, augment=None,
               span_mask: torch.Tensor | None = None):
        """Features -> hidden states. ``augment`` (e.g. SpecAugment) is applied to the
        log-mel; ``span_mask`` [B, T'] marks subsampled frames replaced by the mask embedding."""
        if augment is not None:
            feats = augment(feats, frame_lengths)
        x, lengths = self.subsample(feats, frame_lengths)
        x = self.in_norm(x)
        if span_mask is not None:
            x = torch.where(span_mask.unsqueeze(-1), self.mask_embedding.to(x.dtype), x)
        x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device, x.dtype)
        mask = length_mask(lengths, x.shape[1])
        return self.encoder(self.drop(x), mask), mask

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor | None = None, augment=None,
                sample_rate: int | None = None):
        feats, flen = self.featurize(audio, lengths, sample_rate)
        return self.encode(feats, flen, augment=augment)


def span_mask(lengths: torch.Tensor, size: int, prob: float, span: int,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """HuBERT/wav2vec2 span masking: each valid frame starts a span of ``span`` frames with
    probability ``prob``; at least one frame per utterance is masked. Bool [B, size]."""
    b = lengths.shape[0]
    starts = torch.rand(b, size, generator=generator) < prob
    valid = length_mask(lengths.cpu(), size)
    starts &= valid
    # guarantee one masked frame: force a start at a random valid position
    forced = (torch.rand(b, generator=generator) * lengths.cpu().clamp(min=1)).long()
    starts[torch.arange(b), forced.clamp(max=size - 1)] = True
    kernel = torch.ones(1, 1, span)
    spread = F.conv1d(F.pad(starts.float().unsqueeze(1), (span - 1, 0)), kernel).squeeze(1) > 0
    return (spread & valid).to(lengths.device)


class MaskedPredictionHead(nn.Module):
    """Projects hidden states to cluster logits (cosine similarity to learned codewords, HuBERT-style)."""

    def __init__(self, dim: int, n_clusters: int, proj_dim: int | None = None, temperature: float = 0.1,
                 recon_dim: int = 0):
        super().__init__()
        proj_dim = proj_dim or dim
        self.proj = nn.Linear(dim, proj_dim)
        self.codes = nn.Parameter(torch.randn(n_clusters, proj_dim) * 0.02)
        self.temperature = temperature
        # the masked frames' log-mel (SUBSAMPLING frames stacked), when cfg.recon_weight > 0
        self.recon = nn.Linear(dim, recon_dim) if recon_dim else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(h), dim=-1) @ F.normalize(self.codes, dim=-1).T / self.temperature


def cluster_targets(frontend: SSLFrontEnd, feats: torch.Tensor, frame_lengths: torch.Tensor,
                    centroids: torch.Tensor) -> torch.Tensor:
    """k-means cluster IDs of MFCC(+deltas) frames pooled to the subsampled rate: [B, T']."""
    from model.kmeans import assign

    mf = mfcc_with_deltas(feats, frontend.cfg.n_mfcc)
    pooled, _ = pool_frames(mf, frame_lengths, SUBSAMPLING)
    b, t, f = pooled.shape
    return assign(pooled.reshape(b * t, f), centroids.to(pooled)).view(b, t)


def pretrain_loss(frontend: SSLFrontEnd, head: MaskedPredictionHead, audio: torch.Tensor,
                  lengths: torch.Tensor, centroids: torch.Tensor, generator: torch.Generator | None = None):
    """Masked-prediction cross-entropy over masked valid frames; also returns accuracy."""
    cfg = frontend.cfg
    feats, flen = frontend.featurize(audio, lengths)
    targets = cluster_targets(frontend, feats, flen, centroids)
    sub_len = ConvSubsampler.out_lengths(flen)
    masked = span_mask(sub_len, targets.shape[1], cfg.mask_prob, cfg.mask_span, generator)
    h, _ = frontend.encode(feats, flen, span_mask=masked)
    logits = head(h[masked])
    tgt = targets[masked]
    loss = F.cross_entropy(logits.float(), tgt)
    acc = (logits.argmax(-1) == tgt).float().mean()
    if head.recon is not None and cfg.recon_weight > 0:
        b, t, f = feats.shape
        frames = targets.shape[1]
        stacked = F.pad(feats, (0, 0, 0, frames * SUBSAMPLING - t)).view(b, frames, SUBSAMPLING * f)
        loss = loss + cfg.recon_weight * F.mse_loss(head.recon(h[masked]).float(), stacked[masked].float())
    return loss, acc
