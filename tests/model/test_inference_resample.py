"""Windows at other rates than the model's. 8 kHz telephone audio is read as it is: its STFT bins are the
16 kHz model's bins below 4 kHz, so the log-mel front end takes it with no resampling anywhere (checked
against the resampled path below, and on the held-out sets in docs/benchmarks.md). Other rates are resampled:
on the worker's event loop (scipy FFT) on CPU, on the model's device on a GPU, where the loop hands
windows over at their own rate; checked on CPU by turning the device path on."""

import numpy as np
import pytest
import torch

from model.config import tiny_config
from model.features import LogMel, mel_filterbank, resample_fft_torch
from model.inference import VoiceToneModel
from schemas.resample import resample_fft_rows
from streams.inference import model_batch, model_batch_for, predict_batch, prepare_batch, run_model
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


def test_which_rates_the_log_mel_reads_as_they_are():
    lm = LogMel(16000, 512, 25.0, 10.0, 64)
    assert lm.rate_plan(16000) == (512, 400, 160)
    assert lm.rate_plan(8000) == (256, 200, 80)
    assert lm.rate_plan(12000) == (384, 300, 120)
    for rate in (11025, 22050, 44100, 48000, 0, -8000, True):
        assert lm.rate_plan(rate) is None
    with pytest.raises(ValueError, match="resample to 16000 Hz first"):
        lm(torch.zeros(1, 11025), sample_rate=11025)


def test_8_khz_log_mel_is_the_resampled_one_below_4_khz():
    """Same frames, and the same values in every mel band below the 8 kHz audio's band edge; the bands
    above hold only the resampled path's window leakage there, and nothing here."""
    rng = np.random.default_rng(0)
    t = np.arange(40000) / 8000
    x = (0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.1 * np.sin(2 * np.pi * 0.5 * t)))
         + 0.05 * rng.standard_normal(40000)).astype(np.float32)[None]
    lm = LogMel(16000, 512, 25.0, 10.0, 64, normalize=False)
    want, want_len = lm(torch.from_numpy(resample_fft_rows(x, 8000, 16000)))
    got, got_len = lm(torch.from_numpy(x), sample_rate=8000)
    assert got.shape == want.shape and int(got_len) == int(want_len) == 497
    fb = mel_filterbank(16000, 512, 64)
    below = [m for m in range(64) if fb[116:, m].sum() == 0]   # bands wholly under 3.6 kHz
    assert len(below) >= 40
    inner = slice(5, -5)   # the FFT resampler's circular edges move the first and last frames a little
    diff = (got - want)[0, inner][:, below].abs()
    assert float(diff.max()) < 1e-2 and float(diff.median()) < 1e-4
    # partial windows: frames are counted the same way at both rates
    lens = torch.tensor([40000, 20000, 300])
    assert lm.frame_lengths(lens * 2).tolist() == lm.frame_lengths(lens, 8000).tolist()


def test_8_khz_windows_reach_the_model_unresampled_whatever_their_batch():
    m = VoiceToneModel.untrained(tiny_config(), device="cpu", seed=2)
    assert m.reads_rate(8000) and m.reads_rate(16000) and not m.reads_rate(11025)
    gate = SilenceGate()
    full, short = _windows(8000, 3), _windows(8000, 1, seconds=2.0, seed=1)
    wide = _windows(16000, 2, seed=3)
    batch = full + short + wide
    rates = [8000] * 4 + [16000] * 2
    cut = model_batch_for(m, gate, batch, rates)
    parts = {p.rate: p for p in cut.parts}
    assert set(parts) == {8000, None}
    assert parts[8000].audio.shape == (4, 40000) and parts[8000].lengths.tolist() == [40000] * 3 + [16000]
    assert parts[None].audio.shape == (2, 80000)
    together = run_model(m, gate, batch, rates)
    for i, (w, r) in enumerate(zip(batch, rates)):   # each window's answer is its answer alone
        alone = run_model(m, gate, [w], [r])
        np.testing.assert_allclose(together[0][i], alone[0][0], atol=1e-5)
        np.testing.assert_allclose(together[1][i], alone[1][0], atol=1e-5)


def test_the_8_khz_path_is_traced_and_matches_the_eager_network():
    m = VoiceToneModel.untrained(tiny_config(), device="cpu", seed=4)
    x = np.stack([w.samples for w in _windows(8000, 3)])
    lens = np.array([40000, 40000, 12000])
    traced = m.predict(x, lens, sample_rate=8000)
    assert (8000, 40000) in m._traced and m.jit
    eager = m.use_jit(False).predict(x, lens, sample_rate=8000)
    np.testing.assert_allclose(traced[0], eager[0], atol=1e-5)
    np.testing.assert_allclose(traced[1], eager[1], atol=1e-5)


def test_the_device_path_gives_the_loops_answers():
    m = VoiceToneModel.untrained(tiny_config(), device="cpu", seed=2)
    assert not m.resample_on_device   # CPU default: the loop's scipy FFT
    gate = SilenceGate()
    windows = _windows(11025, 4)
    rates = [11025] * 4
    on_loop = run_model(m, gate, windows, rates)
    cut = model_batch(gate, windows, rates, m.sample_rate, m.reads_rate, resample_on_device=True)
    (part,) = cut.parts
    assert part.rate == 11025 and part.audio.shape == (4, 55125)   # handed over at its own rate
    m.resample_on_device = True
    on_device = run_model(m, gate, windows, rates)
    np.testing.assert_allclose(on_device[0], on_loop[0], atol=1e-5)
    np.testing.assert_allclose(on_device[1], on_loop[1], atol=1e-5)
    speech, sentiment = predict_batch(m, cut)
    np.testing.assert_allclose(sentiment, on_loop[1], atol=1e-5)


def test_mixed_lengths_and_model_rate_batches_are_not_left_to_the_device():
    gate = SilenceGate()
    mixed = _windows(11025, 2) + _windows(11025, 1, seconds=2.0)
    (part,) = model_batch(gate, mixed, [11025] * 3, 16000, resample_on_device=True).parts
    assert part.rate is None and part.audio.shape == (3, 80000)
    np.testing.assert_array_equal(part.audio, prepare_batch(mixed, [11025] * 3, 16000)[0])
    wide = _windows(16000, 2)
    (part,) = model_batch(gate, wide, [16000] * 2, 16000, resample_on_device=True).parts
    assert part.rate is None and part.audio.shape == (2, 80000)
