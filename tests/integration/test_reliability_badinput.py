"""Live fuzz run: malformed and hostile frames among good calls, against a real worker.

(Property-based tests of the decoders and the window state are in
tests/schemas/test_schemas_frames.py, tests/schemas/test_schemas_audio.py and tests/streams/test_windowing.py;
this is the end-to-end run on the real broker.)

Seeded hostile frames are interleaved at random positions with the frames of good
calls, many on the good calls' own keys (same partitions): truncated msgpack, random
bytes, non-map values, wrong types, unknown/missing fields, unknown encodings, absurd
sample rates, NaN/inf audio, misaligned audio, frames of several MB, negative or huge
`seq`, key != call_id, frames holding too much audio, huge gaps. Asserts:

* the worker never exits and logs no traceback;
* every bad frame is in the DLQ (by partition and offset) with a reason code, and the
  worker's dead-letter counter equals the number of bad frames;
* the good calls' events equal the clean answer (`analyze_files`), float tolerance 1e-5.

Default: 1,500 bad frames; VOICETONE_SLOW_TESTS=1: 12,000.
"""

from __future__ import annotations

import base64
import collections
import json
import math
import os
import random
import struct
import time

import msgpack
import pytest

from schemas.errors import REASONS
from streams.kafka_client import produce
from tests.harness.reliability import (SLOW, call_frames, check_against_reference, dump_events, make_calls,
                                prepare_live, running_broker, tiny_model_path, WorkerProc, workers)

pytestmark = [pytest.mark.broker]

SEED = int(os.environ.get("VOICETONE_REL_SEED", "7"))
N_BAD = int(os.environ.get("VOICETONE_FUZZ_FRAMES", "12000" if SLOW else "1500"))
BIG_FRAME_BYTES = 3_000_000


_NOT_STR = [None, 1, 1.5, [1], {"a": 1}, b"bytes", True]
_NOT_INT = [None, "1", 1.5, True, False, [1], b"\x01"]
WRONG_VALUES = {  # every value here is refused by the decoder whatever the rest of the frame
    "v": _NOT_INT, "call_id": _NOT_STR + [""], "channel": _NOT_STR + ["", "c" * 65],
    "seq": _NOT_INT, "sample_rate": _NOT_INT, "encoding": _NOT_STR,
    "audio": [None, "text", 1, [1, 2], {"a": b"x"}], "ts_ms": ["1", 1.5, True, [1], -5],
    "end": [1, 0, "yes", None, [True]],
}


#: the dead-letter reason each kind of hostile frame must get
EXPECTED_REASONS = {
    "truncated": {"malformed_msgpack"}, "random_bytes": {"malformed_msgpack", "not_a_map"},
    "empty": {"malformed_msgpack"}, "nested_bomb": {"malformed_msgpack"}, "not_a_map": {"not_a_map"},
    "wrong_type": {"bad_field"}, "unknown_field": {"unknown_field"}, "missing_field": {"missing_field"},
    "bad_version": {"unsupported_version"}, "unknown_encoding": {"unknown_encoding"},
    "absurd_rate": {"bad_sample_rate"}, "nan_inf": {"non_finite_audio"}, "misaligned": {"misaligned_audio"},
    "negative_seq": {"bad_field"}, "huge_seq": {"bad_field"}, "key_mismatch": {"key_mismatch"},
    "non_utf8_key": {"key_mismatch"}, "too_long": {"frame_too_long"}, "gap": {"gap_too_large"},
    "big": {"frame_too_large"},
}


def _good_fields(rng: random.Random, call_id: str) -> dict:
    n = rng.choice([0, 160, 800, 1600])
    return {"v": 1, "call_id": call_id, "channel": rng.choice(["0", "agent", "x"]),
            "seq": rng.randrange(0, 5), "sample_rate": 16000, "encoding": "pcm_s16le",
            "audio": bytes(2 * n)}


