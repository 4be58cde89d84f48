"""Rebalance: two workers in one consumer group; one is stopped (SIGTERM) mid-stream.

Its partitions move to the other worker, which restores their checkpoints from the
changelogged table and re-reads from the committed offsets: every call completes,
every segment index is published at least once, and every copy equals the crash-free
answer (`analyze_files`), same event_id, floats within 1e-5.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.harness.reliability import SLOW, Scenario

pytestmark = [pytest.mark.broker]

SEED = int(os.environ.get("VOICETONE_REL_SEED", "11"))


def _stop_one(sc: Scenario) -> None:
    a, b = sc.workers
    # both own partitions (the group has rebalanced over the two)
    deadline = time.monotonic() + 60
    while not ((a.assigned() or 0) >= 1 and (b.assigned() or 0) >= 1):
        assert time.monotonic() < deadline, f"partitions not spread: {a.assigned()}, {b.assigned()}"
        time.sleep(0.2)
    sc.notes["partitions_before"] = [a.assigned(), b.assigned()]
    sc.wait_published(b)
    time.sleep(sc.rnd.uniform(0.0, 3.0))  # a random moment while it processes
    sc.notes["frames_sent_at_stop"] = sc.feeder.sent
    sc.notes["segments_published_by_stopped"] = b.metric("voicetone_segments_published_total")
    b.kill(signal.SIGTERM)
    code = b.wait_exit(timeout=30)
    assert code == 0, f"SIGTERM: worker exited with {code}; log:\n{b.log_tail()}"
    assert sc.feeder.sent < sc.feeder.total, "the stop was not mid-stream"
    deadline = time.monotonic() + 60
    while (a.assigned() or 0) < sc.settings.topic_partitions:
        assert time.monotonic() < deadline, f"survivor owns {a.assigned()} partitions"
        assert a.alive() is None, a.alive()
        time.sleep(0.2)
    sc.notes["survivor_published_before_takeover"] = a.metric("voicetone_segments_published_total")


def test_sigterm_one_of_two_workers_its_calls_complete_on_the_other(tmp_path):
    n, spread = (16, 40) if SLOW else (10, 20)
    sc = Scenario(tmp_path, n_calls=n, seconds=(15, 20), spread_s=spread, seed=SEED, n_workers=2)
    stats = sc.run(_stop_one)
    # the stopped worker had calls in progress; every call completed (on the survivor, the only one left)
    assert stats["segments_published_by_stopped"] > 0
