"""Exported inference paths must match the eager model, on shapes other than the example's."""

import numpy as np
import pytest
import torch

from model.config import tiny_config
from model.export import export_onnx, export_program, export_torchscript
from model.inference import VoiceToneModel

torch.set_num_threads(1)


@pytest.fixture(scope="module", params=[1, 2], ids=lambda k: f"{k}-head")
def tiny(request):
    return VoiceToneModel.untrained(tiny_config(cls_heads=request.param), seed=2)


@pytest.fixture
def inputs():
    gen = torch.Generator().manual_seed(1)
    audio = torch.randn(3, 30000, generator=gen) * 0.1
    return audio, torch.tensor([30000, 1700, 21000])


def _eager(model, audio, lengths):
    s, p = model.predict(audio, lengths)
    return s, p


def test_torchscript_parity(tiny, inputs, tmp_path):
    path = export_torchscript(tiny, tmp_path / "m.ts.pt")
    ts = torch.jit.load(str(path))
    with torch.inference_mode():
        s, p = ts(*inputs)
    es, ep = _eager(tiny, *inputs)
    np.testing.assert_allclose(s.numpy(), es, atol=1e-5)
    np.testing.assert_allclose(p.numpy(), ep, atol=1e-5)


def test_torch_export_parity(tiny, inputs, tmp_path):
    path = export_program(tiny, tmp_path / "m.pt2")
    prog = torch.export.load(str(path)).module()
    with torch.inference_mode():
        s, p = prog(*inputs)
    es, ep = _eager(tiny, *inputs)
    np.testing.assert_allclose(s.numpy(), es, atol=1e-5)
    np.testing.assert_allclose(p.numpy(), ep, atol=1e-5)


def test_onnx_parity(tiny, inputs, tmp_path):
    pytest.importorskip("onnxscript", reason="ONNX export needs onnxscript")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is needed to run the exported graph")
    path = export_onnx(tiny, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    audio, lengths = inputs
    s, p = sess.run(None, {"audio": audio.numpy(), "lengths": lengths.numpy()})
    es, ep = _eager(tiny, *inputs)
    np.testing.assert_allclose(s, es, atol=1e-4)
    np.testing.assert_allclose(p, ep, atol=1e-4)
