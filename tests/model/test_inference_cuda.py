"""The CUDA input path: host windows staged through the model's reused page-locked buffer must give
what a plain copy gives, across calls of different sizes (the buffer grows and is reused). Runs where
a GPU is present (bench/gpu_check.sh runs it on a lent machine); skipped on CPU-only CI."""

import numpy as np
import pytest
import torch

from model.inference import VoiceToneModel

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_pinned_staging_matches_plain_copy():
    m = VoiceToneModel.untrained(device="cuda")
    assert m.pinned_transfer
    rng = np.random.default_rng(0)
    batches = [(0.1 * rng.standard_normal((b, 16000 * s))).astype(np.float32) for b, s in ((4, 5), (16, 5), (2, 3))]
    pinned = [m.predict(x) for x in batches]           # grows the buffer, then reuses it for a smaller batch
    m.pinned_transfer = False
    plain = [m.predict(x) for x in batches]
    for (ps, pp), (qs, qp) in zip(pinned, plain):
        np.testing.assert_allclose(ps, qs, atol=1e-5)
        np.testing.assert_allclose(pp, qp, atol=1e-5)
    m.pinned_transfer = True
    lens = [16000, 80000, 40000, 8000]
    a = m.predict(batches[0], lens)
    b = m.predict(torch.as_tensor(batches[0]).double(), lens)   # other dtypes are converted on the way in
    np.testing.assert_allclose(a[1], b[1], atol=1e-5)


def test_trace_holds_on_cuda():
    """The traced forward must survive its checks on CUDA (a trace that records a host tensor beside CUDA
    tensors fails there only, and predict would silently stay eager, slow beside the event loop)."""
    m = VoiceToneModel.untrained(device="cuda").use_jit(True)
    rng = np.random.default_rng(1)
    x = (0.1 * rng.standard_normal((6, 16000 * 5))).astype(np.float32)
    lens = [80000, 40000, 16000, 80000, 1000, 79999]
    traced = m.predict(x, lens)
    assert m.jit and m._traced, "tracing fell back to eager on CUDA"
    m.use_jit(False)
    eager = m.predict(x, lens)
    np.testing.assert_allclose(traced[0], eager[0], atol=1e-4)
    np.testing.assert_allclose(traced[1], eager[1], atol=1e-4)


def test_resampling_on_the_device_matches_the_loops():
    """A CUDA model resamples 11.025 kHz windows itself (the worker's loop hands them over at their rate)."""
    from schemas.resample import resample_fft_rows

    m = VoiceToneModel.untrained(device="cuda")
    assert m.resample_on_device and not m.reads_rate(11025)
    x = (0.1 * np.random.default_rng(2).standard_normal((5, 11025 * 5))).astype(np.float32)
    on_device = m.predict(x, sample_rate=11025)
    on_host = m.predict(resample_fft_rows(x, 11025, 16000))
    np.testing.assert_allclose(on_device[0], on_host[0], atol=1e-4)
    np.testing.assert_allclose(on_device[1], on_host[1], atol=1e-4)


def test_8_khz_is_read_as_it_is_on_cuda_as_on_cpu():
    """8 kHz windows skip resampling on every device, and the GPU gives the CPU's answers."""
    x = (0.1 * np.random.default_rng(3).standard_normal((4, 8000 * 5))).astype(np.float32)
    lens = [40000, 40000, 20000, 8000]
    gpu = VoiceToneModel.untrained(device="cuda").predict(x, lens, sample_rate=8000)
    cpu = VoiceToneModel.untrained(device="cpu").predict(x, lens, sample_rate=8000)
    np.testing.assert_allclose(gpu[0], cpu[0], atol=1e-4)
    np.testing.assert_allclose(gpu[1], cpu[1], atol=1e-4)
