"""The transformers front end, with a tiny random wav2vec2 saved locally by the test."""

import numpy as np
import pytest
import torch

torch.set_num_threads(1)
transformers = pytest.importorskip("transformers", reason="transformers is not installed: the 'hf' front end is optional")

from model.config import tiny_config  # noqa: E402
from model.hf_frontend import HFFrontEnd  # noqa: E402
from model.inference import VoiceToneModel  # noqa: E402
from model.network import VoiceToneNet  # noqa: E402
from model.tokenizer import CharTokenizer  # noqa: E402


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    cfg = transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 8, 4),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, feat_extract_norm="layer",
        do_stable_layer_norm=True, vocab_size=8)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w2v")
    transformers.Wav2Vec2Model(cfg).save_pretrained(path)
    return str(path)


def test_shapes_and_mask(hf_dir):
    fe = HFFrontEnd.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        h, mask = fe(torch.randn(2, 16000) * 0.1, torch.tensor([16000, 8000]))
    assert h.shape[0] == 2 and h.shape[2] == 32
    assert mask.sum(1).tolist() == fe.out_lengths(torch.tensor([16000, 8000])).tolist()
    assert mask[0].all() and not mask[1].all()
    assert torch.all(h[~mask] == 0)


def test_full_model_with_hf_frontend_round_trips(hf_dir, tmp_path):
    cfg = tiny_config(frontend="hf", hf_path=hf_dir)
    tok = CharTokenizer.build(["abc"])
    torch.manual_seed(0)
    m = VoiceToneModel(VoiceToneNet(cfg, len(tok)), tok, "hf-test", torch.device("cpu"))
    x = (np.random.default_rng(0).standard_normal((2, 16000)) * 0.1).astype(np.float32)
    s, p = m.predict(x, [16000, 12000])
    assert s.shape == (2,) and p.shape == (2, 3) and np.isfinite(p).all()
    m.save(tmp_path / "hf.pt", name="hf")
    import model

    loaded = model.load(tmp_path / "hf.pt", device="cpu")
    s2, p2 = loaded.predict(x, [16000, 12000])
    np.testing.assert_allclose(p2, p, atol=1e-6)
