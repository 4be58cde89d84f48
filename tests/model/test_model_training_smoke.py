"""All three training stages end to end on a tiny synthetic corpus (tiny config, CPU).

Each stage's loss must fall, and the classifier checkpoint must load and
predict through ``model.load`` -- the path the streaming worker uses.
"""

import json

import numpy as np
import pytest
import torch

import model
from model.checkpoint import load_checkpoint
from model.config import tiny_config
from model.train.asr_stage import run_asr
from model.train.classifier_stage import run_classifier
from model.train.common import TrainConfig, metrics_path, state_path
from model.train.pretrain import run_pretrain
from schemas.wav import write_wav

torch.set_num_threads(1)
SR = 16000
PHRASES = {"positive": ["great thanks", "so happy"], "neutral": ["okay sure", "call me"],
           "negative": ["this is bad", "awful no"]}


def _clip(sentiment: str, rng: np.random.Generator) -> np.ndarray:
    """Stand-ins for tone: rising bright chirps, flat mid tones, falling low buzz."""
    n = int(SR * rng.uniform(0.9, 1.3))
    t = np.arange(n) / SR
    if sentiment == "positive":
        f = 300 + 400 * t / t[-1]
        x = np.sin(2 * np.pi * np.cumsum(f) / SR) + 0.3 * np.sin(4 * np.pi * np.cumsum(f) / SR)
    elif sentiment == "neutral":
        x = np.sin(2 * np.pi * 220 * t)
    else:
        f = 180 - 80 * t / t[-1]
        x = np.sign(np.sin(2 * np.pi * np.cumsum(f) / SR)) * 0.5
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    return (0.3 * x * env + 0.01 * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    lines = []
    for sentiment, phrases in PHRASES.items():
        for i in range(8):
            path = root / f"{sentiment}{i}.wav"
            write_wav(path, SR, _clip(sentiment, rng))
            lines.append({"audio": path.name, "transcript": phrases[i % 2], "sentiment": sentiment,
                          "transcript_source": "human", "sentiment_source": "human"})
    for i in range(6):  # non-speech: silence and faint noise
        path = root / f"quiet{i}.wav"
        write_wav(path, SR, (0.003 * i * rng.standard_normal(SR)).astype(np.float32))
        lines.append({"audio": path.name, "speech": False})
    m = root / "train.jsonl"
    m.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return m


def _falls(summary):
    return summary["last"]["loss"] < summary["first"]["loss"]


def test_three_stages_end_to_end(manifest, tmp_path):
    cfg = tiny_config()
    common = dict(manifest=str(manifest), batch_size=8, warmup=5, save_every=10, device="cpu",
                  augment=False, progress=False, extra={"eval_items": 8})

    pre = tmp_path / "pretrain.pt"
    s1 = run_pretrain(TrainConfig(out=str(pre), steps=40, lr=3e-3, **common), cfg)
    assert _falls(s1), s1["loss_curve"]
    assert load_checkpoint(pre)["tensors"]["kmeans"].shape == (cfg.n_clusters, 3 * cfg.n_mfcc)

    asr = tmp_path / "asr.pt"
    s2 = run_asr(TrainConfig(out=str(asr), init=str(pre), steps=40, lr=3e-3, **common))
    assert _falls(s2), s2["loss_curve"]
    assert 0.0 <= s2["decode_cer"] and 0.0 <= s2["decode_sentiment_acc"] <= 1.0

    cls = tmp_path / "classifier.pt"
    s3 = run_classifier(TrainConfig(out=str(cls), init=str(asr), steps=30, lr=3e-3, **common), head="conv")
    assert _falls(s3), s3["loss_curve"]

    for path in (pre, asr, cls):  # metrics JSON beside each checkpoint, resumable state saved
        assert json.loads(metrics_path(path).read_text())["steps"] > 0
        assert state_path(path).exists()
    ck = load_checkpoint(cls)
    assert set(ck["metrics"]) == {"pretrain", "asr", "classifier"}

    m = model.load(cls, device="cpu")
    assert m.version == ck["version"] and m.sample_rate == SR
    assert m.net.cfg.cls_context == "conv" and m.net.classifier.context is not None  # the head travels in the config
    x = np.zeros((2, 5 * SR), np.float32)
    x[0, :SR] = _clip("positive", np.random.default_rng(1))[:SR]
    speech, sentiment = m.predict(x, [SR, 5 * SR])
    assert speech.shape == (2,) and sentiment.shape == (2, 3)
    assert np.isfinite(sentiment).all() and np.allclose(sentiment.sum(1), 1, atol=1e-5)
    assert len(m.transcribe(x, [SR, 5 * SR])) == 2


def test_resume_continues_from_saved_state(manifest, tmp_path):
    """A run stopped at step 10 and resumed to 20 ends with the same weights as one run of 20."""
    cfg = tiny_config()
    common = dict(manifest=str(manifest), batch_size=8, warmup=2, save_every=10, device="cpu",
                  augment=False, progress=False, lr=3e-3)
    a = tmp_path / "a.pt"
    run_pretrain(TrainConfig(out=str(a), steps=20, **common), cfg)
    b = tmp_path / "b.pt"
    first = run_pretrain(TrainConfig(out=str(b), steps=20, stop_at=10, **common), cfg)
    assert first["steps"] == 10
    # the rerun finds b's state at step 10 and runs only the remaining 10
    s = run_pretrain(TrainConfig(out=str(b), steps=20, **common), cfg)
    assert s["steps"] == 20
    wa = load_checkpoint(a)["state"]["frontend"]
    wb = load_checkpoint(b)["state"]["frontend"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=1e-4)


def test_asr_continues_from_an_asr_checkpoint(manifest, tmp_path):
    """--init with an ASR checkpoint keeps its trained branch (a warm start, under new settings);
    a checkpoint of another vocabulary is refused; a classifier on the result loads for inference."""
    common = dict(manifest=str(manifest), batch_size=8, warmup=2, save_every=0, device="cpu",
                  augment=False, progress=False, lr=3e-3, extra={"eval_items": 4})
    pre, asr, more = tmp_path / "pretrain.pt", tmp_path / "asr.pt", tmp_path / "asr-more.pt"
    run_pretrain(TrainConfig(out=str(pre), steps=5, **common), tiny_config())
    first = run_asr(TrainConfig(out=str(asr), init=str(pre), steps=30, **common))
    s = run_asr(TrainConfig(out=str(more), init=str(asr), steps=10, **common))
    # the warm start begins near where the first run ended, far below a fresh start
    assert s["first"]["loss"] < first["first"]["loss"] - 0.5, (first["first"], s["first"])
    assert s["first"]["loss"] < first["last"]["loss"] + 0.5
    other = manifest.with_name("other.jsonl")
    other.write_text(manifest.read_text().replace('"transcript": "', '"transcript": "zq '))
    with pytest.raises(ValueError, match="vocabulary"):
        run_asr(TrainConfig(out=str(tmp_path / "x.pt"), init=str(asr), steps=1,
                            **{**common, "manifest": str(other)}))
    cls = tmp_path / "cls.pt"
    run_classifier(TrainConfig(out=str(cls), init=str(more), steps=3, **common))
    m = model.load(cls, device="cpu")
    assert m.predict(np.zeros((1, SR), np.float32))[1].shape == (1, 3)


def test_asr_stage_learns_a_frame_level_phone_target(manifest, tmp_path):
    """With phone timings in the manifest (`voicetone data align`) and --phone-weight, the encoder is
    also trained to name the phone under each frame: that loss falls and its accuracy is reported;
    without timings the option is refused rather than silently ignored."""
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    for x in lines:   # the clips' two halves as two "phones" (chirps have no real ones): learnable from audio
        if x.get("transcript"):
            x["phones"] = [[x["sentiment"][:3] + "-a", 0.0, 0.5], [x["sentiment"][:3] + "-b", 0.5, 1.3]]
    aligned = manifest.with_name("aligned.jsonl")
    aligned.write_text("".join(json.dumps(x) + "\n" for x in lines))
    common = dict(batch_size=8, warmup=2, save_every=0, device="cpu", augment=False, progress=False, lr=3e-3)
    pre = tmp_path / "pretrain.pt"
    run_pretrain(TrainConfig(manifest=str(manifest), out=str(pre), steps=5, **common), tiny_config())
    s = run_asr(TrainConfig(manifest=str(aligned), out=str(tmp_path / "asr.pt"), init=str(pre), steps=40,
                            extra={"eval_items": 4, "phone_weight": 1.0}, **common))
    assert s["last"]["phone_ce"] < s["first"]["phone_ce"] - 0.15, (s["first"], s["last"])   # ln 6 = 1.79 at chance
    assert s["last"]["phone_acc"] > s["first"]["phone_acc"]
    assert len(load_checkpoint(tmp_path / "asr.pt")["metrics"]["asr"]["phones"]) == 6
    with pytest.raises(ValueError, match="phone"):
        run_asr(TrainConfig(manifest=str(manifest), out=str(tmp_path / "x.pt"), init=str(pre), steps=1,
                            extra={"phone_weight": 1.0}, **common))


def test_asr_stage_learns_a_word_spotting_target(manifest, tmp_path):
    """With --bow-weight the encoder is also trained to name each transcript word in some frame:
    that loss falls and its F1 is reported; the head is training-only (not in the checkpoint)."""
    common = dict(manifest=str(manifest), batch_size=8, warmup=2, save_every=0, device="cpu",
                  augment=False, progress=False, lr=3e-3)
    pre = tmp_path / "pretrain.pt"
    run_pretrain(TrainConfig(out=str(pre), steps=5, **common), tiny_config())
    s = run_asr(TrainConfig(out=str(tmp_path / "asr.pt"), init=str(pre), steps=80,
                            extra={"eval_items": 4, "bow_weight": 1.0}, **common))
    assert s["last"]["bow_loss"] < s["first"]["bow_loss"] - 0.3, (s["first"], s["last"])
    assert s["last"]["bow_f1"] > s["first"]["bow_f1"]
    ck = load_checkpoint(tmp_path / "asr.pt")
    assert ck["metrics"]["asr"]["bow_words"] == 13   # the fixture's phrases: 13 words, each in >= 2 transcripts
    assert not any(k.startswith("words") for k in ck["state"]["asr"])


def test_asr_stage_keeps_the_front_end_frozen_unless_told_to_train_it(manifest, tmp_path):
    """The design's stage 2 leaves the pretrained front end as it was; --train-frontend trains it too."""
    common = dict(manifest=str(manifest), batch_size=8, warmup=2, save_every=0, device="cpu",
                  augment=False, progress=False, lr=3e-3)
    pre = tmp_path / "pretrain.pt"
    run_pretrain(TrainConfig(out=str(pre), steps=5, **common), tiny_config())
    before = load_checkpoint(pre)["state"]["frontend"]
    changed = {}
    for flag in (False, True):
        out = tmp_path / f"asr-{flag}.pt"
        run_asr(TrainConfig(out=str(out), init=str(pre), steps=6, extra={"eval_items": 2, "train_frontend": flag},
                            **common))
        after = load_checkpoint(out)["state"]["frontend"]
        changed[flag] = [k for k, v in before.items() if v.is_floating_point() and not torch.equal(v, after[k])]
        assert load_checkpoint(out)["metrics"]["asr"].get("train_frontend", False) is flag
    assert changed[False] == []
    assert len(changed[True]) > 0.5 * sum(v.is_floating_point() for v in before.values())


def test_a_deeper_encoder_warm_started_from_a_shallower_one_begins_where_it_ended(manifest, tmp_path):
    """--init with an ASR checkpoint of fewer encoder layers: the extra layers start as identities,
    so the grown network's encoder output equals the trained one's before any step."""
    from model.network import VoiceToneNet
    from model.tokenizer import CharTokenizer
    from model.train.asr_stage import warm_start

    common = dict(manifest=str(manifest), batch_size=8, warmup=2, save_every=0, device="cpu",
                  augment=False, progress=False, lr=3e-3, extra={"eval_items": 4})
    pre, asr = tmp_path / "pretrain.pt", tmp_path / "asr.pt"
    run_pretrain(TrainConfig(out=str(pre), steps=5, **common), tiny_config())
    run_asr(TrainConfig(out=str(asr), init=str(pre), steps=10, **common), tiny_config())
    ck = load_checkpoint(asr)
    tok = CharTokenizer(ck["vocab"])
    nets = []
    for layers in (1, 3):
        net = VoiceToneNet(tiny_config(asr_layers=layers), len(tok))
        net.frontend.load_state_dict(ck["state"]["frontend"])
        warm_start(net, str(asr), tok)
        nets.append(net.eval())
    audio = torch.from_numpy(np.random.default_rng(1).standard_normal((2, SR)).astype(np.float32) * 0.1)
    lengths = torch.tensor([SR, SR // 2])
    with torch.no_grad():
        a, _ = nets[0].encode(audio, lengths)
        b, _ = nets[1].encode(audio, lengths)
    torch.testing.assert_close(a, b)
    assert nets[1].asr.encoder.layers[2].attn.out.weight.abs().sum() == 0


def test_every_stage_is_deterministic_given_its_seed_augmentation_included(manifest, tmp_path):
    """The recipe's claim to reproduce the shipped checkpoint rests on this: the same command (same
    seed, augmentation on, loader processes) gives the same weights, and another seed gives other
    weights. (Not so with --max-minutes, whose step count follows the machine's speed: the recipe
    names the step count each run reached.)"""
    common = dict(manifest=str(manifest), batch_size=8, warmup=2, save_every=0, device="cpu",
                  augment=True, progress=False, lr=3e-3, extra={"eval_items": 2})

    def recipe(tag, seed):
        pre, asr, cls = (tmp_path / f"{tag}-{stage}.pt" for stage in ("pre", "asr", "cls"))
        run_pretrain(TrainConfig(out=str(pre), steps=4, seed=seed, **common), tiny_config())
        run_asr(TrainConfig(out=str(asr), init=str(pre), steps=4, seed=seed,
                            **{**common, "extra": {"eval_items": 2, "train_frontend": True}}))
        run_classifier(TrainConfig(out=str(cls), init=str(asr), steps=4, seed=seed,   # a loader process, as
                                   **{**common, "num_workers": 1}))                  # the recipe's --workers 1
        return [load_checkpoint(p)["state"] for p in (pre, asr, cls)]

    a, b, c = recipe("a", 0), recipe("b", 0), recipe("c", 1)
    for stage_a, stage_b, stage_c in zip(a, b, c):
        flat = {f"{part}.{k}": (v, stage_b[part][k], stage_c[part][k])
                for part, tensors in stage_a.items() for k, v in tensors.items() if v.is_floating_point()}
        assert flat
        for name, (x, y, _) in flat.items():
            assert torch.equal(x, y), name
        assert any(not torch.equal(x, z) for x, _, z in flat.values())


def test_weight_average_follows_the_weights_and_ramps_its_decay():
    from model.train.common import WeightAverage

    lin = torch.nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.fill_(0.0)
    avg = WeightAverage({"lin": lin}, decay=0.9)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    avg.update(0)                     # decay min(0.9, 1/10) = 0.1: the average moves 90% of the way
    assert torch.allclose(avg.shadow["lin"]["weight"], torch.full((1, 2), 0.9))
    for step in range(1, 200):
        avg.update(step)
    assert torch.allclose(avg.shadow["lin"]["weight"], torch.ones(1, 2), atol=1e-6)
    with torch.no_grad():
        lin.weight.fill_(-5.0)
    avg.copy_to_modules()
    assert torch.allclose(lin.weight, torch.ones(1, 2), atol=1e-6)
    with pytest.raises(ValueError):
        WeightAverage({"lin": lin}, decay=1.0)


def test_classifier_stage_ends_on_the_moving_average_and_resumes_it(manifest, tmp_path):
    """--ema: the checkpoint holds the average, not the last step's weights, and an interrupted
    run resumes the average as well as the weights (same result as one uninterrupted run)."""
    common = dict(manifest=str(manifest), batch_size=8, warmup=2, save_every=3, device="cpu",
                  augment=False, progress=False, lr=3e-3, extra={"eval_items": 2})
    pre, asr = tmp_path / "pre.pt", tmp_path / "asr.pt"
    run_pretrain(TrainConfig(out=str(pre), steps=3, **common), tiny_config())
    run_asr(TrainConfig(out=str(asr), init=str(pre), steps=3, **common))

    whole, parts, plain = tmp_path / "whole.pt", tmp_path / "parts.pt", tmp_path / "plain.pt"
    run_classifier(TrainConfig(out=str(whole), init=str(asr), steps=12, ema=0.9, **common))
    run_classifier(TrainConfig(out=str(parts), init=str(asr), steps=12, ema=0.9, stop_at=6, **common))
    run_classifier(TrainConfig(out=str(parts), init=str(asr), steps=12, ema=0.9, **common))
    run_classifier(TrainConfig(out=str(plain), init=str(asr), steps=12, **common))

    saved = load_checkpoint(whole)["state"]["classifier"]
    last_raw = torch.load(state_path(whole), weights_only=True)["modules"]["classifier"]
    average = torch.load(state_path(whole), weights_only=True)["ema"]["classifier"]
    floats = [k for k, v in saved.items() if v.is_floating_point()]
    assert all(torch.equal(saved[k], average[k]) for k in floats)
    assert any(not torch.equal(saved[k], last_raw[k]) for k in floats)
    assert all(torch.equal(saved[k], load_checkpoint(parts)["state"]["classifier"][k]) for k in floats)
    plain_saved = load_checkpoint(plain)["state"]["classifier"]
    assert all(torch.equal(plain_saved[k], last_raw[k]) for k in floats)   # same run without the average
    # each stage's checkpoint says how it was trained, the average included
    metrics = load_checkpoint(whole)["metrics"]
    assert metrics["classifier"]["run"] == {"seed": 0, "lr": 3e-3, "batch_size": 8, "warmup": 2, "window_s": 5.0,
                                            "ema": 0.9}
    assert load_checkpoint(plain)["metrics"]["classifier"]["run"]["ema"] == 0.0
    assert metrics["asr"]["run"]["ema"] == 0.0 and metrics["pretrain"]["run"]["lr"] == 3e-3
    with pytest.raises(ValueError, match="without --ema"):
        run_classifier(TrainConfig(out=str(plain), init=str(asr), steps=14, ema=0.9, **common))


def test_classifier_heads_train_side_by_side(manifest, tmp_path):
    """--heads 2: one run fits two heads from different random starts on the one frozen encoder; the
    checkpoint records both, reports each head's figures, and loads as their average."""
    common = dict(manifest=str(manifest), batch_size=8, warmup=2, save_every=0, device="cpu",
                  augment=False, progress=False, lr=3e-3, extra={"eval_items": 8})
    pre, asr, cls = tmp_path / "pretrain.pt", tmp_path / "asr.pt", tmp_path / "cls.pt"
    run_pretrain(TrainConfig(out=str(pre), steps=5, **common), tiny_config())
    run_asr(TrainConfig(out=str(asr), init=str(pre), steps=5, **common))
    s = run_classifier(TrainConfig(out=str(cls), init=str(asr), steps=20, **common), head="conv", heads=2)
    assert _falls(s), s["loss_curve"]
    assert len(s["eval_heads"]) == 2 and all(0 <= h["eval_macro_recall"] <= 1 for h in s["eval_heads"])
    ck = load_checkpoint(cls)
    assert ck["config"]["cls_heads"] == 2
    state = ck["state"]["classifier"]
    w0, w1 = state["heads.0.mlp.1.weight"], state["heads.1.mlp.1.weight"]
    assert not torch.equal(w0, w1)
    # the encoder stayed frozen: the same weights as the asr stage's
    for k, v in load_checkpoint(asr)["state"]["asr"].items():
        assert torch.equal(v, ck["state"]["asr"][k])
    m = model.load(cls, device="cpu")
    speech, sentiment = m.predict(np.zeros((1, SR), np.float32) + 0.01, [SR])
    assert np.allclose(sentiment.sum(1), 1, atol=1e-5) and 0 <= speech[0] <= 1


def test_progress_reaches_a_log_that_is_not_a_terminal(manifest, tmp_path, monkeypatch, caplog):
    """rich draws its bar only on a terminal; a stage run in the background or in CI logs its progress."""
    import logging

    from model import progress

    monkeypatch.setattr(progress, "EVERY_S", 0.0)
    with caplog.at_level(logging.INFO, logger="model.train.common"):
        run_pretrain(TrainConfig(manifest=str(manifest), out=str(tmp_path / "p.pt"), steps=6, batch_size=4,
                                 warmup=1, device="cpu", augment=False, progress=True), tiny_config())
    steps = [r.getMessage() for r in caplog.records if " of 6 (" in r.getMessage()]
    assert [m.split(" of ")[0].split()[-1] for m in steps] == ["1", "2", "3", "4", "5", "6"], steps
