"""Manifest round trips and the windowed dataset built on it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model.data.dataset import WindowDataset, collate_windows, wav_duration
from model.data.manifest import SENTIMENTS, ManifestEntry, ManifestError, read_manifest, write_manifest
from schemas.wav import write_wav


def test_label_order_is_fixed():
    assert SENTIMENTS == ("positive", "neutral", "negative")
    assert ManifestEntry(audio="a.wav", sentiment="negative").label_index == 2
    assert ManifestEntry(audio="a.wav").label_index == -1
    assert ManifestEntry(audio="a.wav", speech=False).label_index == -1


def test_round_trip_keeps_fields_and_relative_paths(tmp_path):
    (tmp_path / "clips").mkdir()
    entries = [
        ManifestEntry(audio=str(tmp_path / "clips" / "a.wav"), transcript="hello there", sentiment="positive",
                      transcript_source="human", sentiment_source="pseudo", group={"voice": "f1"}, split="train"),
        ManifestEntry(audio=str(tmp_path / "clips" / "noise.wav"), speech=False, start_s=1.0, end_s=3.5),
    ]
    write_manifest(tmp_path / "m.jsonl", entries)
    lines = (tmp_path / "m.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["audio"] == "clips/a.wav"
    assert json.loads(lines[1])["speech"] is False
    back = read_manifest(tmp_path / "m.jsonl")
    assert [e.model_dump() for e in back] == [e.model_dump() for e in entries]


def test_bad_line_is_reported_with_its_number(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"audio": "a.wav"}\n\n{"audio": "b.wav", "sentiment": "happy"}\n')
    with pytest.raises(ManifestError, match=r"m.jsonl:3: sentiment"):
        read_manifest(path)
    path.write_text('{"audio": "a.wav"}\n{"audio": \n')
    with pytest.raises(ManifestError, match=r"m.jsonl:2: not valid JSON"):
        read_manifest(path)


def test_inconsistent_entries_are_rejected():
    with pytest.raises(ValueError):
        ManifestEntry(audio="a.wav", start_s=2.0, end_s=1.0)
    with pytest.raises(ValueError):
        ManifestEntry(audio="a.wav", speech=False, sentiment="neutral")


def _ramp(tmp_path, name, seconds, rate):
    x = (np.arange(int(seconds * rate)) / (seconds * rate)).astype(np.float32) * 0.9
    write_wav(tmp_path / name, rate, x)
    return str(tmp_path / name)


def test_fixed_windows_cover_a_long_recording(tmp_path):
    path = _ramp(tmp_path, "long.wav", 12.0, 8000)
    assert wav_duration(path) == pytest.approx(12.0)
    ds = WindowDataset([ManifestEntry(audio=path, sentiment="neutral", transcript="words")],
                       window_s=5.0, hop_s=2.5, random_crop=False)
    assert len(ds) == 4  # starts 0, 2.5, 5.0, 7.0 (last aligned to the end)
    starts = [ds[i]["start_s"] for i in range(len(ds))]
    assert starts == pytest.approx([0.0, 2.5, 5.0, 7.0], abs=1e-3)
    item = ds[3]
    assert item["audio"].shape == (80000,)
    assert item["transcript"] is None  # a crop does not carry the whole transcript
    assert item["sentiment"] == 1
    # resampled 8 kHz ramp: the last window ends at the ramp's end
    assert float(item["audio"][-100:].mean()) == pytest.approx(0.9, abs=0.01)


def test_random_crops_change_per_epoch_and_short_clips_pad(tmp_path):
    long = _ramp(tmp_path, "long.wav", 11.0, 16000)
    short = _ramp(tmp_path, "short.wav", 2.0, 16000)
    entries = [ManifestEntry(audio=long, sentiment="positive"),
               ManifestEntry(audio=short, transcript="hi", speech=True, group={"voice": "m"})]
    ds = WindowDataset(entries, random_crop=True, seed=3)
    assert len(ds) == 4  # ceil(11/5) crops + 1 short clip
    first = [ds[i]["start_s"] for i in range(3)]
    ds.set_epoch(1)
    second = [ds[i]["start_s"] for i in range(3)]
    assert first != second
    assert all(0.0 <= s <= 6.0 for s in first + second)
    batch = collate_windows([ds[0], ds[3]])
    assert batch["audio"].shape == (2, 80000)
    assert batch["lengths"].tolist() == [80000, 32000]
    assert torch.all(batch["audio"][1, 32000:] == 0)
    assert batch["sentiment"].tolist() == [0, -1]
    assert batch["transcripts"] == [None, "hi"]
    assert batch["groups"][1] == {"voice": "m"}


def test_segment_bounds_and_augment_are_applied(tmp_path):
    path = _ramp(tmp_path, "long.wav", 10.0, 16000)
    seen = []

    def gain(x, rng):
        seen.append(rng.random())
        return torch.from_numpy(np.concatenate([x * 0.5, x[:100]]))

    ds = WindowDataset([ManifestEntry(audio=path, start_s=4.0, end_s=6.0, transcript="mid")], augment=gain)
    item = ds[0]
    assert item["transcript"] == "mid"
    assert item["audio"].shape == (32000 + 100,)  # whole segment: augmented length kept
    assert float(item["audio"][0]) == pytest.approx(0.5 * 0.9 * 0.4, abs=1e-3)
    assert len(ds.cache) == 1


def test_loader_with_balanced_sampler_and_augmenter(tmp_path):
    from torch.utils.data import DataLoader

    from model.data.augment import WaveformAugmenter
    from model.data.sampling import uniform_label_sampler

    entries = [ManifestEntry(audio=_ramp(tmp_path, "long.wav", 16.0, 16000), sentiment="neutral"),
               ManifestEntry(audio=_ramp(tmp_path, "pos.wav", 3.0, 16000), sentiment="positive", transcript="yes"),
               ManifestEntry(audio=_ramp(tmp_path, "noise.wav", 2.0, 16000), speech=False)]
    ds = WindowDataset(entries, augment=WaveformAugmenter(p_reverb=0.5, p_noise=0.5, p_telephone=0.5))
    assert ds.item_labels() == [1, 1, 1, 1, 0, -1]
    sampler = uniform_label_sampler(ds.item_labels(), 40, seed=0)
    batches = list(DataLoader(ds, batch_size=8, sampler=sampler, collate_fn=collate_windows))
    labels = torch.cat([b["sentiment"] for b in batches])
    assert len(labels) == 40 and set(labels.tolist()) == {0, 1}
    for b in batches:
        for row, n in enumerate(b["lengths"].tolist()):
            # cropped windows are trimmed back to 5 s; the whole 3 s clip keeps its speed-changed length
            assert n <= 80000 if b["transcripts"][row] is None else abs(n - 48000) <= 48000 * 0.055


def test_batch_stream_keys_items_by_epoch_across_one_loader(tmp_path):
    """The run-long loader gives each epoch's own crops, in order, with and without workers,
    the same items that set_epoch + indexing give, and resumes mid-run at the right batch."""
    from model.train.common import TrainConfig, batch_stream, shuffled_order

    long = _ramp(tmp_path, "long.wav", 11.0, 16000)
    entries = [ManifestEntry(audio=long, sentiment="positive"), ManifestEntry(audio=long, sentiment="negative")]
    ds = WindowDataset(entries, random_crop=True, seed=3)  # 6 items: 3 batches of 2 per epoch
    order = shuffled_order(len(ds), seed=1)

    def expected(step: int) -> torch.Tensor:  # the old way: set the epoch, index by item
        epoch, b = divmod(step, 3)
        ds.set_epoch(epoch)
        return collate_windows([ds[i] for i in order(epoch)[2 * b:2 * b + 2]])["audio"]

    for workers in (0, 2):
        tc = TrainConfig(manifest="-", out="-", batch_size=2, num_workers=workers)
        stream = batch_stream(ds, order, tc, start_step=2)
        for step in range(2, 8):  # crosses two epoch boundaries
            assert torch.equal(next(stream)["audio"], expected(step)), (workers, step)
    ds.set_epoch(0)
    assert not torch.equal(expected(0), expected(3))  # epochs do differ


def test_step_budget_fits_the_measured_rate_inside_the_warmup():
    from model.train.common import StepBudget, TrainConfig

    tc = TrainConfig(manifest="m", out="o", steps=10_000, warmup=400, time_budget_s=100.0)
    b = StepBudget(tc, start=0, t0=0.0, skip=30, measure=60)
    # slow cold start (10 s for 30 steps), then 10 steps/s
    assert b.fit(0, 0.0) is None and b.fit(30, 10.0) is None and b.fit(60, 13.0) is None
    fitted = b.fit(90, 16.0)
    assert fitted == 90 + int(10.0 * (100.0 - 16.0))  # 930
    assert b.fit(91, 16.1) is None  # fitted once
    assert not b.spent(99.9) and b.spent(100.0)
    # never more than asked for
    tc2 = TrainConfig(manifest="m", out="o", steps=200, time_budget_s=1000.0)
    b2 = StepBudget(tc2, start=0, t0=0.0, skip=0, measure=10)
    b2.fit(0, 0.0)
    assert b2.fit(10, 1.0) == 200


def test_train_loop_stops_at_its_fitted_step_count(tmp_path, monkeypatch):
    from model.train import common
    from model.train.common import TrainConfig, train_loop

    clock = iter(range(0, 10_000))  # one fake second per call
    monkeypatch.setattr(common.time, "time", lambda: float(next(clock)))
    lin = torch.nn.Linear(2, 1)
    tc = TrainConfig(manifest="m", out=str(tmp_path / "x.pt"), steps=10_000, warmup=200, time_budget_s=400.0,
                     progress=False, save_every=0)

    def step_fn(batch):
        return {"loss": (lin(batch) ** 2).mean()}

    history = train_loop(desc="t", tc=tc, trainable={"lin": lin}, step_fn=step_fn,
                         batches=lambda s: iter(lambda: torch.ones(4, 2), None), device=torch.device("cpu"))
    # two clock reads per step: 0.5 steps per fake second, measured over steps 30..90 -> ~90 + 110 fit,
    # and the loop ends there (the refitted schedule's end), not at the budget's hard stop
    assert 150 <= len(history) <= 210 and tc.steps == len(history)
    assert torch.load(tmp_path / "x.pt.state.pt", weights_only=True)["step"] == len(history)


def test_a_run_cut_by_its_budget_says_how_to_finish_its_schedule(tmp_path, monkeypatch, caplog):
    """The measured rate can be too optimistic (a busier machine later): the loop then stops at the
    budget, short of its fitted schedule, and says which command finishes it from the saved state."""
    from model.train import common
    from model.train.common import TrainConfig, train_loop

    calls = {"n": 0, "t": 0.0}

    def clock():   # fast while the rate is measured, then 100x slower
        calls["n"] += 1
        calls["t"] += 0.1 if calls["n"] <= 200 else 10.0
        return calls["t"]

    monkeypatch.setattr(common.time, "time", clock)
    lin = torch.nn.Linear(2, 1)
    tc = TrainConfig(manifest="m", out=str(tmp_path / "x.pt"), steps=10_000, warmup=200, time_budget_s=400.0,
                     progress=False, save_every=0)
    with caplog.at_level("WARNING", logger="model.train.common"):
        history = train_loop(desc="t", tc=tc, trainable={"lin": lin}, step_fn=lambda b: {"loss": (lin(b) ** 2).mean()},
                             batches=lambda s: iter(lambda: torch.ones(4, 2), None), device=torch.device("cpu"))
    assert len(history) < tc.steps < 10_000   # fitted, then cut short
    saved = torch.load(tmp_path / "x.pt.state.pt", weights_only=True)["step"]
    assert saved == len(history)
    assert f"at step {saved} of {tc.steps}" in caplog.text and f"--steps {tc.steps} and no --max-minutes" in caplog.text


def test_a_batch_fetched_by_threads_is_the_same_bit_for_bit(tmp_path):
    """`__getitems__` with several fetch threads: the same windows, augmentations and order as one by one,
    from a cache that several threads fill at once; and the dataset still pickles (loader workers)."""
    import pickle

    from model.data.augment import WaveformAugmenter
    from model.train.common import TrainConfig, batch_stream, shuffled_order

    entries = [ManifestEntry(audio=_ramp(tmp_path, f"r{i}.wav", 3.0 + i, (8000, 16000, 22050)[i % 3]),
                             sentiment=("positive", "neutral", "negative")[i % 3]) for i in range(9)]

    def dataset():
        return WindowDataset(entries, random_crop=True, seed=5,
                             augment=WaveformAugmenter(p_reverb=0.5, p_noise=0.7, p_telephone=0.5))

    keys = [(e, i) for e in (0, 1) for i in range(12)]
    one = dataset()
    many = dataset()
    many.fetch_threads = 4
    want, got = [one[k] for k in keys], many.__getitems__(keys)
    assert [g["index"] for g in got] == [w["index"] for w in want]
    for w, g in zip(want, got):
        assert torch.equal(w["audio"], g["audio"]) and w["start_s"] == g["start_s"]
    assert len(many.cache) == len({many.entry_index(i) for _, i in keys}) > 3
    again = pickle.loads(pickle.dumps(many))
    assert torch.equal(again.__getitems__(keys[:3])[2]["audio"], want[2]["audio"])

    # the training loop's loader fetches with torch's thread count when it has no worker processes
    ds = dataset()
    order = shuffled_order(len(ds), seed=1)
    stream = batch_stream(ds, order, TrainConfig(manifest="-", out="-", batch_size=4), start_step=0)
    first = next(stream)
    assert ds.fetch_threads == torch.get_num_threads()
    assert torch.equal(first["audio"], collate_windows([one[(0, i)] for i in order(0)[:4]])["audio"])
