"""The whole network as one module: front end -> ASR encoder -> classifier (+ decoder).

``forward`` is exactly the real-time inference path (no decoder), so the same
module is what ``predict`` runs and what gets exported.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from model.asr import ASRModel
from model.classifier import build_classifier
from model.config import ModelConfig
from model.frontend import SSLFrontEnd


def build_frontend(cfg: ModelConfig, hf_config: dict[str, Any] | None = None) -> nn.Module:
    """Our SSL front end, Whisper base's encoder, or a transformers one (from a stored config, else
    from ``cfg.hf_path``)."""
    if cfg.frontend == "ssl":
        return SSLFrontEnd(cfg)
    if cfg.frontend == "whisper":
        from model.whisper_frontend import WhisperFrontEnd

        return WhisperFrontEnd(cfg.whisper_layers, cfg.whisper_stride, chunk_s=cfg.whisper_chunk_s)
    if cfg.frontend == "hf":
        from model.hf_frontend import HFFrontEnd

        if hf_config is not None:
            return HFFrontEnd.from_config_dict(hf_config)
        if not cfg.hf_path:
            raise ValueError("frontend='hf' needs hf_path (a local transformers model directory)")
        return HFFrontEnd.from_pretrained(cfg.hf_path)
    raise ValueError(f"unknown front end {cfg.frontend!r}")


class VoiceToneNet(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int, hf_config: dict[str, Any] | None = None,
                 frontend: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        self.frontend = frontend if frontend is not None else build_frontend(cfg, hf_config)
        self.asr = ASRModel(cfg, self.frontend.out_dim, vocab_size)
        self.classifier = build_classifier(cfg)

    def encode(self, audio: torch.Tensor, lengths: torch.Tensor, augment=None, sample_rate: int | None = None):
        """``sample_rate``: the audio's, where it is not the model's and the front end reads it as it is."""
        h, mask = self.frontend(audio, lengths, augment=augment, sample_rate=sample_rate)
        return self.asr.encode(h, mask), mask

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor, sample_rate: int | None = None):
        """-> (speech probability [B], sentiment probabilities [B, 3]) in float32."""
        enc, mask = self.encode(audio, lengths, sample_rate=sample_rate)
        sent, speech = self.classifier(enc, mask)
        return torch.sigmoid(speech.float()), torch.softmax(sent.float(), dim=-1)
