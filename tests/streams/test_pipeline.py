"""StreamProcessor: the worker's whole logic without Kafka or torch.

The model here (`tests.harness.offline.EnergyModel`) is a small deterministic function of the audio (energy and
spectral balance), so results depend on the samples a window really holds.
"""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from schemas.audio import encode_audio
from streams.inference import prepare_batch
from streams.pipeline import StreamProcessor
from streams.settings import ProcessorConfig
from tests.harness.offline import EnergyModel, frames, published, run, tone


def test_segments_aggregates_and_summary_per_channel():
    events = run(frames("c1", "agent", tone(9.0, 300)) + frames("c1", "customer", tone(6.0, 6000)))
    segs = [e for e in events if e["type"] == "segment"]
    assert [(e["channel"], e["segment_index"], e["start_ms"], e["end_ms"]) for e in segs if e["channel"] == "agent"] \
        == [("agent", 0, 0, 5000), ("agent", 1, 2500, 7500), ("agent", 2, 5000, 9000)]
    assert [(e["segment_index"], e["start_ms"], e["end_ms"]) for e in segs if e["channel"] == "customer"] \
        == [(0, 0, 5000), (1, 2500, 6000)]
    # the low tone is "positive" and the high one "negative" for this model
    assert {e["label"] for e in segs if e["channel"] == "agent"} == {"positive"}
    assert {e["label"] for e in segs if e["channel"] == "customer"} == {"negative"}
    aggs = [e for e in events if e["type"] == "aggregate"]
    assert len(aggs) == len(segs)
    calls = {e["channel"]: e for e in events if e["type"] == "call"}
    assert calls["agent"]["segments"] == 3 and calls["agent"]["duration_ms"] == 9000
    assert calls["agent"]["overall"]["label"] == "positive"
    assert calls["customer"]["overall"]["label"] == "negative"


def test_silence_is_no_speech_and_short_channel_gets_summary():
    events = run(frames("c2", "0", np.zeros(16000 * 6, np.float32)) + frames("c3", "0", tone(0.5, 300)))
    segs = [e for e in events if e["type"] == "segment" and e["call_id"] == "c2"]
    assert segs and all(e["label"] == "no_speech" for e in segs)
    calls = {e["call_id"]: e for e in events if e["type"] == "call"}
    assert calls["c2"]["overall"]["label"] == "no_speech"
    assert calls["c3"]["segments"] == 0  # 0.5 s: no window, but the channel still gets its summary


def test_any_input_rate_gives_the_same_windows_times():
    e8 = run(frames("c", "0", tone(7.0, 300, rate=8000), rate=8000, encoding="mulaw"))
    e16 = run(frames("c", "0", tone(7.0, 300)))
    times = lambda evs: [(e["segment_index"], e["start_ms"], e["end_ms"]) for e in evs if e["type"] == "segment"]
    assert times(e8) == times(e16)
    p8 = [e["sentiment"]["positive"] for e in e8 if e["type"] == "segment"]
    p16 = [e["sentiment"]["positive"] for e in e16 if e["type"] == "segment"]
    assert np.allclose(p8, p16, atol=0.05)  # same tone, resampled to the model rate


def test_rate_change_mid_channel_is_dead_lettered():
    msgs = frames("c", "0", tone(3.0, 300), end=False) + frames("c", "0", tone(1.0, 300, rate=8000), rate=8000,
                                                               start_seq=30)
    events = run(msgs)
    dls = [e for e in events if e["type"] == "dead_letter"]
    assert len(dls) == 10 and {d["reason"] for d in dls} == {"bad_sample_rate"}


def test_capacity_cap_dead_letters_new_channels():
    cfg = ProcessorConfig(max_active_channels=2)
    msgs = []
    for i in range(3):
        msgs += frames(f"c{i}", "0", tone(1.0, 300), end=False)[:1]
    events = run(msgs, config=cfg)
    assert [e["reason"] for e in events if e["type"] == "dead_letter"] == ["capacity"]


