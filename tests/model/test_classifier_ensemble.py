"""Several classifier heads on one encoder: their average, their checkpoint, their independent training."""

import numpy as np
import pytest
import torch
from torch import nn

from model.classifier import ClassifierEnsemble, SentimentClassifier, build_classifier
from model.config import tiny_config
from model.inference import VoiceToneModel
from model.train.common import TrainConfig, train_loop

torch.set_num_threads(1)


def _encoded(seed=0, b=3, t=20, d=32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, d, generator=g)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, 12:] = False
    mask[2, 3:] = False
    return x, mask


@pytest.mark.parametrize("context", ["pool", "conv"])
def test_the_ensemble_gives_the_mean_of_its_heads_probabilities(context):
    torch.manual_seed(0)
    ens = build_classifier(tiny_config(cls_heads=3, cls_context=context)).eval()
    assert isinstance(ens, ClassifierEnsemble) and len(ens.heads) == 3
    x, mask = _encoded()
    with torch.no_grad():
        sent, speech = ens(x, mask)
        each = [h(x, mask) for h in ens.heads]
    want_sent = torch.stack([s.softmax(-1) for s, _ in each]).mean(0)
    want_speech = torch.stack([torch.sigmoid(v) for _, v in each]).mean(0)
    torch.testing.assert_close(sent.softmax(-1), want_sent, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(torch.sigmoid(speech), want_speech, atol=1e-6, rtol=1e-5)
    # the heads are separate random starts, so their outputs differ
    assert not torch.allclose(each[0][0], each[1][0])


def test_one_head_keeps_the_layout_of_every_earlier_checkpoint():
    one = build_classifier(tiny_config())
    assert type(one) is SentimentClassifier and not any(k.startswith("heads.") for k in one.state_dict())
    with pytest.raises(ValueError, match="at least 2"):
        ClassifierEnsemble(tiny_config(), 1)


def test_an_ensemble_checkpoint_loads_and_predicts_the_mean(tmp_path):
    m = VoiceToneModel.untrained(tiny_config(cls_heads=2, cls_context="conv"), device="cpu", seed=4)
    saved = m.save(tmp_path / "ens.pt")
    loaded = VoiceToneModel.from_checkpoint(torch.load(tmp_path / "ens.pt", weights_only=True), torch.device("cpu"))
    assert isinstance(loaded.net.classifier, ClassifierEnsemble) and loaded.version == saved["version"]
    x = (0.1 * np.random.default_rng(0).standard_normal((2, 32000))).astype(np.float32)
    speech, sent = loaded.predict(x, [32000, 12000])
    net = loaded.net.eval()
    with torch.no_grad():
        enc, mask = net.encode(torch.from_numpy(x), torch.tensor([32000, 12000]))
        each = [h(enc, mask) for h in net.classifier.heads]
    np.testing.assert_allclose(sent, torch.stack([s.softmax(-1) for s, _ in each]).mean(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(speech, torch.stack([torch.sigmoid(v) for _, v in each]).mean(0).numpy(), atol=1e-5)


def _fit(tmp, modules, clip_groups, steps=12):
    """Train ``modules`` on one summed loss; module "a" gets gradients of wildly varying size."""
    tc = TrainConfig(manifest="-", out=str(tmp / f"{len(modules)}-{clip_groups is None}.pt"), steps=steps,
                     warmup=1, lr=1e-2, grad_clip=1.0, save_every=0, progress=False, resume=False)
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(4, 3, generator=g) for _ in range(steps)]

    def step_fn(i):
        loss = (modules["b"](xs[i]) ** 2).mean()
        if "a" in modules:
            loss = loss + (10.0 ** (i % 4)) * (modules["a"](xs[i]) ** 2).mean()
        return {"loss": loss}

    train_loop(desc="t", tc=tc, trainable=modules, step_fn=step_fn, batches=lambda s: iter(range(s, steps)),
               device=torch.device("cpu"), clip_groups=clip_groups)
    return modules["b"].weight.detach().clone()


def test_each_clip_group_trains_as_if_alone(tmp_path):
    """Heads trained side by side are clipped one by one: a head's weights end as they would alone;
    one clip over all parameters would let the other head's gradient size change its steps."""
    def fresh():
        torch.manual_seed(0)
        return nn.Linear(3, 2), nn.Linear(3, 2)

    a, b = fresh()
    alone = _fit(tmp_path, {"b": b}, None)
    a, b = fresh()
    grouped = _fit(tmp_path, {"a": a, "b": b}, [list(a.parameters()), list(b.parameters())])
    a, b = fresh()
    together = _fit(tmp_path, {"a": a, "b": b}, None)
    torch.testing.assert_close(grouped, alone)
    assert not torch.allclose(together, alone, atol=1e-4)


def test_select_heads_keeps_the_named_heads(tmp_path):
    """A three-head checkpoint cut to heads 2,0 predicts what those two heads average to; cut to one
    head it is a plain single-head checkpoint; a bad selection is refused."""
    from model.checkpoint import load_checkpoint
    from voicetone.cli import main

    m = VoiceToneModel.untrained(tiny_config(cls_heads=3, cls_context="conv"), device="cpu", seed=5)
    m.save(tmp_path / "three.pt")
    assert main(["train", "select-heads", str(tmp_path / "three.pt"), "--keep", "2,0",
                 "--out", str(tmp_path / "two.pt")]) == 0
    assert main(["train", "select-heads", str(tmp_path / "three.pt"), "--keep", "1",
                 "--out", str(tmp_path / "one.pt")]) == 0
    with pytest.raises(SystemExit, match="distinct heads"):
        main(["train", "select-heads", str(tmp_path / "three.pt"), "--keep", "0,3", "--out", str(tmp_path / "x.pt")])
    two = VoiceToneModel.from_checkpoint(load_checkpoint(tmp_path / "two.pt"), torch.device("cpu"))
    one = VoiceToneModel.from_checkpoint(load_checkpoint(tmp_path / "one.pt"), torch.device("cpu"))
    assert type(one.net.classifier) is SentimentClassifier and len(two.net.classifier.heads) == 2
    x = (0.1 * np.random.default_rng(2).standard_normal((2, 24000))).astype(np.float32)
    net = m.net.eval()
    with torch.no_grad():
        enc, mask = net.encode(torch.from_numpy(x), torch.tensor([24000, 9000]))
        each = [h(enc, mask) for h in net.classifier.heads]
    _, sent2 = two.predict(x, [24000, 9000])
    speech1, sent1 = one.predict(x, [24000, 9000])
    want2 = torch.stack([each[2][0].softmax(-1), each[0][0].softmax(-1)]).mean(0).numpy()
    np.testing.assert_allclose(sent2, want2, atol=1e-5)
    np.testing.assert_allclose(sent1, each[1][0].softmax(-1).numpy(), atol=1e-5)
    np.testing.assert_allclose(speech1, torch.sigmoid(each[1][1]).numpy(), atol=1e-5)
