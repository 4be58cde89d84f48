"""Every architecture and loss hyper-parameter of the voice tone model in one dataclass.

The config travels inside each checkpoint (as a plain dict), so a checkpoint
always rebuilds the exact network it was trained as; its hash names the
untrained fallback model so two untrained builds are recognisably the same.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelConfig:
    # --- features (log-mel) ---
    sample_rate: int = 16000
    n_fft: int = 512
    win_ms: float = 25.0
    hop_ms: float = 10.0
    n_mels: int = 80

    # --- front end ---
    # "whisper" (Whisper base's encoder, pretrained on real speech, installed from the registry),
    # "ssl" (our own, pretrained here on unlabelled audio) or "hf" (a local transformers model)
    frontend: str = "ssl"
    hf_path: str | None = None
    whisper_layers: int = 6  # Whisper encoder blocks run (1..6)
    whisper_stride: int = 2  # Whisper's 50 frames/s averaged in groups of this many (2: 25 frames/s)
    whisper_chunk_s: float = 0.0  # >0: windows encoded in chunks of this many seconds, each once (model/whisper_chunks.py)
    conv_channels: int = 32
    d_model: int = 144
    frontend_layers: int = 4
    heads: int = 4
    ffn_mult: int = 4
    dropout: float = 0.1

    # --- HuBERT-style masked prediction pretraining ---
    n_clusters: int = 64
    n_mfcc: int = 13
    mask_prob: float = 0.08  # chance a frame starts a masked span
    mask_span: int = 10  # in subsampled (40 ms) frames
    # weight of also reconstructing the masked frames' log-mel (0: cluster targets only). The k-means
    # targets name phones no better than their input (a phone probe on aligned frames); reconstruction
    # asks the front end to keep the spectrum's detail.
    recon_weight: float = 0.0

    # --- ASR branch ---
    asr_encoder: str = "transformer"  # or "lstm" (bidirectional, residual)
    asr_layers: int = 2
    decoder_layers: int = 2
    ctc_weight: float = 0.3
    label_smoothing: float = 0.1
    max_text_len: int = 160

    # --- classifier branch ---
    cls_context: str = "pool"  # "pool": attention pooling + MLP; "conv": two residual convs first
    cls_kernel: int = 5
    cls_attn_dim: int = 64
    cls_hidden: int = 128
    cls_heads: int = 1  # >1: that many heads trained side by side, their probabilities averaged

    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Build from a dict, ignoring unknown keys so older checkpoints keep loading."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def hash(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:8]

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    @property
    def win_length(self) -> int:
        return int(round(self.sample_rate * self.win_ms / 1000))


def apply_overrides(cfg: ModelConfig, items: list[str] | None) -> ModelConfig:
    """``KEY=VALUE`` strings (a JSON value, or else the raw string) set on ``cfg``, as ``--set`` gives them."""
    for item in items or []:
        key, _, raw = item.partition("=")
        if not hasattr(cfg, key):
            raise SystemExit(f"--set: ModelConfig has no field {key!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        setattr(cfg, key, value)
    return cfg


def tiny_config(**overrides: Any) -> ModelConfig:
    """A very small network for tests and smoke runs (same architecture, fewer units)."""
    base = dict(n_mels=40, conv_channels=8, d_model=32, frontend_layers=1, heads=2, ffn_mult=2,
                dropout=0.0, n_clusters=16, asr_layers=1, decoder_layers=1, cls_attn_dim=16,
                cls_hidden=32, max_text_len=80)
    base.update(overrides)
    return ModelConfig(**base)