def test_idle_timeout_ends_channel_with_partial_window():
    p = StreamProcessor(ProcessorConfig(idle_timeout_s=30), "v")
    first = []
    for i, (k, v) in enumerate(frames("c", "0", tone(6.0, 300), end=False)):
        first += p.ingest(v, k, 0, i, now=0.0).windows
    assert p.expire_idle(now=10.0).windows == []
    out = p.expire_idle(now=31.0)
    assert [(w.index, w.start_ms, w.end_ms) for w in out.windows] == [(1, 2500, 6000)]
    assert out.calls == []  # the summary waits for the windows' results
    windows = first + out.windows
    speech, sent = EnergyModel().predict(*prepare_batch(windows, [16000] * 2, 16000))
    assert p.apply_results(windows[:1], speech[:1], sent[:1]).calls == []
    res = p.apply_results(windows[1:], speech[1:], sent[1:])
    assert len(res.calls) == 1 and res.calls[0]["ended_by"] == "idle_timeout"
    assert p.open_channels == 0 and p.registries[(0, 16000)].get("c", "0") is None


def test_idle_timeout_waits_on_held_partitions():
    """A partition whose frames still wait in Kafka is held: its channels are not idle, others are."""
    p = StreamProcessor(ProcessorConfig(idle_timeout_s=30), "v")
    for partition, call in ((0, "a"), (1, "b")):
        for i, (k, v) in enumerate(frames(call, "0", tone(1.0, 300), end=False)):
            p.ingest(v, k, partition, i, now=0.0)
    out = p.expire_idle(now=100.0, hold={0})
    assert {w.call_id for w in out.windows} == {"b"}
    assert p.expire_idle(now=100.0, hold={0}).windows == []
    assert {w.call_id for w in p.expire_idle(now=100.0).windows} == {"a"}   # caught up: now it is idle


def test_nan_model_output_is_dead_lettered_not_published():
    p = StreamProcessor(ProcessorConfig(), "v")
    windows = []
    for i, (k, v) in enumerate(frames("c", "0", tone(5.0, 300))):
        windows += p.ingest(v, k, 0, i).windows
    out = p.apply_results(windows, np.array([np.nan], np.float32), np.full((1, 3), np.nan, np.float32))
    assert out.segments == [] and out.dead_letters[0]["reason"].startswith("model_output_")
    assert len(out.calls) == 1  # the channel still ends


def _drive(p, messages, partition=0, start_offset=0, model=EnergyModel(), checkpoint_every=None, crash_at=None):
    """Feed messages one by one with Kafka-like offsets; results applied in batches of 3."""
    events, pending, states = [], [], []
    for off, (k, v) in enumerate(messages[start_offset:], start=start_offset):
        if crash_at is not None and off == crash_at:
            return events, states
        out = p.ingest(v, k, partition, off)
        pending += out.windows
        events += published(out)
        if len(pending) >= 3:
            sp, se = model.predict(*prepare_batch(pending, [16000] * len(pending), 16000))
            res = p.apply_results(pending, sp, se)
            pending = []
            events += published(res)
            states += res.checkpoints
        if checkpoint_every and off % checkpoint_every == 0:
            states += p.request_checkpoint(partition).checkpoints
    if pending:
        sp, se = model.predict(*prepare_batch(pending, [16000] * len(pending), 16000))
        res = p.apply_results(pending, sp, se)
        events += published(res)
        states += res.checkpoints
    return events, states


