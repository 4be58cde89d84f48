"""Windowing: boundaries, partial windows, reordering, gaps, recovery."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from streams.windowing import (
    AFTER_END, BAD_AUDIO, BAD_SEQ, CAPACITY, GAP_TOO_LARGE, OUT_OF_ORDER,
    ChannelRegistry, ChannelWindower, WindowSpec, latest_offset,
)

SPEC = WindowSpec()  # 16 kHz, 5 s every 2.5 s, last window >= 1 s
SR = SPEC.sample_rate
F100 = 1600  # samples in a 100 ms frame


def signal(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, n).astype(np.float32)


def split(sig: np.ndarray, lengths) -> list[np.ndarray]:
    cuts = np.cumsum(lengths)[:-1]
    return np.split(sig, cuts)


def feed(w: ChannelWindower, frames, end_last=True, order=None):
    """frames: list of arrays; returns (windows, results). order: seq order."""
    order = list(range(len(frames))) if order is None else order
    wins, results = [], []
    for seq in order:
        r = w.add(seq, frames[seq], end=end_last and seq == len(frames) - 1, offset=seq)
        results.append(r)
        wins += r.windows
    return wins, results


def reference(sig: np.ndarray, spec: WindowSpec = SPEC):
    """The documented rule, spelled out independently of the windower."""
    n, win, hop = len(sig), spec.window_samples, spec.hop_samples
    out, k = [], 0
    while k * hop + win <= n:
        out.append((k, k * hop, k * hop + win))
        k += 1
    last_end = out[-1][2] if out else 0
    if n - k * hop >= max(spec.min_last_samples, 1) and n > last_end:
        out.append((k, k * hop, n))
    return out


def assert_matches(wins, sig, spec=SPEC):
    ref = reference(sig, spec)
    assert [w.index for w in wins] == [r[0] for r in ref]
    for w, (k, a, b) in zip(wins, ref):
        assert (w.start_ms, w.end_ms) == (round(a * 1000 / spec.sample_rate), round(b * 1000 / spec.sample_rate))
        np.testing.assert_array_equal(w.samples, sig[a:b])
    assert [w.final for w in wins] == [i == len(wins) - 1 for i in range(len(wins))]


# ------------------------------------------------------------------ geometry
@pytest.mark.parametrize("seconds,expected", [
    (6.0, [(0, 0, 5000), (1, 2500, 6000)]),
    (3.0, [(0, 0, 3000)]),
    (0.5, []),
    (5.0, [(0, 0, 5000)]),
    (1.0, [(0, 0, 1000)]),
    (0.9, []),
    (7.5, [(0, 0, 5000), (1, 2500, 7500)]),
    (10.0, [(0, 0, 5000), (1, 2500, 7500), (2, 5000, 10000)]),
])
def test_partial_last_window_rules(seconds, expected):
    sig = signal(int(seconds * SR))
    wins, _ = feed(ChannelWindower("c", "a"), split(sig, [F100] * (len(sig) // F100)))
    assert [(w.index, w.start_ms, w.end_ms) for w in wins] == expected
    assert_matches(wins, sig)


def test_window_emitted_exactly_when_its_audio_is_there():
    w = ChannelWindower("c", "a")
    sig = signal(SPEC.window_samples + 1)
    assert w.add(0, sig[:SPEC.window_samples - 1]).windows == []
    r = w.add(1, sig[SPEC.window_samples - 1:SPEC.window_samples])
    assert [x.index for x in r.windows] == [0] and not r.windows[0].final
    assert r.windows[0].samples.shape == (SPEC.window_samples,)
    assert w.add(2, sig[SPEC.window_samples:]).windows == []  # window 1 needs 7.5 s
    assert w.next_window_index == 1


@pytest.mark.parametrize("n", [SPEC.window_samples - 1, SPEC.window_samples, SPEC.window_samples + 1,
                               SPEC.min_last_samples - 1, SPEC.min_last_samples,
                               SPEC.window_samples + SPEC.hop_samples - 1])
def test_off_by_one_sample_boundaries(n):
    sig = signal(n, seed=n)
    w = ChannelWindower("c", "a")
    wins, _ = feed(w, [sig[:n // 2], sig[n // 2:]])
    assert_matches(wins, sig)
    assert w.duration_ms == round(n * 1000 / SR)


def test_one_big_frame_emits_several_windows_in_order():
    sig = signal(12 * SR)
    w = ChannelWindower("c", "a")
    r = w.add(0, sig)
    assert [x.index for x in r.windows] == [0, 1, 2]
    assert_matches(r.windows + w.finish(), sig)


def test_variable_frame_sizes_including_empty_frames():
    rng = np.random.default_rng(3)
    lengths = rng.integers(0, 4000, 400)
    sig = signal(int(lengths.sum()), seed=4)
    wins, _ = feed(ChannelWindower("c", "a"), split(sig, lengths))
    assert_matches(wins, sig)


def test_window_samples_are_own_arrays():
    sig = signal(6 * SR)
    w = ChannelWindower("c", "a")
    wins, _ = feed(w, split(sig, [F100] * 60))
    wins[0].samples[:] = 0  # must not corrupt the next window's overlap
    np.testing.assert_array_equal(wins[1].samples, sig[2 * SR + SR // 2:])


def test_other_geometry_8k_and_hop_equal_window():
    spec = WindowSpec(sample_rate=8000, window_ms=1000, hop_ms=1000, min_last_window_ms=300)
    sig = signal(26400, seed=9)  # 3.3 s
    wins, _ = feed(ChannelWindower("c", "a", spec), split(sig, [800] * 32 + [800]))
    assert [(w.index, w.start_ms, w.end_ms) for w in wins] == [(0, 0, 1000), (1, 1000, 2000),
                                                                (2, 2000, 3000), (3, 3000, 3300)]
    assert_matches(wins, sig, spec)


def test_end_frame_without_audio_finishes_and_marks_nothing_twice():
    sig = signal(6 * SR)
    w = ChannelWindower("c", "a")
    wins, _ = feed(w, split(sig, [F100] * 60), end_last=False)
    r = w.add(60, np.zeros(0, np.float32), end=True)
    assert r.finished and w.finished and w.finish_reason == "end"
    assert_matches(wins + r.windows, sig)
    assert w.finish() == []  # idempotent


# ----------------------------------------------------- duplicates, bad input
def test_duplicates_are_dropped_and_counted():
    sig = signal(3 * SR)
    frames = split(sig, [F100] * 30)
    w = ChannelWindower("c", "a")
    w.add(0, frames[0]); w.add(1, frames[1])
    r = w.add(1, frames[1])
    assert r.dropped_duplicate and r.rejected is None
    w.add(3, frames[3])
    assert w.add(3, frames[3]).dropped_duplicate  # duplicate of a held frame
    assert w.duplicates == 2
    wins = []
    for s in [2] + list(range(4, 30)):
        wins += w.add(s, frames[s], end=s == 29).windows
    assert_matches(wins, sig)
    assert w.frames == 30


@pytest.mark.parametrize("seq,samples,reason", [
    (-1, np.zeros(10, np.float32), BAD_SEQ),
    (1.5, np.zeros(10, np.float32), BAD_SEQ),
    (True, np.zeros(10, np.float32), BAD_SEQ),
    (0, np.zeros((2, 10), np.float32), BAD_AUDIO),
    (0, np.array([0.0, np.nan], np.float32), BAD_AUDIO),
    (0, np.array([np.inf]), BAD_AUDIO),
    (0, ["a", "b"], BAD_AUDIO),
])
def test_bad_frames_are_rejected_with_reason(seq, samples, reason):
    w = ChannelWindower("c", "a")
    r = w.add(seq, samples)
    assert r.rejected is not None and r.rejected.reason == reason and r.rejected.detail
    assert w.frames == 0 and w.next_seq == 0


def test_frames_after_end_are_rejected():
    w = ChannelWindower("c", "a")
    w.add(0, signal(SR), end=True)
    assert w.add(1, signal(10)).rejected.reason == AFTER_END


def test_frame_past_a_held_end_frame_is_rejected():
    w = ChannelWindower("c", "a")
    w.add(0, signal(F100))
    w.add(2, signal(F100), end=True)
    assert w.add(3, signal(F100)).rejected.reason == AFTER_END
    r = w.add(1, signal(F100))
    assert r.finished


# ------------------------------------------------------ reordering and gaps
def test_reordering_within_tolerance_is_restored_exactly():
    sig = signal(8 * SR)
    frames = split(sig, [F100] * 80)
    order = list(range(80))
    for i in range(0, 78, 3):
        order[i], order[i + 2] = order[i + 2], order[i]
    w = ChannelWindower("c", "a")
    wins, results = feed(w, frames, order=order)
    assert_matches(wins, sig)
    assert w.gap_samples == 0 and all(r.rejected is None for r in results)


def test_lost_frame_is_silence_filled_after_reorder_limit_and_late_copy_rejected():
    sig = signal(8 * SR)
    frames = split(sig, [F100] * 80)
    w = ChannelWindower("c", "a", max_reorder_ms=2000)
    wins, filled = [], 0
    for s in range(80):
        if s == 10:
            continue
        r = w.add(s, frames[s], end=s == 79, offset=s)
        wins += r.windows
        filled += r.gap_samples_filled
        if s < 31:  # 20 frames = 2000 ms held: not more than the limit yet
            assert w.held_frames == s - 10 if s > 10 else w.held_frames == 0
    assert filled == F100 and w.gap_samples == F100 and w.gap_ms == 100
    expected = sig.copy()
    expected[10 * F100:11 * F100] = 0
    assert_matches(wins, expected)


def test_late_copy_of_lost_frame_is_out_of_order():
    frames = split(signal(4 * SR), [F100] * 40)
    w = ChannelWindower("c", "a", max_reorder_ms=500)
    for s in [0, 1] + list(range(3, 10)):
        w.add(s, frames[s])
    assert w.next_seq == 10 and w.gap_samples == F100
    r = w.add(2, frames[2])
    assert r.rejected.reason == OUT_OF_ORDER and not r.dropped_duplicate
    assert w.add(5, frames[5]).dropped_duplicate  # really received: a duplicate


def test_finish_fills_gaps_before_held_frames():
    sig = signal(3 * SR)
    frames = split(sig, [F100] * 30)
    w = ChannelWindower("c", "a")
    for s in list(range(0, 20)) + [22, 23]:
        w.add(s, frames[s])
    wins = w.finish("idle")
    assert w.finish_reason == "idle" and w.gap_samples == 2 * F100
    expected = np.concatenate([sig[:20 * F100], np.zeros(2 * F100, np.float32), sig[22 * F100:24 * F100]])
    assert_matches(wins, expected)


def test_gap_at_limit_is_filled_and_beyond_it_rejected():
    frames = split(signal(40 * SR), [F100] * 400)
    w = ChannelWindower("c", "a", max_reorder_ms=0, max_gap_ms=1000)
    w.add(0, frames[0])
    assert w.add(12, frames[12]).rejected.reason == GAP_TOO_LARGE  # 11 frames missing
    r = w.add(11, frames[11])  # 10 missing frames = 1000 ms: allowed, filled at once
    assert r.rejected is None and r.gap_samples_filled == 10 * F100 and w.next_seq == 12


def test_huge_seq_jump_is_rejected_without_memory():
    w = ChannelWindower("c", "a")
    w.add(0, signal(F100))
    before = w.buffer_bytes
    r = w.add(2 ** 50, signal(F100))
    assert r.rejected.reason == GAP_TOO_LARGE
    assert w.held_frames == 0 and w.buffer_bytes == before and w.next_seq == 1
    assert w.add(1, signal(F100)).rejected is None


def test_first_frame_with_small_seq_is_held_for_reordering():
    sig = signal(2 * SR)
    frames = split(sig, [F100] * 20)
    w = ChannelWindower("c", "a")
    wins, _ = feed(w, frames, order=[2, 1, 0] + list(range(3, 20)))
    assert_matches(wins, sig)


def test_many_empty_frames_cannot_grow_reorder_buffer_unbounded():
    w = ChannelWindower("c", "a")
    w.add(0, signal(F100))
    for s in range(2, 2 + ChannelWindower.max_held_frames + 5):
        w.add(s, np.zeros(0, np.float32))
    assert w.held_frames <= ChannelWindower.max_held_frames


def test_memory_stays_bounded_over_a_long_channel():
    w = ChannelWindower("c", "a")
    frame = signal(F100)
    peak = 0
    for s in range(6000):  # 10 minutes
        w.add(s, frame)
        peak = max(peak, w.buffer_bytes)
    assert peak <= 4 * 2 * SPEC.window_samples  # float32, twice the window
    w.finish()
    assert w.buffer_bytes == 0 and w.duration_ms == 600_000


# ---------------------------------------------------------------- property
@st.composite
def shuffled_within_tolerance(draw):
    n = draw(st.integers(1, 90))
    lengths = draw(st.lists(st.integers(0, 2000), min_size=n, max_size=n))
    # delays in frames; at most 14 frames of <= 2000 samples ahead of the
    # missing one are held: 14 * 2000 = 28000 samples < 2000 ms at 16 kHz
    delays = draw(st.lists(st.integers(0, 15), min_size=n, max_size=n))
    order = sorted(range(n), key=lambda i: (i + delays[i], i))
    return lengths, order


@settings(max_examples=60, deadline=None)
@given(shuffled_within_tolerance())
def test_property_shuffle_within_tolerance_equals_in_order(case):
    lengths, order = case
    sig = signal(sum(lengths), seed=len(lengths))
    frames = split(sig, lengths) if lengths else []
    in_order, _ = feed(ChannelWindower("c", "a"), frames)
    w = ChannelWindower("c", "a")
    shuffled, results = feed(w, frames, order=order)
    assert all(r.rejected is None and not r.dropped_duplicate for r in results)
    assert w.finished and w.gap_samples == 0
    assert [(x.index, x.start_ms, x.end_ms, x.final) for x in shuffled] == \
        [(x.index, x.start_ms, x.end_ms, x.final) for x in in_order]
    for a, b in zip(shuffled, in_order):
        np.testing.assert_array_equal(a.samples, b.samples)
    assert_matches(in_order, sig)


# ---------------------------------------------------------------- recovery
def test_low_watermark_tracks_first_needed_frame():
    w = ChannelWindower("c", "a")
    frames = split(signal(6 * SR), [F100] * 60)
    for s in range(49):
        w.add(s, frames[s], offset=100 + s)
    assert w.low_watermark_offset() == 100
    w.add(49, frames[49], offset=149)  # window 0 out: audio from 2.5 s needed
    assert w.next_window_index == 1 and w.low_watermark_offset() == 125
    w.add(51, frames[51], offset=150)  # held
    w.add(52, frames[52], offset=None)
    assert w.low_watermark_offset() == 125
    assert ChannelWindower("c", "a").low_watermark_offset() is None


def _script(seed: int, n_frames: int = 130):
    """One channel's delivery: variable sizes, reordering, a lost frame, a
    duplicate and a too-late copy of the lost frame; offsets are positions."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(800, 2400, n_frames)
    frames = split(signal(int(lengths.sum()), seed), lengths)
    order = sorted(range(n_frames), key=lambda i: (i + rng.integers(0, 6), i))
    lost = int(rng.integers(20, n_frames - 40))
    order.remove(lost)
    order.insert(order.index(lost + 30), lost)  # arrives after being declared lost
    order.insert(order.index(7) + 3, 7)  # duplicate
    return [(s, frames[s], s == n_frames - 1) for s in order]


