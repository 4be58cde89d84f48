"""predict on CPU runs a large batch as forwards of at most `cpu_max_batch` windows (model/inference.py):
the same answers, in the same order, as one forward, and never a forward larger than the bound (a
forward of 64 windows held ~270 MB of activations; after a stall the worker ran two at once)."""

import numpy as np
import pytest
import torch

from model.config import tiny_config
from model.inference import VoiceToneModel

torch.set_num_threads(1)


@pytest.mark.parametrize("jit", [True, False])
def test_chunked_predict_matches_one_forward(jit):
    m = VoiceToneModel.untrained(tiny_config(), device="cpu", seed=5).use_jit(jit)
    rng = np.random.default_rng(1)
    x = (0.1 * rng.standard_normal((37, 24000))).astype(np.float32)
    x[::5] *= 10.0   # louder windows among quiet ones: a mix-up between chunks would show
    lens = rng.integers(100, 24001, 37)
    m.cpu_max_batch = 0
    s_one, p_one = m.predict(x, lens)
    m.cpu_max_batch = 8
    s_chunk, p_chunk = m.predict(x, lens)
    assert s_chunk.shape == (37,) and p_chunk.shape == (37, 3)
    np.testing.assert_allclose(s_chunk, s_one, atol=1e-5)
    np.testing.assert_allclose(p_chunk, p_one, atol=1e-5)


def test_no_forward_exceeds_the_cpu_bound(monkeypatch):
    m = VoiceToneModel.untrained(tiny_config(), device="cpu", seed=5)
    sizes = []
    forward = m._forward

    def spy(audio, lens, rate=None):
        sizes.append(audio.shape[0])
        return forward(audio, lens, rate)

    monkeypatch.setattr(m, "_forward", spy)
    m.cpu_max_batch = 16
    s, p = m.predict(np.zeros((40, 8000), np.float32))
    assert sizes == [16, 16, 8] and s.shape == (40,) and p.shape == (40, 3)
    sizes.clear()
    m.cpu_max_batch = 0   # off: one forward, as on a GPU
    m.predict(np.zeros((40, 8000), np.float32))
    assert sizes == [40]