@pytest.mark.parametrize("crash_at", [37, 88, 140, 199])
def test_crash_and_resume_from_checkpoint_reemits_identical_events(crash_at):
    rng = np.random.default_rng(3)
    a = (0.2 * rng.standard_normal(16000 * 12)).astype(np.float32)
    b = tone(11.0, 700)
    # ca's ids and wall-clock origin come on its first frames only: a resumed worker gets them from the checkpoint
    fa = frames("ca", "0", a, ts_start_ms=1_700_000_000_000, meta={"transactionId": "tx-a"})
    fb = frames("cb", "1", b)
    msgs = [m for pair in zip(fa, fb) for m in pair] + fa[len(fb):]
    clean, _ = _drive(StreamProcessor(ProcessorConfig(), "v"), msgs)
    assert {(e["audio_start_ts_ms"], e["meta"]["transactionId"]) for e in clean
            if e["type"] != "segment" and e["call_id"] == "ca"} == {(1_700_000_000_000, "tx-a")}

    first = StreamProcessor(ProcessorConfig(), "v")
    before, states = _drive(first, msgs, checkpoint_every=7, crash_at=crash_at)
    assert states, "a checkpoint must complete before the crash"
    _, state, watermark = states[-1]
    resumed = StreamProcessor(ProcessorConfig(), "v")
    resumed.restore(0, state)
    after, _ = _drive(resumed, msgs, start_offset=watermark if watermark is not None else crash_at)

    key = lambda e: (e["type"], e["call_id"], e["channel"], e.get("segment_index", -1))
    strip = lambda e: {k: v for k, v in e.items() if k != "emitted_at_ms"}
    ref = {key(e): strip(e) for e in clean}
    got = {}
    for e in before + after:  # at least once; a repeat must be identical
        if key(e) in got:
            assert strip(e) == got[key(e)]
        got[key(e)] = strip(e)
    assert got.keys() == ref.keys()
    for k in ref:
        assert got[k] == ref[k], k


def test_checkpoint_waits_for_in_flight_windows():
    p = StreamProcessor(ProcessorConfig(), "v")
    windows = []
    for i, (k, v) in enumerate(frames("c", "0", tone(8.0, 300), end=False)):
        windows += p.ingest(v, k, 0, i).windows
    assert len(windows) == 2
    assert p.request_checkpoint(0).checkpoints == []  # two windows in flight
    sp, se = EnergyModel().predict(*prepare_batch(windows, [16000, 16000], 16000))
    res = p.apply_results(windows[:1], sp[:1], se[:1])
    assert res.checkpoints == []
    res = p.apply_results(windows[1:], sp[1:], se[1:])
    [(partition, state, watermark)] = res.checkpoints
    assert partition == 0 and state["aggregates"][0][3]["last_index"] == 1
    assert watermark == 50  # window 2 starts at 5 s = frame 50: everything before may be committed


@pytest.mark.parametrize("src", [8000, 11025, 44100, 48000])
def test_fft_window_resampling_keeps_tones_and_removes_aliases(src):
    from schemas.resample import resample_fft

    t = np.arange(src * 5) / src
    y = resample_fft(np.sin(2 * np.pi * 1000 * t).astype(np.float32), src, 16000)
    assert y.size == 80000
    ref = np.sin(2 * np.pi * 1000 * np.arange(80000) / 16000)
    assert np.abs(y[800:-800] - ref[800:-800]).max() < 1e-3
    if src > 16000:  # a tone above the new Nyquist frequency must vanish, not fold back
        z = resample_fft(np.sin(2 * np.pi * 9000 * t).astype(np.float32), src, 16000)
        assert np.sqrt(np.mean(z[800:-800] ** 2)) < 1e-3


def test_checkpoints_keep_completing_after_a_restore():
    """A restored channel's window indices go on from the checkpoint; a later
    checkpoint must still complete (and move the watermark), not wait forever
    for an index the restored channel will never hand out."""
    msgs = frames("c", "0", tone(20.0, 300))
    p = StreamProcessor(ProcessorConfig(), "v")
    model = EnergyModel()
    for off, (k, v) in enumerate(msgs[:185]):
        out = p.ingest(v, k, 0, off)
        if out.windows:
            p.apply_results(out.windows, *model.predict(*prepare_batch(out.windows, [16000] * len(out.windows), 16000)))
    [(_, state, watermark)] = p.request_checkpoint(0).checkpoints
    q = StreamProcessor(ProcessorConfig(), "v")
    q.restore(0, state)
    handed = []
    for off in range(watermark, len(msgs)):  # to the end frame: the windower is finished and gone
        k, v = msgs[off]
        handed += q.ingest(v, k, 0, off).windows
    assert q.request_checkpoint(0).checkpoints == []  # the last windows are in flight
    assert handed and handed[0].index > 0
    res = q.apply_results(handed, *model.predict(*prepare_batch(handed, [16000] * len(handed), 16000)))
    [(_, _, later)] = res.checkpoints
    assert later > watermark
    assert len(res.calls) == 1