def _run(w, msgs, start=0, stop=None, offsets=None):
    out = []
    for pos in range(start, len(msgs) if stop is None else stop):
        s, x, e = msgs[pos]
        out += w.add(s, x, end=e, offset=pos if offsets is None else offsets[pos]).windows
    return out


def _key(ws):
    return [(w.index, w.start_ms, w.end_ms, w.final, w.samples.tobytes()) for w in ws]


@pytest.mark.parametrize("seed", [1, 2])
def test_crash_and_resume_reemits_identical_windows(seed):
    msgs = _script(seed)
    ref = ChannelWindower("c", "a", max_reorder_ms=1500)
    full = _run(ref, msgs)
    assert len(full) >= 4 and ref.gap_samples > 0 and ref.duplicates == 1
    for crash_after in range(0, len(msgs) - 1, 3):
        w = ChannelWindower("c", "a", max_reorder_ms=1500)
        before = _run(w, msgs, stop=crash_after + 1)
        cp = json.loads(json.dumps(w.checkpoint()))
        assert len(json.dumps(cp)) < 2000
        low = w.low_watermark_offset()
        restored = ChannelWindower.from_checkpoint(cp, max_reorder_ms=1500)
        resume = crash_after + 1 if low is None else low
        # another channel may hold the partition back further: re-read earlier too
        after = _run(restored, msgs, start=max(0, resume - 5))
        assert _key(before + after) == _key(full), crash_after
        # replayed frames are not counted twice
        assert (restored.frames, restored.duplicates, restored.gap_samples) == \
            (ref.frames, ref.duplicates, ref.gap_samples), crash_after


