"""The lightweight classifier branch: masked attention pooling + MLP.

It reads the frozen ASR encoder and learns which of its outputs matter for
sentiment and speech presence -- far cheaper than running the decoder.
"""

from __future__ import annotations

import torch
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


class SentimentClassifier(nn.Module):
    """-> (sentiment logits [B, 3] for positive/neutral/negative, speech logit [B])."""

    def __init__(self, cfg: ModelConfig, in_dim: int | None = None):
        super().__init__()
        d = in_dim or cfg.d_model
        self.pool = AttentionPooling(d, cfg.cls_attn_dim)
        self.mlp = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, cfg.cls_hidden), nn.GELU(),
                                 nn.Dropout(cfg.dropout), nn.Linear(cfg.cls_hidden, 4))

    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        out = self.mlp(self.pool(x, mask))
        return out[:, :3], out[:, 3]
