"""Batching: size and wait bounds, FIFO, deadlines, padding."""

from __future__ import annotations

import numpy as np
import pytest

from streams.inference import Batcher
from streams.stacking import stack_windows
from streams.windowing import Window


def test_full_batches_are_ready_at_once_and_fifo():
    b = Batcher(max_batch_size=3, max_wait_ms=50)
    for i in range(7):
        b.add(i, now=0.0)
    assert b.take_ready(now=0.0) == [[0, 1, 2], [3, 4, 5]]
    assert len(b) == 1


def test_partial_batch_waits_for_oldest_item_deadline():
    b = Batcher(max_batch_size=4, max_wait_ms=50)
    b.add("a", now=1.000)
    b.add("b", now=1.030)
    assert b.next_deadline() == pytest.approx(1.050)
    assert b.take_ready(now=1.049) == []
    assert b.take_ready(now=1.050) == [["a", "b"]]
    assert len(b) == 0 and b.next_deadline() is None


def test_full_batch_deadline_is_now_and_rest_keeps_its_own():
    b = Batcher(max_batch_size=2, max_wait_ms=100)
    b.add(1, now=0.0)
    b.add(2, now=0.5)
    assert b.next_deadline() == 0.0
    b.add(3, now=0.6)
    assert b.take_ready(now=0.6) == [[1, 2]]
    assert b.next_deadline() == pytest.approx(0.7)


def test_zero_wait_sends_partial_immediately_and_size_one_never_groups():
    b = Batcher(max_batch_size=8, max_wait_ms=0)
    b.add("x", now=5.0)
    assert b.take_ready(now=5.0) == [["x"]]
    b1 = Batcher(max_batch_size=1, max_wait_ms=1000)
    for i in range(3):
        b1.add(i, now=0.0)
    assert b1.take_ready(now=0.0) == [[0], [1], [2]]


def test_limit_takes_at_most_that_many_batches_and_keeps_the_rest_in_order():
    b = Batcher(max_batch_size=2, max_wait_ms=0)
    for i in range(5):
        b.add(i, now=0.0)
    assert b.take_ready(now=1.0, limit=0) == [] and len(b) == 5
    assert b.take_ready(now=1.0, limit=1) == [[0, 1]]
    assert b.take_ready(now=1.0, limit=2) == [[2, 3], [4]]
    assert len(b) == 0


def test_flush_returns_everything_in_bounded_batches():
    b = Batcher(max_batch_size=4, max_wait_ms=1e9)
    for i in range(10):
        b.add(i, now=0.0)
    assert b.flush() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert b.flush() == [] and len(b) == 0


@pytest.mark.parametrize("size,wait", [(0, 10), (4, -1)])
def test_bad_settings_rejected(size, wait):
    with pytest.raises(ValueError):
        Batcher(size, wait)


def test_stack_windows_pads_with_zeros_and_reports_lengths():
    rng = np.random.default_rng(0)
    arrs = [rng.standard_normal(n).astype(np.float32) for n in (5, 3, 0, 8)]
    wins = [Window("c", "a", i, 0, 1, a) for i, a in enumerate(arrs)]
    x, lengths = stack_windows(wins)
    assert x.shape == (4, 8) and x.dtype == np.float32 and lengths.dtype == np.int64
    assert lengths.tolist() == [5, 3, 0, 8]
    for row, a in zip(x, arrs):
        np.testing.assert_array_equal(row[:len(a)], a)
        assert not row[len(a):].any()
    x2, l2 = stack_windows(arrs)  # plain arrays work too
    np.testing.assert_array_equal(x2, x)


def test_stack_windows_empty_and_bad():
    x, lengths = stack_windows([])
    assert x.shape == (0, 0) and lengths.shape == (0,)
    with pytest.raises(ValueError):
        stack_windows([np.zeros((2, 2), np.float32)])
