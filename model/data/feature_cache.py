"""Front-end features of training windows, computed once and read many times.

The design freezes the front end in both later stages, so its output for a given (augmented) window
never changes. With a front end the size of Whisper base's encoder (~5 GMAC per 5 s window, about
100x the rest of the network) recomputing it every step would be nearly all of training's cost on
CPU. ``voicetone data features`` renders each training window ``passes`` times (each pass its own
crop and augmentation, drawn as `WindowDataset` draws them), runs the frozen front end in batches
and appends float16 features to one flat file with a JSON-lines index; ``FeatureDataset`` serves
them to the ASR and classifier stages (``--features DIR``).

A share of speech windows (``short_fraction``) becomes a short turn: 0.5-1.5 s of the utterance
inside silence, labelled speech with no sentiment (a fragment of a sentence does not carry its
label). Calls are made of short replies, and a window that holds one must still read as speech.

The build resumes: blocks already in the index are kept, and the feature file is cut back to the
last indexed row before appending.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from model.data.augment import NOISE_KINDS, WaveformAugmenter
from model.data.dataset import WindowDataset
from model.data.manifest import read_manifest
from model.progress import ProgressBar

FEATURES, INDEX, META = "features.f16", "index.jsonl", "meta.json"


def short_turn(window: np.ndarray, rng: np.random.Generator, sample_rate: int, speech_s: tuple[float, float]
               = (0.5, 1.5)) -> np.ndarray:
    """A window of the same length holding only a 0.5-1.5 s stretch of ``window`` at a random place,
    silence around it (the channel's noise, if any, comes from the augmentation applied after)."""
    n = len(window)
    k = min(n, int(rng.uniform(*speech_s) * sample_rate))
    # take the loudest stretch of that length: a crop of a pause would not be speech
    energy = np.convolve(window.astype(np.float64) ** 2, np.ones(max(1, k // 8)), mode="valid")
    centre = int(np.argmax(energy)) if len(energy) else 0
    start = int(np.clip(centre - k // 2, 0, n - k))
    out = np.zeros(n, dtype=np.float32)
    at = int(rng.integers(0, n - k + 1))
    fade = np.minimum(1.0, np.minimum(np.arange(k), np.arange(k)[::-1]) / (0.01 * sample_rate)).astype(np.float32)
    out[at:at + k] = window[start:start + k] * fade
    return out


def _items(dataset: WindowDataset, passes: int) -> list[tuple[int, int]]:
    return [(p, i) for p in range(passes) for i in range(len(dataset))]


def build_feature_cache(manifest: str | Path, out: str | Path, frontend: torch.nn.Module, *, window_s: float = 5.0,
                        passes: int = 1, augment: bool = True, short_fraction: float = 0.0, seed: int = 0,
                        batch_size: int = 8, noise_kinds: Sequence[str] = NOISE_KINDS, sample_rate: int = 16000,
                        progress: bool = True, describe: dict[str, Any] | None = None) -> Path:
    """Write OUT/features.f16, OUT/index.jsonl and OUT/meta.json; returns OUT."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries = read_manifest(manifest)
    aug = WaveformAugmenter(seed=seed, sample_rate=sample_rate, noise_kinds=tuple(noise_kinds)) if augment else None
    dataset = WindowDataset(entries, sample_rate, window_s, seed=seed)
    keys = _items(dataset, passes)
    meta = {"manifest": str(manifest), "window_s": window_s, "passes": passes, "augment": augment,
            "short_fraction": short_fraction, "seed": seed, "dim": int(frontend.out_dim), "items": len(keys),
            "frames_per_s": float(frontend.out_lengths(torch.tensor([10 * sample_rate]))[0]) / 10,
            **(describe or {})}
    meta_path = out / META
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if {k: old.get(k) for k in meta} != meta:
            raise ValueError(f"{out}: a cache of other settings is there ({old}); use another folder")
    meta_path.write_text(json.dumps(meta, indent=1))
    index_path, feat_path = out / INDEX, out / FEATURES
    rows = [json.loads(line) for line in index_path.read_text().splitlines()] if index_path.exists() else []
    end = rows[-1]["offset"] + rows[-1]["frames"] if rows else 0
    dim = int(frontend.out_dim)
    with open(feat_path, "ab") as f:
        f.truncate(end * dim * 2)
    frontend.eval()
    started, done0 = time.monotonic(), len(rows)
    with ProgressBar("features", len(keys), progress, completed=len(rows), unit="window") as bar, \
            open(feat_path, "ab") as feats, open(index_path, "a", encoding="utf-8") as index:
        for b in range(len(rows), len(keys), batch_size):
            batch = keys[b:b + batch_size]
            windows, labels = [], []
            for epoch, item in batch:
                it = dataset[(epoch, item)]
                rng = np.random.default_rng([seed, 7919, epoch, item])
                audio = it["audio"].numpy()
                short = bool(it["speech"]) and rng.random() < short_fraction
                if short:   # a 5 s window, the service's, so that a classifier crop keeps the turn whole
                    audio = short_turn(audio[:5 * sample_rate], rng, sample_rate)
                if aug is not None:
                    audio = np.asarray(aug(audio, rng), dtype=np.float32)
                if short or it["transcript"] is None:   # speed perturbation lengthens; a transcript needs it all
                    audio = audio[:int(round(window_s * sample_rate))]
                windows.append(torch.from_numpy(np.ascontiguousarray(audio)))
                labels.append({"entry": it["index"], "pass": epoch, "speech": it["speech"],
                               "sentiment": -1 if short else it["sentiment"],
                               "transcript": None if short else it["transcript"],
                               "short": short, "group": it["group"]})
            lengths = torch.tensor([len(w) for w in windows])
            padded = torch.zeros(len(windows), int(lengths.max()))
            for r, w in enumerate(windows):
                padded[r, :len(w)] = w
            with torch.inference_mode():
                h, mask = frontend(padded, lengths)
            frames = mask.sum(1).tolist()
            for r, lab in enumerate(labels):
                feats.write(h[r, :frames[r]].to(torch.float16).numpy().tobytes())
                lab.update(offset=end, frames=int(frames[r]))
                end += int(frames[r])
                index.write(json.dumps(lab) + "\n")
            feats.flush()
            index.flush()
            bar.advance(len(batch))
    elapsed = time.monotonic() - started
    meta["seconds_last_run"] = round(elapsed, 1)
    meta["windows_per_s_last_run"] = round((len(keys) - done0) / elapsed, 2) if elapsed > 0 else None
    meta_path.write_text(json.dumps(meta, indent=1))
    return out


class FeatureDataset(Dataset):
    """Items of a feature cache: ``features`` [frames, dim] float32 and the window's labels.

    ``where(row) -> bool`` keeps a subset (e.g. rows with a transcript, for the ASR stage).
    ``max_frames`` crops longer rows at a place drawn per (seed, epoch, item): the classifier stage
    reads 5 s of a cache made of longer windows for the ASR stage (the encoder saw the longer
    context: a difference from the service's 5 s windows that the speed of training buys). A cache of a
    chunked front end (meta ``chunk_frames``) is cropped at chunk boundaries only, where the service's
    windows start, so a crop holds exactly the features a window of the service would."""

    def __init__(self, folder: str | Path, where=None, max_frames: int | None = None, seed: int = 0):
        folder = Path(folder)
        self.max_frames, self.seed = max_frames, seed
        if not (folder / INDEX).exists():
            raise FileNotFoundError(f"{folder}: no feature cache (run voicetone data features)")
        self.meta = json.loads((folder / META).read_text())
        self.dim = int(self.meta["dim"])
        self.align = int(self.meta.get("chunk_frames") or 1)
        rows = [json.loads(line) for line in (folder / INDEX).read_text().splitlines() if line.strip()]
        self.rows = [r for r in rows if where is None or where(r)]
        total = rows[-1]["offset"] + rows[-1]["frames"] if rows else 0
        self.features = np.memmap(folder / FEATURES, dtype=np.float16, mode="r", shape=(total, self.dim))

    def __len__(self) -> int:
        return len(self.rows)

    def item_labels(self) -> list[int]:
        return [int(r["sentiment"]) for r in self.rows]

    def __getitem__(self, key) -> dict[str, Any]:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        r = self.rows[i]
        start, frames, transcript = r["offset"], r["frames"], r["transcript"]
        if self.max_frames is not None and frames > self.max_frames:
            starts = (frames - self.max_frames) // self.align + 1
            start += self.align * int(np.random.default_rng([self.seed, epoch, i]).integers(0, starts))
            frames, transcript = self.max_frames, None
        x = torch.from_numpy(np.array(self.features[start:start + frames], dtype=np.float32))
        return {"features": x, "transcript": transcript, "sentiment": int(r["sentiment"]),
                "speech": float(r["speech"]), "group": r["group"], "index": int(r["entry"])}

    def __getitems__(self, keys) -> list[dict[str, Any]]:
        return [self[k] for k in keys]

    @staticmethod
    def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Zero-padded [B, frames, dim] features with their frame counts, and the labels."""
        lengths = torch.tensor([len(it["features"]) for it in items], dtype=torch.long)
        x = torch.zeros(len(items), int(lengths.max()), items[0]["features"].shape[1])
        for r, it in enumerate(items):
            x[r, :lengths[r]] = it["features"]
        return {"features": x, "feature_lengths": lengths,
                "sentiment": torch.tensor([it["sentiment"] for it in items], dtype=torch.long),
                "speech": torch.tensor([it["speech"] for it in items], dtype=torch.float32),
                "transcripts": [it["transcript"] for it in items], "groups": [it["group"] for it in items],
                "index": torch.tensor([it["index"] for it in items], dtype=torch.long)}


def chunk_frames(frontend: torch.nn.Module, sample_rate: int = 16000) -> int | None:
    """Feature frames of one chunk of a chunked front end (`model.whisper_chunks`), else None."""
    chunk_s = float(getattr(frontend, "chunk_s", 0.0) or 0.0)
    return int(frontend.out_lengths(torch.tensor([int(chunk_s * sample_rate)]))[0]) if chunk_s else None


def _run(args: argparse.Namespace) -> int:
    from model.config import ModelConfig, apply_overrides
    from model.network import build_frontend

    cfg = apply_overrides(ModelConfig(frontend="whisper"), args.set)
    torch.manual_seed(args.seed)
    if args.runtime == "ctranslate2":
        from model.whisper_frontend import WhisperFrontEnd

        frontend = WhisperFrontEnd(cfg.whisper_layers, cfg.whisper_stride, runtime="ctranslate2",
                                   chunk_s=cfg.whisper_chunk_s)
    else:
        frontend = build_frontend(cfg)
    out = build_feature_cache(args.manifest, args.out, frontend, window_s=args.window_s, passes=args.passes,
                              augment=not args.no_augment, short_fraction=args.short_fraction, seed=args.seed,
                              batch_size=args.batch_size, progress=not args.quiet,
                              describe={"frontend": cfg.frontend, "whisper_layers": cfg.whisper_layers,
                                        "whisper_stride": cfg.whisper_stride, "whisper_chunk_s": cfg.whisper_chunk_s,
                                        "chunk_frames": chunk_frames(frontend)})
    meta = json.loads((out / META).read_text())
    print(f"{out}: {meta['items']} windows ({meta.get('windows_per_s_last_run')} windows/s this run)")
    return 0


def add_cli(subparsers) -> None:
    """Add the ``features`` sub-command (mounted under ``voicetone data``)."""
    p = subparsers.add_parser(
        "features", help="run the frozen front end once over (augmented) training windows and store its output",
        description="For the ASR and classifier stages' --features: each manifest window rendered --passes times "
                    "(fresh crop and augmentation each), the frozen front end's output stored as float16. Resumable.")
    p.add_argument("manifest", type=Path, help="training manifest (JSON lines)")
    p.add_argument("--out", type=Path, required=True, help="cache folder")
    p.add_argument("--passes", type=int, default=1, help="renderings of each window (default 1)")
    p.add_argument("--window-s", type=float, default=5.0)
    p.add_argument("--short-fraction", type=float, default=0.0,
                   help="share of speech windows turned into a 0.5-1.5 s turn inside silence (speech, no sentiment)")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="front end setting, e.g. whisper_layers=4")
    p.add_argument("--runtime", choices=("torch", "ctranslate2"), default="torch",
                   help="what runs the Whisper encoder: torch (the service's), or ctranslate2 (~2x faster on CPU, "
                        "output within ~2e-3 of torch's)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run)