def test_checkpoint_rejects_other_geometry():
    w = ChannelWindower("c", "a")
    w.add(0, signal(F100), offset=0)
    with pytest.raises(ValueError, match="geometry"):
        ChannelWindower.from_checkpoint(w.checkpoint(), WindowSpec(window_ms=4000))


# ---------------------------------------------------------------- registry
def test_registry_idle_expiry_releases_and_rejects_late_frames():
    reg = ChannelRegistry(SPEC, idle_timeout_s=30)
    reg.add("c1", "agent", 0, signal(3 * SR), now=0.0)
    reg.add("c2", "agent", 0, signal(SR), now=10.0)
    assert len(reg) == 2
    assert reg.expire_idle(29.9) == []
    expired = reg.expire_idle(30.0)
    assert [k for k, _ in expired] == [("c1", "agent")]
    assert [(w.index, w.end_ms, w.final) for w in expired[0][1]] == [(0, 3000, True)]
    assert len(reg) == 1 and reg.get("c1", "agent") is None
    assert reg.add("c1", "agent", 1, signal(10), now=31.0).rejected.reason == AFTER_END
    reg.add("c2", "agent", 1, signal(SR), now=35.0)  # activity postpones expiry
    assert reg.expire_idle(50.0) == []
    assert [k for k, _ in reg.expire_idle(65.0)] == [("c2", "agent")]
    assert len(reg) == 0


