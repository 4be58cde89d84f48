"""Resampling on the model's device: a GPU model is handed windows at their own rate (8 kHz telephone
audio, say) and resamples them itself, so the worker's event loop skips the FFTs. Checked on CPU by
turning the device path on: the same samples as the loop's scipy FFT within float rounding, and the
same answers through `run_model`; a batch of mixed rates or lengths is still resampled on the loop."""

import numpy as np
import pytest
import torch

from model.config import tiny_config
from model.features import resample_fft_torch
from model.inference import VoiceToneModel
from schemas.resample import resample_fft_rows
from streams.pipeline import model_batch, predict_batch, run_model
from streams.silence import SilenceGate
from streams.windowing import Window

torch.set_num_threads(1)


@pytest.mark.parametrize("src,dst,n", [(8000, 16000, 40000), (8000, 16000, 39999), (11025, 16000, 55125),
                                       (48000, 16000, 240000), (44100, 16000, 44101), (16000, 8000, 16000)])
def test_torch_resampling_matches_the_loops(src, dst, n):
    rng = np.random.default_rng(n)
    block = (0.1 * rng.standard_normal((3, n))).astype(np.float32)
    ref = resample_fft_rows(block, src, dst)
    got = resample_fft_torch(torch.from_numpy(block), src, dst).numpy()
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-6


def _windows(rate: int, count: int, seconds: float = 5.0, seed: int = 0) -> list[Window]:
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    return [Window("call", str(i), 0, 0, int(seconds * 1000), (0.1 * rng.standard_normal(n)).astype(np.float32))
            for i in range(count)]


def test_the_device_path_gives_the_loops_answers():
    m = VoiceToneModel.untrained(tiny_config(), device="cpu", seed=2)
    assert not m.resample_on_device   # CPU default: the loop's scipy FFT
    gate = SilenceGate()
    windows = _windows(8000, 4)
    rates = [8000] * 4
    on_loop = run_model(m, gate, windows, rates)
    cut = model_batch(gate, windows, rates, m.sample_rate, resample_on_device=True)
    assert cut.rate == 8000 and cut.audio.shape == (4, 40000)   # handed over at its own rate
    m.resample_on_device = True
    on_device = run_model(m, gate, windows, rates)
    np.testing.assert_allclose(on_device[0], on_loop[0], atol=1e-5)
    np.testing.assert_allclose(on_device[1], on_loop[1], atol=1e-5)
    speech, sentiment = predict_batch(m, cut)
    np.testing.assert_allclose(sentiment, on_loop[1], atol=1e-5)


def test_mixed_batches_and_model_rate_batches_are_not_left_to_the_device():
    gate = SilenceGate()
    mixed = _windows(8000, 2) + _windows(8000, 1, seconds=2.0)
    cut = model_batch(gate, mixed, [8000] * 3, 16000, resample_on_device=True)
    assert cut.rate is None and cut.audio.shape == (3, 80000)
    wide = _windows(16000, 2)
    cut = model_batch(gate, wide, [16000] * 2, 16000, resample_on_device=True)
    assert cut.rate is None and cut.audio.shape == (2, 80000)
