"""Alternative front end: a local ``transformers`` wav2vec2 / HuBERT / WavLM model.

A large self-supervised model pretrained elsewhere can stand in for our own
front end when its weights are available on disk; nothing is ever downloaded
(``local_files_only=True``). Same interface as ``SSLFrontEnd``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from model.features import length_mask, masked_mean_var_norm


def _require_transformers():
    try:
        import transformers  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("the 'hf' front end needs the transformers package (pip install transformers)") from exc
    return transformers


class HFFrontEnd(nn.Module):
    """Waveform + lengths -> ([B, T', D], [B, T'] valid mask) from a transformers speech encoder."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.out_dim = int(model.config.hidden_size)

    @classmethod
    def from_pretrained(cls, path: str) -> "HFFrontEnd":
        tr = _require_transformers()
        return cls(tr.AutoModel.from_pretrained(path, local_files_only=True))

    @classmethod
    def from_config_dict(cls, config: dict[str, Any]) -> "HFFrontEnd":
        """Rebuild the architecture from a checkpoint's stored config (weights loaded after)."""
        tr = _require_transformers()
        config = dict(config)
        model_type = config.pop("model_type")
        return cls(tr.AutoModel.from_config(tr.AutoConfig.for_model(model_type, **config)))

    def config_dict(self) -> dict[str, Any]:
        return self.model.config.to_diff_dict() | {"model_type": self.model.config.model_type}

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.model._get_feat_extract_output_lengths(lengths).long().clamp(min=1)

    def reads_rate(self, rate: int) -> bool:
        """A transformers front end reads its own rate only (16 kHz)."""
        return rate == 16000

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor | None = None, augment=None,
                sample_rate: int | None = None):
        """Waveforms are normalised per utterance over their valid samples (as the
        wav2vec2 feature extractor does); ``augment`` acts on the output states here."""
        if sample_rate is not None and not self.reads_rate(sample_rate):
            raise ValueError(f"a transformers front end reads 16000 Hz audio, not {sample_rate} Hz: resample first")
        b, t = audio.shape
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long, device=audio.device)
        lengths = lengths.to(audio.device).long()
        valid = length_mask(lengths, t)
        x = masked_mean_var_norm(audio.float().unsqueeze(-1), valid).squeeze(-1)
        out = self.model(x, attention_mask=valid.long()).last_hidden_state
        olen = self.out_lengths(lengths).clamp(max=out.shape[1])
        mask = length_mask(olen, out.shape[1])
        if augment is not None:
            out = augment(out, olen)
        return out * mask.unsqueeze(-1).to(out.dtype), mask