def test_registry_end_frame_closes_channel():
    reg = ChannelRegistry(SPEC)
    r = reg.add("c", "0", 0, signal(2 * SR), end=True, now=1.0)
    assert r.finished and len(reg) == 0 and [w.final for w in r.windows] == [True]
    assert reg.add("c", "0", 0, signal(SR), now=2.0).rejected.reason == AFTER_END


def test_registry_forgets_ended_keys_after_ttl_and_lru_bound():
    reg = ChannelRegistry(SPEC, ended_ttl_s=100, ended_memory=2)
    for c in "abc":
        reg.add(c, "0", 0, signal(10), end=True, now=0.0)
    assert reg.add("a", "0", 0, signal(10), now=1.0).rejected is None  # LRU evicted "a"
    assert reg.add("b", "0", 0, signal(10), now=1.0).rejected.reason == AFTER_END
    assert reg.add("b", "0", 0, signal(10), now=100.0).rejected is None  # ttl passed


def test_registry_capacity_cap_only_blocks_new_channels():
    reg = ChannelRegistry(SPEC, max_channels=2)
    reg.add("a", "0", 0, signal(10), now=0)
    reg.add("b", "0", 0, signal(10), now=0)
    r = reg.add("c", "0", 0, signal(10), now=0)
    assert r.rejected.reason == CAPACITY and len(reg) == 2
    assert reg.add("a", "0", 1, signal(10), now=0).rejected is None
    reg.add("a", "0", 2, signal(10), end=True, now=0)
    assert reg.add("c", "0", 0, signal(10), now=0).rejected is None


