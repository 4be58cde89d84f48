"""The silence gate: plainly silent windows get their segment without the model."""

import numpy as np
import pytest

from streams.offline import OfflineRunner
from streams.settings import ProcessorConfig
from streams.silence import SILENT_SENTIMENT, SilenceGate, loudest_frame_dbfs
from tests.harness.offline import EnergyModel, frames

SR = 8000


def tone(seconds: float, dbfs: float, rate: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sqrt(2) * 10 ** (dbfs / 20) * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_loudest_frame_level():
    assert loudest_frame_dbfs(np.zeros(5 * SR, np.float32), SR) == float("-inf")
    assert loudest_frame_dbfs(tone(5, -20), SR) == pytest.approx(-20, abs=0.2)
    # one short burst decides, however quiet the rest of the window is
    x = np.zeros(5 * SR, np.float32)
    x[SR:SR + SR // 4] = tone(0.25, -30)
    assert loudest_frame_dbfs(x, SR) == pytest.approx(-30, abs=0.3)
    # a ragged tail counts too
    y = np.zeros(SR + 7, np.float32)
    y[-7:] = 0.5
    assert loudest_frame_dbfs(y, SR) > -10
    assert loudest_frame_dbfs(np.zeros(0, np.float32), SR) == float("-inf")


def test_levels_in_single_precision_match_a_double_precision_reference():
    """The gate's float32 dot products against squaring every sample in float64, over loud, quiet, near
    the threshold and shorter-than-a-frame windows, with ragged tails."""
    rng = np.random.default_rng(3)
    for rate in (8000, 16000, 44100):
        n = rate * 20 // 1000
        for size in (5 * rate, 5 * rate + 13, n - 1, 1):
            for level in (-3.0, -40.0, -55.0, -90.0):
                x = (rng.standard_normal(size) * 10 ** (level / 20)).astype(np.float32)
                whole = size // n * n
                parts = [x[i:i + n] for i in range(0, whole, n)] + ([x[whole:]] if whole < size else [])
                ref = 10 * np.log10(max(float(np.mean(p.astype(np.float64) ** 2)) for p in parts))
                assert abs(loudest_frame_dbfs(x, rate) - ref) < 1e-5, (rate, size, level)


class Recorder:
    def __init__(self):
        self.seen = []

    def __call__(self, windows, rates):
        self.seen.append(len(windows))
        n = len(windows)
        return np.full(n, 0.9, np.float32), np.tile(np.array([0.7, 0.2, 0.1], np.float32), (n, 1))


def test_gate_runs_the_model_on_audible_windows_only():
    windows = [tone(5, -20), np.zeros(5 * SR, np.float32), tone(5, -70), tone(5, -40)]
    rec = Recorder()
    speech, sentiment, skipped = SilenceGate(-55).run(windows, [SR] * 4, rec)
    assert rec.seen == [2] and skipped == 2
    assert speech.tolist() == pytest.approx([0.9, 0.0, 0.0, 0.9])
    np.testing.assert_allclose(sentiment[1], SILENT_SENTIMENT)
    np.testing.assert_allclose(sentiment[3], [0.7, 0.2, 0.1])
    rec = Recorder()
    assert SilenceGate(-55).run([np.zeros(SR, np.float32)], [SR], rec)[2] == 1 and rec.seen == []
    rec = Recorder()  # -inf: the gate is off
    assert SilenceGate(float("-inf")).run(windows, [SR] * 4, rec)[2] == 0 and rec.seen == [4]
    with pytest.raises(ValueError):
        SilenceGate(3.0)
    with pytest.raises(ValueError):
        SilenceGate(float("nan"))


class CountingModel(EnergyModel):
    def __init__(self):
        self.windows = 0

    def predict(self, audio, lengths):
        self.windows += len(lengths)
        return super().predict(audio, lengths)


@pytest.mark.parametrize("threshold", [-55.0, float("-inf")])
def test_a_silent_channel_is_answered_without_the_model(threshold):
    """Agent talks, customer listens (digital silence): the customer's segments are no_speech with
    speech 0 and uniform sentiment, and only the agent's windows reach the model."""
    model = CountingModel()
    r = OfflineRunner(model, ProcessorConfig(silence_dbfs=threshold), max_batch_size=4)
    talk = np.random.default_rng(0).normal(0, 0.1, 12 * 16000).astype(np.float32)
    r.feed(frames("c1", "agent", talk) + frames("c1", "customer", np.zeros(12 * 16000, np.float32)))
    events = r.finish()
    segs = [e for e in events if e["type"] == "segment"]
    agent = [s for s in segs if s["channel"] == "agent"]
    customer = [s for s in segs if s["channel"] == "customer"]
    assert len(agent) == len(customer) == 4
    assert all(s["speech_probability"] > 0.5 for s in agent)
    assert all(s["label"] == "no_speech" and s["speech_probability"] == 0.0 for s in customer)
    if threshold == float("-inf"):
        assert model.windows == 8 and r.silent_windows == 0
    else:
        assert model.windows == 4 and r.silent_windows == 4
        assert all(s["sentiment"] == pytest.approx({"positive": 1 / 3, "neutral": 1 / 3, "negative": 1 / 3})
                   for s in customer)


def test_a_batch_is_judged_in_blocks_exactly_as_window_by_window():
    """The gate stacks windows of one rate and length into a block (a few numpy calls per batch instead of
    some per window); each window's level must be what it is alone, whatever its batch mates."""
    from streams.silence import loudest_frame_dbfs_rows

    rng = np.random.default_rng(3)
    windows = [tone(5, -20), np.zeros(5 * SR, np.float32), tone(5, -62), tone(5, -50),
               (rng.standard_normal(5 * SR) * 3e-3).astype(np.float32), tone(2.37, -40), tone(0.01, -30)]
    rates = [SR, SR, SR, SR, SR, SR, 8000]
    gate = SilenceGate(-55.0)
    alone = [bool(gate.silent([w], [r])[0]) for w, r in zip(windows, rates)]
    assert alone == [False, True, True, False, False, False, False]
    assert list(gate.silent(windows, rates)) == alone
    block = np.stack(windows[:5])
    levels = loudest_frame_dbfs_rows(block, SR)
    assert [float(v) for v in levels] == [loudest_frame_dbfs(w, SR) for w in windows[:5]]   # bit for bit
    assert float(loudest_frame_dbfs_rows(block[2:3], SR)[0]) == float(levels[2])