def hostile_frame(rng: random.Random, call_ids: list[str], big: bool = True) -> tuple[str, bytes, bytes]:
    """(kind, key, value) of one frame that must be dead-lettered whatever the worker's state."""
    call = rng.choice(call_ids)
    key = call.encode()
    f = _good_fields(rng, call)
    kind = rng.choice([
        "truncated", "random_bytes", "not_a_map", "wrong_type", "unknown_field", "missing_field",
        "bad_version", "unknown_encoding", "absurd_rate", "nan_inf", "misaligned", "negative_seq",
        "huge_seq", "key_mismatch", "non_utf8_key", "too_long", "gap", "empty", "nested_bomb", "big",
    ])
    if kind == "big" and (not big or rng.random() > 0.02):  # keep multi-MB frames rare (a few per thousand)
        kind = "huge_seq"
    if kind == "truncated":
        raw = msgpack.packb(f, use_bin_type=True)
        return kind, key, raw[:rng.randrange(1, len(raw))]
    if kind == "random_bytes":
        raw = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 200)))
        try:  # the odd random string that decodes as a valid map is not "bad": make sure it is not
            if isinstance(msgpack.unpackb(raw, raw=False), dict):
                raw = b"\xc1" + raw
        except Exception:
            pass
        return kind, key, raw
    if kind == "not_a_map":
        return kind, key, msgpack.packb(rng.choice([[1, 2, 3], 42, "frame", None, True, 1.5, b"\x00"]))
    if kind == "wrong_type":
        field = rng.choice(sorted(WRONG_VALUES))
        f[field] = rng.choice(WRONG_VALUES[field])
    elif kind == "unknown_field":
        f[rng.choice(["extra", "Call_ID", "seq2", "\u202e"])] = 1
    elif kind == "missing_field":
        del f[rng.choice(["v", "call_id", "seq", "sample_rate", "encoding", "audio"])]
    elif kind == "bad_version":
        f["v"] = rng.choice([0, 2, 99, -1, 2**40])
    elif kind == "unknown_encoding":
        f["encoding"] = rng.choice(["opus", "PCM_S16LE", "", "f64le", "g729", "\x00"])
    elif kind == "absurd_rate":
        f["sample_rate"] = rng.choice([0, -1, 1, 7999, 48001, 10**9, 2**63 - 1, -2**63])
    elif kind == "nan_inf":
        vals = [rng.choice([math.nan, math.inf, -math.inf]) if rng.random() < 0.1 else 0.1 for _ in range(160)]
        vals[rng.randrange(160)] = math.nan
        f["encoding"], f["audio"] = "f32le", struct.pack(f"<{len(vals)}f", *vals)
    elif kind == "misaligned":
        f["audio"] = bytes(2 * rng.randrange(1, 100) + 1)
    elif kind == "negative_seq":
        f["seq"] = rng.choice([-1, -2**31, -2**63])
    elif kind == "huge_seq":
        f["seq"] = rng.choice([2**53 + 1, 2**63 - 1, 2**64 - 1])
    elif kind == "key_mismatch":
        f["call_id"] = call + rng.choice(["-other", "x", " "])
    elif kind == "non_utf8_key":
        key = b"\xff\xfe" + key
    elif kind == "too_long":
        f["audio"] = bytes(2 * 16000 * 6)  # 6 s in one frame > max_frame_ms
    elif kind == "gap":
        # valid frame of a call of its own whose seq opens a gap far beyond max_gap_ms
        f["call_id"] = call = f"gap-{rng.randrange(10**9)}"
        key = call.encode()
        f["seq"] = 10**9 + rng.randrange(1000)
        f["audio"] = bytes(3200)
    elif kind == "empty":
        return kind, key, b""
    elif kind == "nested_bomb":
        raw = b"\x91" * 5000 + b"\xc0"  # 5000 nested one-element arrays
        return kind, key, raw
    elif kind == "big":
        f["audio"] = bytes(BIG_FRAME_BYTES)
    return kind, key, msgpack.packb(f, use_bin_type=True)


def test_hostile_frames_are_dead_lettered_and_good_calls_unaffected(tmp_path):
    """Every kind but multi-MB frames (see the next test), N_BAD frames."""
    rng = random.Random(SEED)
    files = make_calls(tmp_path, 4, (10, 14), seed=SEED, stereo_every=3)
    call_ids = [f.stem for f in files]
    _fuzz_run(tmp_path, files, [hostile_frame(rng, call_ids, big=False) for _ in range(N_BAD)])


def test_multi_megabyte_frames_are_dead_lettered_without_crashing_the_worker(tmp_path):
    rng = random.Random(SEED)
    files = make_calls(tmp_path, 2, (8, 10), seed=SEED + 1)
    call_ids = [f.stem for f in files]
    bad = [hostile_frame(rng, call_ids, big=False) for _ in range(20)]
    for size in (1_200_000, 2_500_000, 5_000_000):
        f = _good_fields(rng, call_ids[0])
        f["audio"] = bytes(size)
        bad.append(("big", call_ids[0].encode(), msgpack.packb(f, use_bin_type=True)))
    rng.shuffle(bad)
    _fuzz_run(tmp_path, files, bad)


