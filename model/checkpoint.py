"""One checkpoint file per stage: config, vocabulary, state dicts, metrics, format version.

Only plain tensors, dicts, lists, strings and numbers are stored, so loading
uses ``torch.load(weights_only=True)`` and never unpickles arbitrary objects
-- checkpoints may come from outside. Files are written to a temporary name
and renamed, so an interrupted save never leaves a truncated checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "voicetone-checkpoint"
FORMAT_VERSION = 1
STAGES = ("pretrain", "asr", "classifier")
INFERENCE_PARTS = ("frontend", "asr", "classifier")


class CheckpointError(ValueError):
    """Not a voicetone checkpoint, or one of an unsupported format version."""


def _state(obj: nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    sd = obj.state_dict() if isinstance(obj, nn.Module) else obj
    return {k: v.detach().cpu().clone() for k, v in sd.items()}


def weights_hash(parts: dict[str, dict[str, torch.Tensor]], names=INFERENCE_PARTS) -> str:
    """Short SHA-256 over the inference parts' tensors, in a fixed key order."""
    h = hashlib.sha256()
    for name in names:
        for key in sorted(parts.get(name, {})):
            t = parts[name][key].detach().cpu().contiguous()
            h.update(f"{name}.{key}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:10]


def max_state_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest |a - b| over two state dicts' tensors of the same names: 0.0 means the same weights bit for
    bit, the question every reproducibility check asks."""
    return max((float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel()), default=0.0)


def save_checkpoint(path: str | Path, *, stage: str, name: str, config: dict[str, Any],
                    parts: dict[str, nn.Module | dict[str, torch.Tensor]], vocab: list[str] | None = None,
                    metrics: dict[str, Any] | None = None, tensors: dict[str, torch.Tensor] | None = None,
                    hf_config: dict[str, Any] | None = None) -> dict[str, Any]:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    states = {k: _state(v) for k, v in parts.items()}
    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "stage": stage,
        "name": name,
        "version": f"{name}-{weights_hash(states)}",
        "config": dict(config),
        "vocab": list(vocab) if vocab is not None else None,
        "state": states,
        "tensors": {k: v.detach().cpu() for k, v in (tensors or {}).items()},
        "metrics": dict(metrics or {}),
        "hf_config": hf_config,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return ckpt


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint at `path`; `CheckpointError` (one line) for a file that is not one: truncated, corrupt,
    foreign, or holding objects other than tensors and plain values. A missing file raises FileNotFoundError."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a directory, not a checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as exc:   # what weights_only refuses: code or objects in the file
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        why = next((ln for ln in lines if "Unsupported global" in ln), lines[0] if lines else type(exc).__name__)
        raise CheckpointError(f"{path}: not a voicetone checkpoint (refused by the weights_only loader: {why})") \
            from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, AttributeError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt? {first})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a voicetone checkpoint")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {ckpt.get('format_version')} (supported: {FORMAT_VERSION})")
    return ckpt
