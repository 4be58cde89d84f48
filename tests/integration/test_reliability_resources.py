"""Resources: abandoned calls are expired by the idle timeout; a cap bounds open channels.

* N calls start and never send `end`: after VOICETONE_IDLE_TIMEOUT_S every one gets its
  call summary (`ended_by: idle_timeout`) and the worker's `voicetone_active_channels`
  gauge returns to 0 (worker RSS before/after is recorded in stats). Default N=300,
  VOICETONE_SLOW_TESTS=1: 10,000.
* VOICETONE_MAX_ACTIVE_CHANNELS=50 and 80 concurrent calls: exactly 50 are served, every
  frame of the other 30 is dead-lettered with reason `capacity`, the worker lives on.
"""

from __future__ import annotations

import collections
import json
import time

import numpy as np
import pytest

from schemas.audio import encode_audio
from schemas.frames import encode_frame
from tests.harness.reliability import (SLOW, EventLog, WorkerProc, base_settings, create_topics, produce_all,
                                running_broker, tiny_model_path, workers)

pytestmark = [pytest.mark.broker]

N_ABANDONED = 10000 if SLOW else 300


def _frames(call: str, n: int, rng) -> list[tuple[bytes, bytes]]:
    out = []
    for seq in range(n):
        audio = (0.1 * rng.standard_normal(1600)).astype(np.float32)
        out.append((call.encode(), encode_frame({"v": 1, "call_id": call, "channel": "0", "seq": seq,
                                                 "sample_rate": 16000, "encoding": "pcm_s16le",
                                                 "audio": encode_audio("pcm_s16le", audio)})))
    return out


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _wait_metric(w: WorkerProc, name: str, pred, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while True:
        assert w.alive() is None, w.alive()
        v = w.metric(name)
        if v is not None and pred(v):
            return v
        assert time.monotonic() < deadline, f"{name}={v} after {timeout:.0f} s"
        time.sleep(0.2)


def test_abandoned_calls_expire_and_open_channels_return_to_zero(tmp_path):
    rng = np.random.default_rng(5)
    idle_s = 3.0
    with running_broker(tmp_path) as broker:
        settings = base_settings(broker.url, tiny_model_path(tmp_path))
        create_topics(settings)
        log = EventLog(settings, [settings.calls_topic, settings.dlq_topic])
        log.start()
        w = WorkerProc(settings, tmp_path / "worker.log", {"VOICETONE_IDLE_TIMEOUT_S": str(idle_s)})
        try:
            with workers(w):
                w.start()
                w.wait_ready()
                # one call first, so that the baseline includes what the first inference allocates
                # (torch's thread pool and arenas) and the drop measured below is the channels' own
                produce_all(settings, _frames("warm-up", 20, rng))
                log.wait_for(lambda ev: any(e["type"] == "call" for e in ev), 60, "the warm-up call", w.alive)
                time.sleep(2.5)
                rss_start = _rss_mb(w.proc.pid)
                msgs = []
                for i in range(N_ABANDONED):  # 1 in 10 long enough for a (final, partial) window
                    msgs += _frames(f"gone-{i:05d}", 20 if i % 10 == 0 else 3, rng)
                produce_all(settings, msgs)
                peak = _wait_metric(w, "voicetone_active_channels", lambda v: v > 0, 60)
                rss_peak = _rss_mb(w.proc.pid)
                samples = [rss_peak]

                def all_summarised(ev) -> bool:
                    samples.append(_rss_mb(w.proc.pid))
                    return sum(e["type"] == "call" for e in ev) >= N_ABANDONED + 1

                events = log.wait_for(all_summarised, timeout=120 + N_ABANDONED / 50,
                                      what=f"{N_ABANDONED} idle call summaries", alive=w.alive)
                _wait_metric(w, "voicetone_active_channels", lambda v: v == 0, 30)
                time.sleep(2.5)  # the next housekeeping ticks give free memory back
                rss_end = _rss_mb(w.proc.pid)
                rss_peak = max(samples)
        finally:
            log.stop()
    calls = [e for e in events if e["type"] == "call" and e["call_id"] != "warm-up"]
    assert {e["call_id"] for e in calls} == {f"gone-{i:05d}" for i in range(N_ABANDONED)}
    assert {e["ended_by"] for e in calls} == {"idle_timeout"}
    assert not [e for e in events if e["type"] == "dead_letter"]
    long_calls = [e for e in calls if int(e["call_id"][5:]) % 10 == 0]
    assert all(e["segments"] == 1 and e["duration_ms"] == 2000 for e in long_calls), long_calls[:3]
    stats = {"abandoned": N_ABANDONED, "peak_active_channels_seen": peak, "rss_mb_start": round(rss_start),
             "rss_mb_peak": round(rss_peak), "rss_mb_end": round(rss_end)}
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    print(json.dumps(stats))
    # memory goes back down: what stays is bounded bookkeeping (the keys of ended channels, remembered
    # 10 min to reject late frames) and allocator slack, not the channels' audio.
    # Before buffers started small and free heap was given back: 336 MB -> 1,526 MB after 10,000.
    assert rss_end - rss_start <= 40 + 0.3 * (rss_peak - rss_start), stats


def test_channel_cap_dead_letters_capacity_and_serves_the_rest(tmp_path):
    rng = np.random.default_rng(6)
    cap, n_calls, frames_each = 50, 80, 3
    with running_broker(tmp_path) as broker:
        settings = base_settings(broker.url, tiny_model_path(tmp_path))
        create_topics(settings)
        log = EventLog(settings, [settings.calls_topic, settings.dlq_topic])
        log.start()
        w = WorkerProc(settings, tmp_path / "worker.log",
                       {"VOICETONE_IDLE_TIMEOUT_S": "5", "VOICETONE_MAX_ACTIVE_CHANNELS": str(cap)})
        try:
            with workers(w):
                w.start()
                w.wait_ready()
                msgs = [m for i in range(n_calls) for m in _frames(f"cap-{i:03d}", frames_each, rng)]
                # interleave the calls' frames so all are open at once
                msgs = [msgs[c * frames_each + s] for s in range(frames_each) for c in range(n_calls)]
                produce_all(settings, msgs)
                events = log.wait_for(lambda ev: sum(e["type"] == "call" for e in ev) >= cap
                                      and sum(e["type"] == "dead_letter" for e in ev)
                                      >= (n_calls - cap) * frames_each,
                                      timeout=90, what="summaries of the served calls and capacity dead letters",
                                      alive=w.alive)
                _wait_metric(w, "voicetone_active_channels", lambda v: v == 0, 30)
                counted = w.metric("voicetone_dead_letters_total", 'reason="capacity"')
        finally:
            log.stop()
    served = {e["call_id"] for e in events if e["type"] == "call"}
    dl = [e for e in events if e["type"] == "dead_letter"]
    assert {e["reason"] for e in dl} == {"capacity"}, collections.Counter(e["reason"] for e in dl)
    assert all("max_active_channels=50" in e["detail"] for e in dl), dl[0]["detail"]
    per_call = collections.Counter(e["key_b64"] for e in dl)
    rejected = {__import__("base64").b64decode(k).decode() for k in per_call}
    assert len(served) == cap and not served & rejected and len(served | rejected) == n_calls
    assert set(per_call.values()) == {frames_each}  # every frame of a rejected call, each once
    assert counted == (n_calls - cap) * frames_each
