"""Feature caches of the frozen front end: what is stored, resuming, and training from them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model.data.feature_cache import INDEX, FeatureDataset, build_feature_cache, short_turn
from model.data.manifest import ManifestEntry, write_manifest
from model.whisper_frontend import WhisperFrontEnd
from schemas.wav import write_wav


def _manifest(tmp_path, n: int = 6):
    rng = np.random.default_rng(0)
    entries = []
    for i in range(n):
        seconds = 2.0 + i
        t = np.arange(int(seconds * 16000)) / 16000
        x = (0.3 * np.sin(2 * np.pi * (180 + 20 * i) * t) * (rng.random(t.size) * 0.5 + 0.5)).astype(np.float32)
        path = tmp_path / f"a{i}.wav"
        write_wav(path, 16000, x)
        speech = i != 5
        entries.append(ManifestEntry(audio=path.name, transcript=f"words {i}" if speech else "",
                                     sentiment=("positive", "neutral", "negative")[i % 3] if speech else None,
                                     speech=speech, group={"condition": "clean"}))
    write_manifest(tmp_path / "m.jsonl", entries)
    return tmp_path / "m.jsonl"


@pytest.fixture(scope="module")
def frontend():
    torch.manual_seed(0)
    return WhisperFrontEnd(layers=1, stride=2, pretrained=False).eval()


def test_short_turn_keeps_a_short_loud_stretch_in_silence():
    rng = np.random.default_rng(1)
    x = np.zeros(80000, np.float32)
    x[30000:60000] = 0.5
    out = short_turn(x, rng, 16000)
    voiced = np.flatnonzero(np.abs(out) > 0.01)
    assert len(out) == len(x)
    assert 0.5 * 16000 * 0.9 <= len(voiced) <= 1.5 * 16000
    assert voiced[-1] - voiced[0] < 1.5 * 16000


def test_cache_rows_labels_and_resume(tmp_path, frontend):
    manifest = _manifest(tmp_path)
    out = tmp_path / "cache"
    build_feature_cache(manifest, out, frontend, window_s=4.0, passes=2, short_fraction=0.5, seed=3,
                        batch_size=4, progress=False)
    rows = [json.loads(line) for line in (out / INDEX).read_text().splitlines()]
    ds = FeatureDataset(out)
    assert len(ds) == len(rows) > 12   # 2 passes; entries over 4 s give two windows
    assert {r["pass"] for r in rows} == {0, 1}
    short = [r for r in rows if r["short"]]
    assert short and all(r["speech"] == 1.0 and r["sentiment"] == -1 and r["transcript"] is None for r in short)
    assert all(r["frames"] <= 4 * 25 + 1 for r in short)
    assert not any(r["short"] for r in rows if r["speech"] == 0.0)
    # a row's features are the front end's output for its window
    item = ds[0]
    assert item["features"].shape == (rows[0]["frames"], 512) and torch.isfinite(item["features"]).all()
    # cut the build short and resume: the same rows come back
    lines = (out / INDEX).read_text().splitlines()
    (out / INDEX).write_text("\n".join(lines[:5]) + "\n")
    build_feature_cache(manifest, out, frontend, window_s=4.0, passes=2, short_fraction=0.5, seed=3,
                        batch_size=4, progress=False)
    again = FeatureDataset(out)
    assert [r["frames"] for r in again.rows] == [r["frames"] for r in rows]
    np.testing.assert_allclose(again[len(again) - 1]["features"].numpy(), ds[len(ds) - 1]["features"].numpy(),
                               atol=2e-3)
    with pytest.raises(ValueError, match="other settings"):
        build_feature_cache(manifest, out, frontend, window_s=4.0, passes=3, seed=3, progress=False)


def test_crops_and_batches(tmp_path, frontend):
    manifest = _manifest(tmp_path)
    out = build_feature_cache(manifest, tmp_path / "c", frontend, window_s=8.0, augment=False, progress=False)
    ds = FeatureDataset(out, max_frames=50, seed=1)
    long = [i for i, r in enumerate(ds.rows) if r["frames"] > 50]
    assert long
    a, b = ds[(0, long[0])], ds[(1, long[0])]
    assert a["features"].shape[0] == 50 and a["transcript"] is None
    batch = FeatureDataset.collate([ds[0], ds[long[0]]])
    assert batch["features"].shape[0] == 2 and batch["feature_lengths"].max() <= 50
    asr = FeatureDataset(out, where=lambda r: bool(r["transcript"]))
    assert all(ds_item["transcript"] for ds_item in (asr[i] for i in range(len(asr))))
    assert b["features"].shape == a["features"].shape
