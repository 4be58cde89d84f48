"""Chunked Whisper encoding: each 2.5 s of a channel encoded once, windows the same with or without the cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model.config import ModelConfig
from model.data.feature_cache import FeatureDataset
from model.features import resample_fft_torch
from model.inference import DEFAULT_CHARS, VoiceToneModel
from model.network import VoiceToneNet
from model.tokenizer import CharTokenizer
from model.whisper_chunks import ChunkCache, chunk_spans
from model.whisper_frontend import WhisperFrontEnd


@pytest.fixture(scope="module")
def chunked() -> WhisperFrontEnd:
    torch.manual_seed(0)
    return WhisperFrontEnd(2, stride=2, pretrained=False, chunk_s=2.5).eval()


def _speechlike(seconds: float, seed: int = 0, rate: int = 16000) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * rate)) / rate
    return (0.3 * torch.sin(2 * np.pi * 180 * t) * torch.rand(len(t), generator=g)).float()


def test_chunk_spans_cut_whole_chunks_and_fold_a_short_remainder():
    assert chunk_spans(80000, 40000) == [(0, 40000), (40000, 80000)]
    assert chunk_spans(90000, 40000) == [(0, 40000), (40000, 90000)]   # under half a chunk left: folded
    assert chunk_spans(100000, 40000) == [(0, 40000), (40000, 80000), (80000, 100000)]
    assert chunk_spans(110000, 40000) == [(0, 40000), (40000, 80000), (80000, 110000)]
    assert chunk_spans(30000, 40000) == [(0, 30000)]
    assert chunk_spans(0, 40000) == [(0, 0)]


@pytest.mark.parametrize("samples", [0, 8000, 40000, 56000, 80000, 100000, 128000])
def test_out_lengths_match_the_mask(chunked, samples):
    audio = _speechlike(max(samples, 1) / 16000)[None, :max(samples, 1)]
    with torch.inference_mode():
        _, mask = chunked(audio, torch.tensor([samples]))
    assert int(mask.sum()) == int(chunked.out_lengths(torch.tensor([samples]))[0])


def test_overlapping_windows_share_a_chunk_and_are_the_same_with_or_without_the_cache(chunked):
    audio = _speechlike(10.0)
    windows = [audio[s:s + 80000] for s in (0, 40000, 80000)]
    with torch.inference_mode():
        alone = [chunked(w[None])[0][0] for w in windows]
        chunked.cache = ChunkCache(16)
        try:
            live = [chunked(w[None])[0][0] for w in windows]
            hits, misses = chunked.cache.hits, chunked.cache.misses
        finally:
            chunked.cache = None
    assert (hits, misses) == (2, 4)   # 3 windows of 2 chunks: 4 distinct chunks, 2 met again
    for a, b in zip(alone, live):   # a chunk encoded in a batch of another size may round to the next float16
        torch.testing.assert_close(a, b, atol=float(a.abs().max()) * 2 ** -10, rtol=0)
    # a window is its two chunks encoded alone, end to end
    with torch.inference_mode():
        first = chunked(audio[None, :40000])[0][0]
        second = chunked(audio[None, 40000:80000])[0][0]
    torch.testing.assert_close(alone[0], torch.cat([first, second]), atol=float(first.abs().max()) * 2 ** -10, rtol=0)


def test_a_batch_encodes_a_repeated_chunk_once(chunked):
    audio = _speechlike(7.5, seed=1)
    batch = torch.stack([audio[:80000], audio[40000:120000]])
    chunked.cache = ChunkCache(16)
    try:
        with torch.inference_mode():
            h, mask = chunked(batch, torch.tensor([80000, 80000]))
        assert (chunked.cache.hits, chunked.cache.misses, len(chunked.cache)) == (0, 3, 3)
    finally:
        chunked.cache = None
    assert torch.equal(h[0, 63:126], h[1, :63])


def test_telephone_audio_is_resampled_chunk_by_chunk(chunked):
    """8 kHz windows are read as they come; each chunk is resampled alone, so a chunk shared by two
    windows is the same audio in both."""
    assert chunked.reads_rate(8000) and chunked.reads_rate(16000) and not chunked.reads_rate(11025)
    assert not WhisperFrontEnd(1, pretrained=False).reads_rate(8000)
    a8 = _speechlike(5.0, seed=2, rate=8000)
    with torch.inference_mode():
        h, _ = chunked(a8[None], sample_rate=8000)
        parts = [chunked(resample_fft_torch(a8[None, s:s + 20000], 8000, 16000))[0][0] for s in (0, 20000)]
    torch.testing.assert_close(h[0], torch.cat(parts), atol=float(h.abs().max()) * 2 ** -10, rtol=0)


def test_cache_keeps_the_most_recent_and_rejects_no_room():
    cache = ChunkCache(2)
    keys = [ChunkCache.key(torch.full((10,), float(i)), 16000) for i in range(3)]
    assert ChunkCache.key(torch.zeros(10), 16000) != ChunkCache.key(torch.zeros(10), 8000)
    for k in keys:
        cache.put(k, torch.ones(2, 4))
    assert cache.get(keys[0]) is None and cache.get(keys[2]) is not None and len(cache) == 2
    with pytest.raises(ValueError, match="capacity"):
        ChunkCache(0)
    with pytest.raises(ValueError, match="whisper_chunk_s"):
        WhisperFrontEnd(1, pretrained=False, chunk_s=0.0123)


def test_the_service_model_keeps_a_cache_on_cpu_and_answers_as_without_it():
    cfg = ModelConfig(frontend="whisper", whisper_layers=1, whisper_chunk_s=2.5, d_model=32, heads=2,
                      asr_layers=1, decoder_layers=1, cls_attn_dim=16, cls_hidden=32)
    torch.manual_seed(0)
    tok = CharTokenizer.build([DEFAULT_CHARS])
    net = VoiceToneNet(cfg, len(tok), frontend=WhisperFrontEnd(1, pretrained=False, chunk_s=cfg.whisper_chunk_s))
    model = VoiceToneModel(net, tok, "untrained", torch.device("cpu"))
    assert isinstance(model.net.frontend.cache, ChunkCache)
    audio = _speechlike(10.0, seed=3).numpy()
    windows = np.stack([audio[s:s + 80000] for s in (0, 40000, 80000)])
    live = [model.predict(w[None]) for w in windows]
    model.net.frontend.cache = None
    fresh = model.predict(windows)
    for i, (sp, se) in enumerate(live):
        np.testing.assert_allclose(sp, fresh[0][i:i + 1], atol=2e-3)
        np.testing.assert_allclose(se, fresh[1][i:i + 1], atol=2e-3)


def test_a_chunked_cache_is_cropped_at_chunk_boundaries(tmp_path):
    rows = [{"entry": 0, "pass": 0, "speech": 1.0, "sentiment": 1, "transcript": "x", "short": False,
             "group": {}, "offset": 0, "frames": 189}]
    (tmp_path / "index.jsonl").write_text(json.dumps(rows[0]) + "\n")
    (tmp_path / "meta.json").write_text(json.dumps({"dim": 4, "chunk_frames": 63, "whisper_chunk_s": 2.5,
                                                    "frames_per_s": 25.0}))
    np.arange(189 * 4, dtype=np.float16).tofile(tmp_path / "features.f16")
    ds = FeatureDataset(tmp_path, max_frames=126)
    starts = {int(ds[(epoch, 0)]["features"][0, 0]) // 4 for epoch in range(40)}
    assert starts == {0, 63}


def test_int8_runs_whispers_encoder_in_ctranslate2_and_says_so():
    """int8 on the Whisper front end: CTranslate2's int8 encoder (per-channel weight scales), the small
    layers above it quantized by torch; the version carries both choices; answers stay close to fp32."""
    from model.checkpoint import load_checkpoint
    from model.inference import BUNDLED

    ckpt = load_checkpoint(BUNDLED["whisper-base"])
    ckpt["config"]["whisper_chunk_s"] = 2.5
    fp32 = VoiceToneModel.from_checkpoint(ckpt, torch.device("cpu"))
    int8 = VoiceToneModel.from_checkpoint(ckpt, torch.device("cpu")).set_precision("int8")
    assert fp32.version == f"{ckpt['version']}+chunk2.5" and int8.version == f"{fp32.version}+int8"
    assert int8.net.frontend.runtime == "ctranslate2" and isinstance(int8.net.frontend.cache, ChunkCache)
    audio = np.zeros((2, 80000), np.float32)
    audio[0] = _speechlike(5.0, seed=4).numpy()
    (sp32, se32), (sp8, se8) = fp32.predict(audio), int8.predict(audio)
    np.testing.assert_allclose(sp8, sp32, atol=0.15)
    np.testing.assert_allclose(se8, se32, atol=0.15)
