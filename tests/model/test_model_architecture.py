"""Shapes, masks, tokenizer, padding invariance and empty windows of the inference path."""

import numpy as np
import pytest
import torch

from model.config import tiny_config
from model.frontend import SUBSAMPLING, ConvSubsampler, MaskedPredictionHead, SSLFrontEnd, pretrain_loss, span_mask
from model.inference import VoiceToneModel
from model.kmeans import assign, kmeans
from model.tokenizer import BOS, EOS, CharTokenizer

torch.set_num_threads(1)


@pytest.fixture(scope="module", params=[("transformer", "pool"), ("lstm", "conv")], ids=lambda p: "-".join(p))
def tiny_model(request):
    encoder, head = request.param
    return VoiceToneModel.untrained(tiny_config(asr_encoder=encoder, cls_context=head), device="cpu", seed=1)


def test_frontend_shapes_and_mask():
    cfg = tiny_config()
    fe = SSLFrontEnd(cfg).eval()
    h, mask = fe(torch.randn(3, 16000) * 0.1, torch.tensor([16000, 4000, 0]))
    frames = 1 + (16000 - 512) // 160
    assert h.shape == (3, -(-frames // 4), cfg.d_model)
    flen = torch.tensor([frames, 1 + (4000 - 512) // 160, 1])
    assert mask.sum(1).tolist() == ConvSubsampler.out_lengths(flen).tolist()
    assert torch.all(h[~mask] == 0) and torch.isfinite(h).all()


def test_span_mask_respects_lengths():
    gen = torch.Generator().manual_seed(0)
    m = span_mask(torch.tensor([50, 10, 1]), 50, prob=0.1, span=5, generator=gen)
    assert m.shape == (3, 50)
    assert m.sum(1).min() >= 1
    assert not m[1, 10:].any() and not m[2, 1:].any()


def test_pretrain_loss_is_finite_and_differentiable():
    cfg = tiny_config()
    fe, head = SSLFrontEnd(cfg), MaskedPredictionHead(cfg.d_model, cfg.n_clusters)
    centroids = torch.randn(cfg.n_clusters, 3 * cfg.n_mfcc)
    loss, acc = pretrain_loss(fe, head, torch.randn(2, 16000) * 0.1, torch.tensor([16000, 9000]), centroids)
    loss.backward()
    assert torch.isfinite(loss) and 0 <= float(acc) <= 1
    assert fe.mask_embedding.grad is not None and fe.mask_embedding.grad.abs().sum() > 0


def test_pretrain_reconstruction_adds_a_loss_on_the_masked_frames():
    cfg = tiny_config()
    audio, lengths = torch.randn(2, 16000) * 0.1, torch.tensor([16000, 9000])
    centroids = torch.randn(cfg.n_clusters, 3 * cfg.n_mfcc)
    torch.manual_seed(0)
    fe = SSLFrontEnd(cfg)
    plain = MaskedPredictionHead(cfg.d_model, cfg.n_clusters)
    loss_plain, _ = pretrain_loss(fe, plain, audio, lengths, centroids, torch.Generator().manual_seed(1))
    cfg.recon_weight = 1.0
    head = MaskedPredictionHead(cfg.d_model, cfg.n_clusters, recon_dim=SUBSAMPLING * cfg.n_mels)
    head.load_state_dict(plain.state_dict(), strict=False)   # same cluster head, plus the reconstruction
    fe.eval()   # no dropout: the two losses differ by the reconstruction term only
    loss_plain_eval, _ = pretrain_loss(fe, plain, audio, lengths, centroids, torch.Generator().manual_seed(1))
    loss, acc = pretrain_loss(fe, head, audio, lengths, centroids, torch.Generator().manual_seed(1))
    loss.backward()
    assert torch.isfinite(loss) and float(loss) > float(loss_plain_eval) and torch.isfinite(loss_plain)
    assert head.recon.weight.grad is not None and head.recon.weight.grad.abs().sum() > 0


def test_kmeans_recovers_separated_clusters():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(100, 2, generator=gen) for c in centres])
    c, inertia = kmeans(x, 3, seed=0)
    labels = assign(x, c)
    # each true cluster maps to one k-means cluster, and they are distinct
    groups = [set(labels[i * 100:(i + 1) * 100].tolist()) for i in range(3)]
    assert all(len(g) == 1 for g in groups) and len(set.union(*groups)) == 3
    assert inertia < 0.1


def test_tokenizer_round_trip():
    tok = CharTokenizer.build(["I am so happy!", "this is awful"])
    ids = tok.encode("positive", "I am so   HAPPY!")
    assert ids[0] == BOS and ids[-1] == EOS and ids[1] == tok.index["<positive>"]
    assert len(ids) == 3 + len("i am so happy!")
    assert tok.decode(ids[1:]) == ("positive", "i am so happy!")
    assert tok.decode(tok.encode("negative", "this is awful")) == ("negative", "this is awful")
    assert tok.decode(tok.encode(None, "zqx")) == (None, "")  # unseen chars -> <unk>, dropped
    assert CharTokenizer(tok.vocab).vocab == tok.vocab


def test_padding_invariance(tiny_model):
    rng = np.random.default_rng(0)
    short = (0.2 * rng.standard_normal(40000)).astype(np.float32)
    long = (0.2 * rng.standard_normal(80000)).astype(np.float32)
    s_alone, p_alone = tiny_model.predict(short[None])
    batch = np.zeros((2, 80000), np.float32)
    batch[0, :40000] = short
    batch[1] = long
    s_b, p_b = tiny_model.predict(batch, [40000, 80000])
    np.testing.assert_allclose(s_b[0], s_alone[0], atol=1e-4)
    np.testing.assert_allclose(p_b[0], p_alone[0], atol=1e-4)
    # and the longer window differs (the check is not vacuous)
    assert not np.allclose(p_b[1], p_b[0], atol=1e-4)


def test_predict_handles_silence_and_empty(tiny_model):
    s, p = tiny_model.predict(np.zeros((3, 80000), np.float32), [80000, 0, 10])
    assert s.dtype == np.float32 and p.shape == (3, 3)
    assert np.isfinite(s).all() and np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    s0, p0 = tiny_model.predict(np.zeros((0, 80000), np.float32))
    assert s0.shape == (0,) and p0.shape == (0, 3)


def test_predict_accepts_torch_and_transcribe_returns_labels(tiny_model):
    x = torch.randn(2, 16000) * 0.1
    s_np, p_np = tiny_model.predict(x.numpy())
    s_t, p_t = tiny_model.predict(x)
    np.testing.assert_allclose(p_np, p_t)
    out = tiny_model.transcribe(x, [16000, 8000])
    assert len(out) == 2
    assert all(label in ("positive", "neutral", "negative") and isinstance(text, str) for label, text in out)


def test_lstm_asr_encoder_trains_and_ignores_padding():
    from model.asr import ASRModel

    cfg = tiny_config(asr_encoder="lstm")
    asr = ASRModel(cfg, cfg.d_model, vocab_size=12).eval()
    x = torch.randn(2, 30, cfg.d_model)
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[1, 20:] = False
    out = asr.encode(x, mask)
    alone = asr.encode(x[1:, :20], torch.ones(1, 20, dtype=torch.bool))
    torch.testing.assert_close(out[1, :20], alone[0], atol=1e-5, rtol=1e-5)
    assert torch.all(out[1, 20:] == 0)
    asr.train()
    tokens = torch.tensor([[BOS, 5, 6, 7, EOS], [BOS, 5, 8, EOS, 0]])
    loss = asr.loss(asr.encode(x, mask), mask, tokens)["loss"]
    loss.backward()
    assert torch.isfinite(loss) and asr.encoder.layers[0].weight_ih_l0.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="asr_encoder"):
        ASRModel(tiny_config(asr_encoder="gru"), cfg.d_model, vocab_size=12)


def test_untrained_model_is_deterministic():
    a = VoiceToneModel.untrained(tiny_config(), seed=3)
    b = VoiceToneModel.untrained(tiny_config(), seed=3)
    assert a.version == b.version and a.version.startswith("untrained-")
    assert a.weights_hash() == b.weights_hash()


def test_apply_overrides_parses_json_values_and_rejects_unknown_fields():
    from model.config import ModelConfig, apply_overrides

    cfg = apply_overrides(ModelConfig(), ["d_model=128", "dropout=0.2", "asr_encoder=transformer"])
    assert (cfg.d_model, cfg.dropout, cfg.asr_encoder) == (128, 0.2, "transformer")
    with pytest.raises(SystemExit, match="no field 'width'"):
        apply_overrides(ModelConfig(), ["width=3"])
