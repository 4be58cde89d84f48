"""Checkpoint round trip: save, load with weights_only, identical outputs."""

import numpy as np
import pytest
import torch

import model
from model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from model.config import tiny_config
from model.inference import VoiceToneModel

torch.set_num_threads(1)


def test_round_trip_gives_identical_outputs(tmp_path):
    m = VoiceToneModel.untrained(tiny_config(), seed=5)
    path = tmp_path / "m.pt"
    m.save(path, name="unit", metrics={"classifier": {"loss": 1.0}})
    # only plain data inside: loadable with weights_only=True
    raw = torch.load(path, weights_only=True)
    assert raw["format_version"] == 1 and raw["stage"] == "classifier"
    loaded = model.load(path, device="cpu")
    assert loaded.version == raw["version"] and loaded.version.startswith("unit-")
    assert loaded.version.split("-")[-1] == m.weights_hash()
    assert loaded.metrics == {"classifier": {"loss": 1.0}}
    x = (np.random.default_rng(0).standard_normal((2, 24000)) * 0.1).astype(np.float32)
    a = m.predict(x, [24000, 12000])
    b = loaded.predict(x, [24000, 12000])
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert loaded.tokenizer.vocab == m.tokenizer.vocab


def test_version_changes_with_weights(tmp_path):
    m = VoiceToneModel.untrained(tiny_config(), seed=5)
    v1 = m.save(tmp_path / "a.pt", name="x")["version"]
    with torch.no_grad():
        m.net.classifier.mlp[-1].bias.add_(1.0)
    v2 = m.save(tmp_path / "b.pt", name="x")["version"]
    assert v1 != v2


def test_rejects_foreign_files(tmp_path):
    p = tmp_path / "other.pt"
    torch.save({"hello": torch.zeros(1)}, p)
    with pytest.raises(CheckpointError):
        load_checkpoint(p)
    save_checkpoint(p, stage="pretrain", name="p", config=tiny_config().to_dict(), parts={})
    ck = load_checkpoint(p)
    ck["format_version"] = 99
    torch.save(ck, p)
    with pytest.raises(CheckpointError):
        load_checkpoint(p)


def test_pretrain_checkpoint_is_not_a_model(tmp_path):
    p = tmp_path / "pre.pt"
    save_checkpoint(p, stage="pretrain", name="p", config=tiny_config().to_dict(), parts={})
    with pytest.raises(ValueError):
        model.load(p, device="cpu")


def test_int8_precision_is_close_to_fp32_and_says_so_in_its_version():
    import numpy as np

    import model

    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((3, 16000 * 5))).astype(np.float32)
    f32 = model.load(device="cpu")
    i8 = model.load(device="cpu", precision="int8")
    assert i8.version == f32.version + "+int8"
    (s32, p32), (s8, p8) = f32.predict(x), i8.predict(x)
    assert np.abs(p8 - p32).max() < 0.05 and np.abs(s8 - s32).max() < 0.05
    np.testing.assert_allclose(p8.sum(axis=1), 1.0, atol=1e-5)
    assert not any(isinstance(m, torch.nn.Linear) and type(m) is torch.nn.Linear for m in i8.net.modules())


def test_unknown_or_impossible_precision_is_refused():
    import model

    with pytest.raises(ValueError, match="precision must be one of"):
        model.load(device="cpu", precision="fp8")
