"""The lightweight classifier branch: masked attention pooling + MLP.

It reads the frozen ASR encoder and learns which of its outputs matter for
sentiment and speech presence -- far cheaper than running the decoder.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ModelConfig


class AttentionPooling(nn.Module):
    def __init__(self, dim: int, attn_dim: int):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, attn_dim), nn.Tanh(), nn.Linear(attn_dim, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, T, D], mask [B, T] True=valid -> [B, D] weighted mean of valid frames."""
        s = self.score(x).squeeze(-1).float()
        s = s.masked_fill(~mask, float("-inf"))
        w = torch.softmax(s, dim=-1).to(x.dtype)
        return torch.einsum("bt,btd->bd", w, x)


class ConvContext(nn.Module):
    """Two residual 1-D convolutions over the encoder frames before pooling.

    Pooling alone averages frames into a bag: characters the encoder carries frame
    by frame cannot be read as words from it (fresh heads on the frozen shipped encoder:
    held-out window UA 0.46 pooled vs 0.55 with this block). Padded frames are
    zeroed before each convolution, so a window's output ignores its batch.
    """

    def __init__(self, dim: int, kernel: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv1 = nn.Conv1d(dim, dim, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv1d(dim, dim, kernel, padding=kernel // 2)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask.unsqueeze(1).to(x.dtype)  # [B, 1, T]
        y = self.norm(x).transpose(1, 2) * keep
        y = F.gelu(self.conv1(y)) * keep
        y = self.conv2(self.drop(y)) * keep
        return x + y.transpose(1, 2)


class SentimentClassifier(nn.Module):
    """-> (sentiment logits [B, 3] for positive/neutral/negative, speech logit [B])."""

    def __init__(self, cfg: ModelConfig, in_dim: int | None = None):
        super().__init__()
        d = in_dim or cfg.d_model
        if cfg.cls_context not in ("pool", "conv"):
            raise ValueError(f"unknown cls_context {cfg.cls_context!r}; expected 'pool' or 'conv'")
        self.context = ConvContext(d, cfg.cls_kernel, cfg.dropout) if cfg.cls_context == "conv" else None
        self.pool = AttentionPooling(d, cfg.cls_attn_dim)
        self.mlp = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, cfg.cls_hidden), nn.GELU(),
                                 nn.Dropout(cfg.dropout), nn.Linear(cfg.cls_hidden, 4))

    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        if self.context is not None:
            x = self.context(x, mask)
        out = self.mlp(self.pool(x, mask))
        return out[:, :3], out[:, 3]


class ClassifierEnsemble(nn.Module):
    """Several classifier heads on the one frozen encoder; the output averages their probabilities.

    A classifier-stage run is one draw: seeds alone moved held-out accuracy by 0.04 (docs/model-report.md).
    Heads are cheap next to the encoder (~5 % of the inference cost each), so averaging a few narrows
    that spread for a fraction of the cost of a second model. The outputs are logits again (the log of
    the averaged probabilities), so whatever reads one head's output reads the ensemble's unchanged.
    """

    def __init__(self, cfg: ModelConfig, n_heads: int, in_dim: int | None = None):
        super().__init__()
        if n_heads < 2:
            raise ValueError(f"an ensemble needs at least 2 heads, got {n_heads}")
        self.heads = nn.ModuleList(SentimentClassifier(cfg, in_dim) for _ in range(n_heads))

    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        outs = [head(x, mask) for head in self.heads]
        log_k = math.log(len(outs))
        sent = torch.stack([F.log_softmax(s.float(), dim=-1) for s, _ in outs]).logsumexp(0) - log_k
        # log of the mean speech probability against the log of its complement: a logit whose sigmoid is the mean
        on = torch.stack([F.logsigmoid(v.float()) for _, v in outs]).logsumexp(0) - log_k
        off = torch.stack([F.logsigmoid(-v.float()) for _, v in outs]).logsumexp(0) - log_k
        return sent, on - off


def build_classifier(cfg: ModelConfig, in_dim: int | None = None) -> nn.Module:
    """One head (``cls_heads`` 1: the state-dict layout of every checkpoint before ensembles), or several."""
    if cfg.cls_heads == 1:
        return SentimentClassifier(cfg, in_dim)
    return ClassifierEnsemble(cfg, cfg.cls_heads, in_dim)


def classifier_heads(classifier: nn.Module) -> list[SentimentClassifier]:
    """The heads a classifier is made of (itself when it is one): what training fits, one loss each."""
    return list(classifier.heads) if isinstance(classifier, ClassifierEnsemble) else [classifier]
