"""Broker outage: the broker is frozen (SIGSTOP) mid-stream, then resumed (SIGCONT).

The worker must not exit, must catch up, and lose nothing: every call completes as in
the crash-free answer (`analyze_files`), duplicates identical. Default pause 8 s;
VOICETONE_SLOW_TESTS=1: 30 s (longer than the session timeout, so the group rebalances).
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.harness.reliability import SLOW, Scenario

pytestmark = [pytest.mark.broker]

SEED = int(os.environ.get("VOICETONE_REL_SEED", "23"))
PAUSE_S = float(os.environ.get("VOICETONE_OUTAGE_S", "30" if SLOW else "8"))


def test_broker_paused_and_resumed_worker_survives_and_loses_nothing(tmp_path):
    def outage(sc: Scenario) -> None:
        w = sc.workers[0]
        sc.wait_published(w)
        pgid = os.getpgid(sc.broker.proc.pid)
        sent_before = sc.feeder.sent
        os.killpg(pgid, signal.SIGSTOP)
        try:
            frozen_until = time.monotonic() + PAUSE_S
            while time.monotonic() < frozen_until:
                assert w.alive() is None, f"worker died during the outage: {w.alive()}"
                time.sleep(0.2)
        finally:
            os.killpg(pgid, signal.SIGCONT)
        sc.notes.update(outage_s=PAUSE_S, frames_sent_before=sent_before, frames_total=sc.feeder.total)
        assert sent_before < sc.feeder.total, "the outage was not mid-stream"

    sc = Scenario(tmp_path, n_calls=10, seconds=(15, 20), spread_s=15, seed=SEED)
    # Scenario.run fails if the (only) worker exits before every call is complete
    sc.run(outage, final_timeout=240)
    assert sc.workers[0].starts == 1