def test_call_duration_is_the_audio_length_also_for_calls_shorter_than_a_window():
    short = run(frames("short", "0", tone(0.5, 300)))       # ends before any window (< 1 s: none at all)
    odd = run(frames("odd", "0", tone(7.3, 300, rate=8000), rate=8000))  # last 0.3 s past the last window's end
    [s] = [e for e in short if e["type"] == "call"]
    [o] = [e for e in odd if e["type"] == "call"]
    assert (s["duration_ms"], s["segments"]) == (500, 0)
    assert o["duration_ms"] == 7300 and o["segments"] >= 2


def _messy_traffic(seed: int) -> list[tuple[bytes, bytes, int]]:
    """(key, value, partition) for a few channels: mostly in order, with duplicates,
    swaps, gaps, bad frames, key mismatches, mu-law and f32le (one with NaN), ts_ms,
    a rate change and end frames; interleaved at random."""
    import random

    rng = random.Random(seed)
    per_channel = []
    for c in range(rng.randint(1, 4)):
        call, channel, rate = f"call-{c % 3}", f"ch{c}", rng.choice([8000, 16000])
        partition = c % 2
        seqs = list(range(rng.randint(5, 120)))
        msgs = []
        for i in seqs:
            if rng.random() < 0.04:
                continue  # lost
            enc = rng.choice(["pcm_s16le"] * 6 + ["mulaw", "f32le"])
            n = rate * rng.choice([20, 100, 100, 100]) // 1000
            audio = (np.sin(np.arange(n) * (0.01 + c / 50) + i) * 0.4).astype(np.float32)
            raw_audio = encode_audio(enc, audio)
            if enc == "f32le" and rng.random() < 0.1:
                raw_audio = np.full(n, np.nan, "<f4").tobytes()
            fields = {"v": 1, "call_id": call, "channel": channel, "seq": i, "encoding": enc, "audio": raw_audio,
                      "sample_rate": rate if rng.random() > 0.01 else 44100, "end": i == seqs[-1] and c % 2 == 0}
            if rng.random() < 0.3:
                fields["ts_ms"] = 1_700_000_000_000 + i * 100
            if rng.random() < 0.05:
                fields["meta"] = {"transactionId": f"tx-{c}-{i}", f"k{i % 3}": "v"}
            value = msgpack.packb(fields, use_bin_type=True)
            key = call.encode() if rng.random() > 0.01 else b"other"
            msgs.append((key, value, partition if rng.random() > 0.01 else 1 - partition))
            if rng.random() < 0.05:
                msgs.append(msgs[-1])  # duplicate
            if rng.random() < 0.03:
                msgs.append((key, b"\xc1garbage", partition))
        for j in range(len(msgs) - 1):
            if rng.random() < 0.05:
                msgs[j], msgs[j + 1] = msgs[j + 1], msgs[j]
        per_channel.append(msgs)
    out = []
    while any(per_channel):
        q = rng.choice([q for q in per_channel if q])
        out.append(q.pop(0))
    return out


def _processor_state(p: StreamProcessor):
    regs = {k: r.checkpoint() for k, r in sorted(p.registries.items())}
    for cp in regs.values():  # LRU order may differ (a run touches its channel when committed): not state
        cp["channels"].sort(key=lambda c: (c["call_id"], c["channel"]))
    chans = {k: (c.partition, c.rate, c.duration_ms, c.ts_origin_ms, c.meta, c.outstanding, c.last_handed, c.ended_by)
             for k, c in sorted(p.channels.items())}
    return p.frames, dict(p.last_offsets), dict(p.emitted), regs, chans