def _fuzz_run(tmp_path, files, bad: list[tuple[str, bytes, bytes]]) -> dict:
    rng = random.Random(SEED + 2)
    n_bad = len(bad)
    model_path = tiny_model_path(tmp_path)
    good = [m for call in call_frames(files) for m in call]
    good.sort(key=lambda m: m[0])  # the calls' frames interleaved in audio time
    # interleave: each bad frame at a random position among the good ones (good order kept)
    slots = sorted(rng.randrange(len(good) + 1) for _ in bad)
    stream, gi = [], 0
    for slot, b in zip(slots, bad):
        while gi < slot:
            stream.append(("good", good[gi][1], good[gi][2]))
            gi += 1
        stream.append(b)
    stream += [("good", k, v) for _, k, v in good[gi:]]

    with running_broker(tmp_path) as broker:
        settings, ref, log = prepare_live(broker, model_path, files)
        n_channels = sum(e["type"] == "call" for e in ref)
        worker = WorkerProc(settings, tmp_path / "worker.log")
        try:
            with workers(worker):
                worker.start()
                worker.wait_ready()
                p = _big_producer(settings)
                delivered: dict[int, tuple] = {}
                errors = []

                def report(i):
                    def cb(err, msg):
                        if err is not None:
                            errors.append(f"{stream[i][0]}: {err}")
                        else:
                            delivered[i] = (msg.partition(), msg.offset())
                    return cb

                started = time.monotonic()
                for i, (kind, key, value) in enumerate(stream):
                    produce(p, settings.input_topic, key, value, report(i))
                    p.poll(0)
                assert p.flush(120) == 0 and not errors, errors[:5]
                produced_s = time.monotonic() - started
                bad_at = {delivered[i]: stream[i][0] for i in range(len(stream)) if stream[i][0] != "good"}
                raw_at = {delivered[i]: stream[i][2] for i in range(len(stream)) if stream[i][0] != "good"}
                assert len(bad_at) == n_bad

                def done(ev):
                    dl = {(e["partition"], e["offset"]) for e in ev if e["type"] == "dead_letter"}
                    calls = {(e["call_id"], e["channel"]) for e in ev if e["type"] == "call"}
                    return len(dl & bad_at.keys()) == n_bad and len(calls) >= n_channels
                events = log.wait_for(done, timeout=120 + n_bad / 50, what="every dead letter and call summary",
                                      alive=worker.alive)
                settle = time.monotonic() + 3  # anything published twice or unexpected shows up now
                while time.monotonic() < settle:
                    assert worker.alive() is None, worker.alive()
                    time.sleep(0.2)
                events = log.snapshot()
                counted = worker.metric("voicetone_dead_letters_total")
                assert worker.alive() is None, worker.alive()
                log_text = worker.log_path.read_text(errors="replace")
        finally:
            log.stop()
    dump_events(tmp_path / "events.jsonl", events)
    dlq = [e for e in events if e["type"] == "dead_letter"]
    by_offset = collections.defaultdict(list)
    for e in dlq:
        by_offset[(e["partition"], e["offset"])].append(e)
    # only bad frames are dead-lettered; each with a reason code and its raw bytes
    stray = [k for k in by_offset if k not in bad_at]
    assert not stray, f"good frames dead-lettered: {[by_offset[k][0]['reason'] for k in stray[:5]]}"
    reasons = collections.Counter()
    kinds_by_reason = collections.defaultdict(collections.Counter)
    for pos, kind in bad_at.items():
        e = by_offset[pos][0]
        assert e["reason"] in REASONS and e["reason"] in EXPECTED_REASONS[kind], (kind, e["reason"], e["detail"])
        kept = base64.b64decode(e["value_b64"])
        if kind == "big":  # a multi-MB value may be kept truncated (the dead letter must stay publishable)
            assert kept and raw_at[pos].startswith(kept), (kind, "raw value not kept")
        else:
            assert kept == raw_at[pos], (kind, "raw value not kept")
        assert e["detail"], e
        assert e["topic"] == settings.input_topic
        reasons[e["reason"]] += 1
        kinds_by_reason[kind][e["reason"]] += 1
    assert counted == n_bad, f"voicetone_dead_letters_total={counted}, bad frames sent: {n_bad}"
    assert "Traceback" not in log_text, log_text[log_text.index("Traceback") - 500:][:4000]
    stats = check_against_reference([e for e in events if e["type"] != "dead_letter"], ref)
    stats.update(bad_frames=n_bad, good_frames=len(good), produce_s=round(produced_s, 1),
                 reasons=dict(reasons), kinds={k: dict(v) for k, v in kinds_by_reason.items()})
    (tmp_path / "stats.json").write_text(json.dumps(stats, indent=1))
    print(json.dumps(stats))
    return stats


def _big_producer(settings):
    from confluent_kafka import Producer

    return Producer({**settings.confluent_config(), "linger.ms": 5, "enable.idempotence": True,
                     "message.max.bytes": 8_000_000})
