"""predict's traced network (model/inference.py `_forward`): the same answers as the eager network
for any batch size, window length and lengths; a bounded number of traces; and a network whose trace
would bake in values falls back to eager with a warning."""

import logging

import numpy as np
import pytest
import torch

import model
from model.config import tiny_config
from model.inference import VoiceToneModel

torch.set_num_threads(1)


def both(m: VoiceToneModel, x, lens):
    m.jit = True
    a = m.predict(x, lens)
    m.jit = False
    b = m.predict(x, lens)
    m.jit = True
    return a, b


@pytest.mark.parametrize("head,heads", [("pool", 1), ("conv", 1), ("conv", 3)])
def test_traced_predict_matches_eager(head, heads):
    m = VoiceToneModel.untrained(tiny_config(cls_context=head, cls_heads=heads), device="cpu", seed=3)
    assert m.jit
    rng = np.random.default_rng(0)
    shapes = [(1, 80000), (3, 80000), (7, 37123), (4, 16000), (2, 15999), (5, 100000), (2, 500), (9, 24000)]
    for b, t in shapes:
        x = (0.1 * rng.standard_normal((b, t))).astype(np.float32)
        lens = rng.integers(0, t + 1, b)
        lens[0] = t
        (s1, p1), (s2, p2) = both(m, x, lens)
        np.testing.assert_allclose(s1, s2, atol=1e-5)
        np.testing.assert_allclose(p1, p2, atol=1e-5)
    assert m.jit, "the check batches must not have switched the trace off"
    # one trace per whole second of padded length, whatever the batch sizes
    assert sorted(m._traced) == [(16000, n) for n in (16000, 32000, 48000, 80000, 112000)]   # (rate, padded)


def test_traced_predict_is_the_shipped_default():
    m = model.load(device="cpu")
    assert m.jit
    x = (0.1 * np.random.default_rng(1).standard_normal((3, 80000))).astype(np.float32)
    (s1, p1), (s2, p2) = both(m, x, [80000, 52000, 20000])
    np.testing.assert_allclose(p1, p2, atol=1e-5)
    np.testing.assert_allclose(s1, s2, atol=1e-5)


def test_lstm_encoder_is_traced_too():
    m = VoiceToneModel.untrained(tiny_config(asr_encoder="lstm"), device="cpu", seed=3)
    rng = np.random.default_rng(2)
    x = (0.1 * rng.standard_normal((4, 80000))).astype(np.float32)
    m.predict(x, [80000, 30000, 60000, 16000])   # traced with these lengths...
    assert m.jit and sorted(m._traced) == [(16000, 80000)]
    for lens in ([80000] * 4, [20000, 80000, 5000, 70000]):   # ...right for others (packing is traced)
        (_, p1), (_, p2) = both(m, x, lens)
        np.testing.assert_allclose(p1, p2, atol=1e-5)


class BakesLengths(torch.nn.Module):
    """A network whose forward takes a length to Python: a trace freezes it."""

    def forward(self, audio, lens):
        n = int(lens[0])
        level = audio[:, :n].abs().mean(dim=1, keepdim=True)
        return torch.sigmoid(level[:, 0]), torch.softmax(torch.cat([level, -level, 0 * level], dim=1), dim=1)


def test_network_whose_trace_bakes_lengths_falls_back(caplog):
    m = VoiceToneModel.untrained(tiny_config(), device="cpu", seed=3)
    m.net = BakesLengths()
    rng = np.random.default_rng(2)
    x = (0.1 * rng.standard_normal((4, 80000))).astype(np.float32)
    x[:, 30000:] *= 10
    lens = [80000, 30000, 60000, 16000]
    with caplog.at_level(logging.WARNING, logger="model.inference"):
        s1, p1 = m.predict(x, lens)
    assert not m.jit and "stays eager" in caplog.text
    assert not m._traced
    s2, p2 = m.predict(x, [30000, 30000, 60000, 16000])   # eager now: the first length matters again
    assert not np.allclose(p1, p2)


def test_reduced_precision_is_not_traced():
    m = VoiceToneModel.untrained(tiny_config(), device="cpu").set_precision("int8")
    assert not m.jit


def test_jit_can_be_switched_off_from_settings(monkeypatch):
    from streams.settings import Settings

    monkeypatch.setenv("VOICETONE_JIT", "false")
    s = Settings()
    assert s.jit is False
    assert not model.load(device="cpu", jit=s.jit).jit
    assert model.load(device="cpu").jit
    assert not model.load(device="cpu", precision="int8").use_jit(True).jit   # quantized layers stay eager


def test_a_trace_that_fails_leaves_predict_working(caplog):
    # tracing under an active dispatch mode (here the FLOP counter) records a graph that either raises
    # when run or gives other numbers than the network: either way the check must catch it
    from torch.utils.flop_counter import FlopCounterMode

    m = VoiceToneModel.untrained(tiny_config(), device="cpu", seed=3)
    x = (0.1 * np.random.default_rng(4).standard_normal((2, 80000))).astype(np.float32)
    m.jit = False
    want = m.predict(x)
    m.jit = True
    with caplog.at_level(logging.WARNING, logger="model.inference"), FlopCounterMode(display=False):
        got = m.predict(x)
    assert not m.jit and "predict stays eager" in caplog.text
    np.testing.assert_allclose(got[1], want[1], atol=1e-6)
