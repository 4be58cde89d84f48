"""Worker crashes: SIGKILL at random (seeded) moments while calls stream; nothing is lost.

A real broker (tansu), real `voicetone worker` processes, calls paced like live
streams. The worker is SIGKILLed `KILLS` times and restarted each time; then
every event is checked against the crash-free answer of `voicetone analyze`'s
code path (`analyze_files`): every segment/aggregate index and every call
summary is published at least once, and every copy (re-emitted after a crash)
carries the same event_id and the same values (floats within 1e-5).

Default: 10 calls (3 stereo) of 15-20 s, 5 kills, about 1.5 minutes.
VOICETONE_SLOW_TESTS=1: 20 calls of 15-25 s and 12 kills.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time

import numpy as np
import pytest

from tests.harness.reliability import (SLOW, call_frames, check_against_reference, close, dump_events, make_calls,
                                PacedProducer, prepare_live, running_broker, tiny_model_path, WorkerProc,
                                workers)


SEED = int(os.environ.get("VOICETONE_REL_SEED", "20240611"))


def _run_crashes(tmp_path, n_calls: int, seconds: tuple[float, float], kills: int, spread_s: float,
                 speed: float = 1.0) -> dict:
    rnd = random.Random(SEED)
    model_path = tiny_model_path(tmp_path)
    files = make_calls(tmp_path, n_calls, seconds, seed=SEED, stereo_every=4)
    frames = call_frames(files)
    starts = sorted(rnd.uniform(0, spread_s) for _ in files)
    with running_broker(tmp_path) as broker:
        settings, ref, log = prepare_live(broker, model_path, files)
        n_channels = sum(e["type"] == "call" for e in ref)
        worker = WorkerProc(settings, tmp_path / "worker.log")
        feeder = PacedProducer(settings, frames, starts, speed)
        kill_log = []
        try:
            with workers(worker):
                worker.start()
                feeder.start()
                for k in range(kills):
                    # a random moment of this life: mostly while it processes, sometimes during
                    # start-up (group join, changelog recovery)
                    during_startup = rnd.random() < 0.25
                    if during_startup:
                        delay = rnd.uniform(0.5, 5.0)
                    else:  # once this life has published a segment, so it dies mid-call
                        delay = rnd.uniform(0.0, 3.0)
                        worker.wait_ready(timeout=90)
                        deadline = time.monotonic() + 60
                        while not worker.metric("voicetone_segments_published_total") and feeder.is_alive():
                            assert time.monotonic() < deadline, "no segment published within 60 s"
                            assert worker.alive() is None, worker.alive()
                            time.sleep(0.1)
                    started = time.monotonic()
                    while time.monotonic() - started < delay:
                        assert worker.alive() is None, worker.alive()
                        time.sleep(0.05)
                    published = worker.metric("voicetone_segments_published_total")
                    worker.kill(signal.SIGKILL)
                    kill_log.append({"kill": k + 1, "phase": "startup" if during_startup else "running",
                                     "after_s": round(delay, 2), "frames_sent": feeder.sent,
                                     "segments_published_in_life": published,
                                     "at_ms": int(time.time() * 1000)})
                    worker.start()
                feeder.join(timeout=spread_s / speed + 120)
                assert not feeder.is_alive(), "producer did not finish"
                if feeder.error:
                    raise feeder.error
                events = log.wait_for(lambda ev: len({(e["call_id"], e["channel"]) for e in ev
                                                      if e["type"] == "call"}) >= n_channels,
                                      timeout=180, what=f"{n_channels} call summaries", alive=worker.alive)
                # the last window of each channel may still be in flight for aggregates: wait for those too
                n_aggs = sum(e["type"] == "aggregate" for e in ref)
                events = log.wait_for(lambda ev: len({(e["call_id"], e["channel"], e["segment_index"])
                                                      for e in ev if e["type"] == "aggregate"}) >= n_aggs,
                                      timeout=60, what="every aggregate", alive=worker.alive)
        finally:
            log.stop()
    dump_events(tmp_path / "events.jsonl", events)
    dump_events(tmp_path / "reference.jsonl", ref)
    (tmp_path / "kills.json").write_text(json.dumps(kill_log, indent=1))
    dlq = [e for e in events if e["type"] == "dead_letter"]
    assert not dlq, f"good frames dead-lettered after restarts: {dlq[:3]}"
    stats = check_against_reference(events, ref)
    # the crashes really happened mid-stream: some lives were cut while there was still input to come
    assert sum(k["frames_sent"] < sum(len(f) for f in frames) for k in kill_log) >= min(kills, 3), kill_log
    stats["kills"] = kill_log
    stats["calls"] = n_calls
    stats["channels"] = n_channels
    (tmp_path / "stats.json").write_text(json.dumps(stats, indent=1))
    print(json.dumps(stats))
    return stats


@pytest.mark.broker
def test_sigkill_at_random_moments_loses_nothing_and_duplicates_are_identical(tmp_path):
    if SLOW:
        stats = _run_crashes(tmp_path, n_calls=20, seconds=(15, 25), kills=12, spread_s=110)
    else:
        stats = _run_crashes(tmp_path, n_calls=10, seconds=(15, 20), kills=5, spread_s=40)
    # at least some lives were killed after publishing segments (so some crashes hit mid-call)
    assert sum(bool(k["segments_published_in_life"]) for k in stats["kills"]) >= 2, stats["kills"]


# ------------------------------------------------------------------ deterministic reproduction
def _apply(p, windows, model):
    from streams.inference import prepare_batch

    sp, se = model.predict(*prepare_batch(windows, [16000] * len(windows), 16000))
    return p.apply_results(windows, sp, se)


def test_checkpoint_completed_late_does_not_commit_frames_ingested_after_it():
    """The race the live crash test hit (segment 0 of a call re-emitted with other probabilities).

    A checkpoint waits for in-flight windows; meanwhile new frames are consumed. When no open
    channel needs an old frame the watermark is None, and the agent then acks every queued frame
    (`streams/recovery.py` `Recovery.queue_checkpoint`), including frames consumed *after* the snapshot,
    whose state is not in it. After a crash the new owner resumes past them: a call that started
    in that gap loses its first frames (silence-filled, or shifted windows)."""
    from streams.pipeline import StreamProcessor
    from streams.settings import ProcessorConfig
    from tests.harness.offline import EnergyModel, frames, published, tone

    model = EnergyModel()
    a = frames("call-a", "0", tone(6.0, 300))            # ends at its last frame
    b = frames("call-b", "0", tone(7.0, 900) * np.linspace(0.2, 1, 16000 * 7, dtype=np.float32))
    msgs = a + b
    clean = _collect_clean(msgs, model)

    p = StreamProcessor(ProcessorConfig(), "v")
    before, in_flight, offset = [], [], 0
    for k, v in a:                                           # call A, whose last windows stay in flight
        out = p.ingest(v, k, 0, offset)
        in_flight += out.windows
        before += published(out)
        offset += 1
    assert p.request_checkpoint(0).checkpoints == []      # pending: A's windows are in flight
    for k, v in b[:12]:                                      # call B starts meanwhile
        out = p.ingest(v, k, 0, offset)
        assert not out.windows
        offset += 1
    res = _apply(p, in_flight, model)
    before += published(res)
    [(_, state, watermark)] = res.checkpoints
    # the agent acks (so Kafka commits) every consumed frame below the watermark, all of them if None
    committed = watermark if watermark is not None else offset
    # crash; the new owner restores the checkpoint and reads from the committed offset
    q = StreamProcessor(ProcessorConfig(), "v")
    q.restore(0, state)
    after, pending = [], []
    for off in range(committed, len(msgs)):
        k, v = msgs[off]
        out = q.ingest(v, k, 0, off)
        pending += out.windows
        after += published(out)
    res = _apply(q, pending, model)
    after += published(res)
    got = {}
    for e in before + after:
        got.setdefault((e["type"], e["call_id"], e.get("segment_index")), []).append(e)
    for key, want in clean.items():
        assert key in got, f"{key} never published"
        for e in got[key]:
            assert close(e, want), f"{key}: got {e}\nwant {want}"


def _collect_clean(msgs, model) -> dict:
    from streams.pipeline import StreamProcessor
    from streams.settings import ProcessorConfig
    from tests.harness.offline import published

    p = StreamProcessor(ProcessorConfig(), "v")
    events, pending = [], []
    for off, (k, v) in enumerate(msgs):
        out = p.ingest(v, k, 0, off)
        pending += out.windows
        events += published(out)
    res = _apply(p, pending, model)
    events += published(res)
    return {(e["type"], e["call_id"], e.get("segment_index")): e for e in events}