def test_registry_rejected_first_frame_opens_no_channel():
    reg = ChannelRegistry(SPEC)
    assert reg.add("x", "0", 2 ** 40, signal(F100), now=0).rejected.reason == GAP_TOO_LARGE
    assert reg.add("y", "0", 0, np.array([np.nan]), now=0).rejected.reason == BAD_AUDIO
    assert len(reg) == 0


def test_registry_crash_resume_over_interleaved_channels():
    chans = {("c1", "agent"): _script(5, 90), ("c1", "customer"): _script(6, 70),
             ("c2", "0"): _script(7, 110)}
    rng = np.random.default_rng(8)
    pending = {k: list(v) for k, v in chans.items()}
    msgs = []
    while pending:
        k = list(pending)[rng.integers(0, len(pending))]
        msgs.append((k, *pending[k].pop(0)))
        if not pending[k]:
            del pending[k]

    def run(reg, start, stop=None):
        out = []
        for pos in range(start, len(msgs) if stop is None else stop):
            k, s, x, e = msgs[pos]
            for w in reg.add(*k, s, x, end=e, offset=pos, now=0.0).windows:
                out.append((k, w))
        return out

    def key(items):
        return sorted((k, *_key([w])[0]) for k, w in items)

    full = run(ChannelRegistry(SPEC, max_reorder_ms=1500), 0)
    for crash_after in range(0, len(msgs) - 1, 7):
        reg = ChannelRegistry(SPEC, max_reorder_ms=1500)
        before = run(reg, 0, crash_after + 1)
        cp = json.loads(json.dumps(reg.checkpoint()))
        low = reg.low_watermark_offset()
        reg2 = ChannelRegistry(SPEC, max_reorder_ms=1500)
        reg2.restore(cp)
        after = run(reg2, crash_after + 1 if low is None else low)
        assert key(before + after) == key(full), crash_after


@pytest.mark.parametrize("current, offsets, expected", [
    (None, [], None), (None, [None, None], None), (5, [], 5), (5, [None], 5), (None, [3, None, 7], 7),
    (9, [3, 7], 9), (2, [3, None, 7], 7), (7, [7], 7), (0, [None], 0), (None, [0], 0),
])
def test_latest_offset_ignores_unknown_offsets(current, offsets, expected):
    assert latest_offset(current, offsets) == expected