def _outputs(outs):
    wins = sorted((w.call_id, w.channel, w.index, w.start_ms, w.end_ms, w.final, w.samples.tobytes())
                  for o in outs for w in o.windows)
    dead = sorted((d["reason"], d["offset"], d["partition"]) for o in outs for d in o.dead_letters)
    calls = sorted(str(c) for o in outs for c in o.calls)
    return wins, dead, calls, sum(o.duplicates for o in outs), sum(o.gap_ms for o in outs)


@pytest.mark.parametrize("seed", range(80))
def test_ingest_many_equals_ingest_one_by_one(seed):
    """The batched ingest gives the same windows, dead letters, summaries and state
    as the per-frame ingest, whatever the batch boundaries."""
    import random

    msgs = _messy_traffic(seed)
    one, many = (StreamProcessor(ProcessorConfig(), "t", clock_ms=lambda: 0) for _ in range(2))
    outs_one = [one.ingest(v, k, part, off, 1.0) for off, (k, v, part) in enumerate(msgs)]
    rng, outs_many, i = random.Random(seed), [], 0
    while i < len(msgs):
        n = rng.choice([1, 2, 7, 50, 1000])
        outs_many.append(many.ingest_many([(v, k, part, off) for off, (k, v, part) in
                                           enumerate(msgs[i:i + n], start=i)], 1.0))
        i += n
    assert _outputs(outs_many) == _outputs(outs_one)
    assert _processor_state(many) == _processor_state(one)


def test_ingest_many_batches_in_order_frames():
    """Only a channel's first frame, its end frame and a frame out of order take the
    per-frame path; the rest are committed in runs."""
    msgs = frames("a", "0", tone(3.0, 300)) + frames("b", "0", tone(3.0, 500))
    msgs = [m for pair in zip(msgs[:30], msgs[30:]) for m in pair]  # interleaved
    msgs.insert(20, msgs[15])  # a duplicate of call a's frame 7 (b's frame 7 follows it)
    p = StreamProcessor(ProcessorConfig(), "t")
    slow = []
    p._ingest_into = lambda *a, f=p._ingest_into: (slow.append(a[1]), f(*a))
    out = p.ingest_many([(v, k, 0, off) for off, (k, v) in enumerate(msgs)])
    assert out.duplicates == 1 and len(out.windows) == 2 and len(out.calls) == 0  # results not in: calls wait
    assert len(slow) == 5  # the first frames (2), the duplicate, the end frames (2)


def test_frame_meta_and_ts_reach_the_channels_events():
    """A channel's metadata (a key keeps its first value) and its wall-clock origin are on every aggregate
    and its call summary; the summary also has the final ``current``; other channels have none."""
    a = frames("c1", "agent", tone(8.0, 300), ts_start_ms=1_700_000_000_000,
               meta={"transactionId": "tx-1", "streamArn": "arn:s"})
    later = msgpack.unpackb(a[5][1])
    later["meta"] = {"transactionId": "changed", "channelId": "0"}
    a[5] = (a[5][0], msgpack.packb(later, use_bin_type=True))
    events = run(a + frames("c1", "customer", tone(6.0, 6000)))
    agent = [e for e in events if e["channel"] == "agent" and e["type"] in ("aggregate", "call")]
    assert {e["audio_start_ts_ms"] for e in agent} == {1_700_000_000_000}
    assert agent[-1]["meta"] == {"transactionId": "tx-1", "streamArn": "arn:s", "channelId": "0"}
    final = agent[-1]
    assert final["type"] == "call" and final["current"] == agent[-2]["current"]
    other = [e for e in events if e["channel"] == "customer" and e["type"] in ("aggregate", "call")]
    assert all(e["meta"] == {} and e["audio_start_ts_ms"] is None for e in other)
