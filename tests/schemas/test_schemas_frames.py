"""Audio frames: round trips, one specific bad frame per reason code, and fuzzing."""

import msgpack
import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.audio import ENCODINGS, SAMPLE_WIDTH, encode_audio
from schemas.codecs import FrameCodec, register_codecs
from schemas.errors import REASONS, FrameError
from schemas.frames import (AudioFrame, DecodedFrame, fast_fields, _unpack, check_frame_fields, decode_frame,
                            encode_frame)


def fields(**over):
    base = {"v": 1, "call_id": "call-1", "channel": "agent", "seq": 7, "sample_rate": 16000,
            "encoding": "pcm_s16le", "audio": b"\x00\x01" * 160, "ts_ms": 1_700_000_000_000}
    base.update(over)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


def pack(d):
    return msgpack.packb(d, use_bin_type=True)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_round_trip_every_encoding(encoding):
    x = (np.sin(np.arange(800) * 0.05) * 0.5).astype(np.float32)
    raw = encode_frame(fields(encoding=encoding, audio=encode_audio(encoding, x), sample_rate=8000))
    d = decode_frame(raw, key=b"call-1")
    assert isinstance(d, DecodedFrame)
    assert d.frame.encoding == encoding and d.frame.sample_rate == 8000 and d.frame.seq == 7
    assert d.samples.dtype == np.float32 and d.samples.size == 800
    assert np.abs(d.samples - x).max() < 0.02
    assert d.duration_ms == 100.0
    assert decode_frame(encode_frame(d.frame)).frame == d.frame


def test_defaults_and_optional_fields():
    d = decode_frame(pack(fields(channel=_DROP, ts_ms=_DROP)))
    assert d.frame.channel == "0" and d.frame.ts_ms is None and d.frame.end is False
    d = decode_frame(pack(fields(ts_ms=None, end=True, audio=b"")))
    assert d.frame.end is True and d.samples.size == 0


def test_meta_round_trips_and_is_left_out_when_unset():
    ids = {"transactionId": "tx-1", "streamArn": "arn:aws:kinesisvideo:us-east-1:1:stream/s/1"}
    d = decode_frame(pack(fields(meta=ids)))
    assert d.frame.meta == ids and decode_frame(encode_frame(d.frame)).frame.meta == ids
    assert b"meta" not in encode_frame(decode_frame(pack(fields())).frame)
    with pytest.raises(FrameError, match="meta"):
        decode_frame(pack(fields(meta={"k": 1})))


def test_key_may_be_str_or_bytes():
    raw = pack(fields(call_id="ünï"))
    assert decode_frame(raw, key="ünï").frame.call_id == "ünï"
    assert decode_frame(raw, key="ünï".encode()).frame.call_id == "ünï"


def test_model_and_decoder_agree():
    f = AudioFrame(call_id="c", seq=0, sample_rate=8000, encoding="mulaw", audio=b"\xff" * 8)
    assert f.v == 1 and f.channel == "0"
    with pytest.raises(ValidationError) as e:
        AudioFrame(call_id="c", seq=0, sample_rate=7999, encoding="mulaw", audio=b"")
    assert e.value.errors()[0]["type"] == "bad_sample_rate"
    with pytest.raises(ValidationError) as e:
        AudioFrame(call_id="c", seq="1", sample_rate=8000, encoding="mulaw", audio=b"")
    assert e.value.errors()[0]["type"] == "bad_field"


BAD_FRAMES = [
    ("not_a_map", pack([1, 2, 3]), None),
    ("not_a_map", pack("call"), None),
    ("malformed_msgpack", b"\xc1", None),  # 0xc1 is never used in msgpack
    ("malformed_msgpack", pack(fields())[:-5], None),  # truncated
    ("malformed_msgpack", pack(fields()) + b"\x00", None),  # trailing data
    ("malformed_msgpack", b"\x81\xa7call_id\xa2\xff\xfe", None),  # str that is not UTF-8
    ("malformed_msgpack", b"\x81\x01\x02", None),  # int map key (strict_map_key)
    ("missing_field", pack(fields(v=_DROP)), None),
    ("missing_field", pack(fields(audio=_DROP)), None),
    ("missing_field", pack(fields(seq=_DROP)), None),
    ("bad_field", pack(fields(seq="7")), None),
    ("bad_field", pack(fields(seq=True)), None),
    ("bad_field", pack(fields(seq=-1)), None),
    ("bad_field", pack(fields(seq=2**53 + 1)), None),
    ("bad_field", pack(fields(v="1")), None),
    ("bad_field", pack(fields(call_id="")), None),
    ("bad_field", pack(fields(call_id="x" * 257)), None),
    ("bad_field", pack(fields(channel="c" * 65)), None),
    ("bad_field", pack(fields(channel=3)), None),
    ("bad_field", pack(fields(audio="text")), None),
    ("bad_field", pack(fields(ts_ms=1.5)), None),
    ("bad_field", pack(fields(end=1)), None),
    ("bad_field", pack(fields(sample_rate="16000")), None),
    ("bad_field", pack(fields(encoding=1)), None),
    ("unknown_field", pack(fields(speaker="bob")), None),
    ("unknown_field", pack({**fields(), b"raw": 1}), None),
    ("unsupported_version", pack(fields(v=2)), None),
    ("unsupported_version", pack(fields(v=0, extra_v2_field=1)), None),
    ("unknown_encoding", pack(fields(encoding="opus")), None),
    ("bad_sample_rate", pack(fields(sample_rate=7999)), None),
    ("bad_sample_rate", pack(fields(sample_rate=48001)), None),
    ("misaligned_audio", pack(fields(audio=b"\x00" * 3)), None),
    ("misaligned_audio", pack(fields(encoding="f32le", audio=b"\x00" * 6)), None),
    ("non_finite_audio", pack(fields(encoding="f32le", audio=np.array([0, np.nan], "<f4").tobytes())), None),
    ("frame_too_large", b"\x00" * 1_000_001, None),
    ("frame_too_long", pack(fields(audio=b"\x00\x00" * 80001)), None),  # 5000.06 ms at 16 kHz
    ("key_mismatch", pack(fields()), b"call-2"),
    ("key_mismatch", pack(fields()), b"\xff\xfe"),
]


@pytest.mark.parametrize("reason,raw,key", BAD_FRAMES, ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(BAD_FRAMES)])
def test_each_reason_code(reason, raw, key):
    assert reason in REASONS
    with pytest.raises(FrameError) as e:
        decode_frame(raw, key=key)
    assert e.value.reason == reason, str(e.value)
    assert e.value.detail


def test_every_frame_reason_is_reachable():
    covered = {r for r, _, _ in BAD_FRAMES}
    from schemas.errors import FRAME_REASONS
    assert covered == set(FRAME_REASONS)


def test_limits_are_parameters():
    raw = pack(fields(audio=b"\x00\x00" * 1600))  # 100 ms
    with pytest.raises(FrameError, match="frame_too_long"):
        decode_frame(raw, max_frame_ms=99)
    decode_frame(raw, max_frame_ms=100)
    with pytest.raises(FrameError, match="frame_too_large"):
        decode_frame(raw, max_frame_bytes=len(raw) - 1)
    decode_frame(raw, max_frame_bytes=len(raw))


def test_size_checked_before_unpacking():
    """An oversized value is refused as too large even if it is not msgpack at all."""
    with pytest.raises(FrameError) as e:
        decode_frame(b"\xc1" * 101, max_frame_bytes=100)
    assert e.value.reason == "frame_too_large"


def test_non_bytes_value():
    for bad in (None, "text", 12, [b"x"]):
        with pytest.raises(FrameError):
            decode_frame(bad)


def test_encode_frame_validates():
    with pytest.raises(FrameError) as e:
        encode_frame(fields(sample_rate=100))
    assert e.value.reason == "bad_sample_rate"
    raw = encode_frame(fields(ts_ms=None))
    assert set(msgpack.unpackb(raw)) == {"v", "call_id", "channel", "seq", "sample_rate", "encoding", "audio"}


def test_faust_frame_codec_round_trip():
    register_codecs()
    register_codecs()  # idempotent
    from faust.serializers import codecs
    codec = codecs.get_codec("vt_msgpack")
    assert isinstance(codec, FrameCodec)
    frame = AudioFrame(call_id="c", seq=1, sample_rate=8000, encoding="alaw", audio=b"\xd5" * 4)
    out = codec.loads(codec.dumps(frame))
    assert isinstance(out, DecodedFrame) and out.frame == frame
    assert out.samples.tolist() == [8 / 32768] * 4
    assert codec.loads(codec.dumps(out)).frame == frame
    with pytest.raises(FrameError):
        codec.loads(b"\xc1")


# --- fuzzing: decode_frame raises nothing but FrameError ----------------------

def _assert_only_frame_error(raw, key=None):
    try:
        decode_frame(raw, key=key)
    except FrameError as e:
        assert e.reason in REASONS
        str(e)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.one_of(st.none(), st.binary(max_size=8), st.text(max_size=8)))
def test_fuzz_arbitrary_bytes(raw, key):
    _assert_only_frame_error(raw, key)


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**64), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10), st.binary(max_size=16),
)
_values = st.recursive(_scalars, lambda c: st.one_of(st.lists(c, max_size=3),
                                                     st.dictionaries(st.text(max_size=5), c, max_size=3)),
                       max_leaves=8)
_valid_fields = {
    "v": st.just(1),
    "call_id": st.just("call-1"),
    "channel": st.text(min_size=1, max_size=64),
    "seq": st.integers(0, 2**53),
    "sample_rate": st.integers(8000, 48000),
    "encoding": st.sampled_from(ENCODINGS),
    "audio": st.binary(max_size=64),
    "ts_ms": st.one_of(st.none(), st.integers(0, 2**53)),
    "end": st.booleans(),
    "meta": st.one_of(st.none(), st.dictionaries(st.text(max_size=65), st.text(max_size=1025), max_size=17)),
}


@st.composite
def _near_valid_maps(draw):
    """Mostly-valid frames with a few fields missing, mistyped or extra: reaches deep checks."""
    d = {}
    for name, valid in _valid_fields.items():
        roll = draw(st.integers(0, 19))
        if roll == 0:
            continue  # drop the field
        d[name] = draw(_scalars) if roll == 1 else draw(valid)
    if draw(st.integers(0, 9)) == 0:
        d.update(draw(st.dictionaries(st.text(max_size=6), _values, max_size=2)))
    return d


def _packable(x):
    try:
        return pack(x)
    except (OverflowError, ValueError, TypeError):
        return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_values, _near_valid_maps()), st.one_of(st.none(), st.just(b"call-1"), st.binary(max_size=4)))
def test_fuzz_msgpack_structures(obj, key):
    raw = _packable(obj)
    if raw is not None:
        _assert_only_frame_error(raw, key)
        _assert_only_frame_error(raw[: len(raw) // 2], key)


@settings(max_examples=100, deadline=None)
@given(_near_valid_maps())
def test_fuzz_valid_frames_round_trip(d):
    """Whatever decode_frame accepts, encode_frame writes back to an equal frame."""
    raw = _packable(d)
    if raw is None:
        return
    try:
        got = decode_frame(raw)
    except FrameError as e:
        event(f"rejected: {e.reason}")
        return
    event("accepted")
    assert decode_frame(encode_frame(got.frame)).frame == got.frame
    assert np.array_equal(decode_frame(encode_frame(got.frame)).samples, got.samples, equal_nan=False)


def _typed(d: dict) -> dict:
    return {k: (type(v), v) for k, v in d.items()}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_near_valid_maps(), _values))
def test_fast_decoder_accepts_exactly_what_the_reference_accepts(obj):
    """decode_frame's msgspec path must agree with check_frame_fields: same frames
    accepted (so valid traffic takes the fast path) with the same typed fields."""
    raw = _packable(obj)
    if raw is None:
        return
    fast = fast_fields(raw)
    try:
        ref = check_frame_fields(_unpack(raw))
        if len(ref["audio"]) % SAMPLE_WIDTH[ref["encoding"]]:
            ref = None
    except FrameError as e:
        event(f"reference rejects: {e.reason}")
        ref = None
    if ref is None:
        assert fast is None
        return
    event("both accept")
    assert fast is not None, f"the fast path refused a valid frame: {obj!r}"
    assert _typed(msgspec.structs.asdict(fast)) == _typed(ref)


@pytest.mark.parametrize("over", [
    {"call_id": "x" * 256}, {"channel": "é" * 64}, {"seq": 2**53}, {"ts_ms": None}, {"end": True},
    {"sample_rate": 48000}, {"encoding": "f32le", "audio": b"\0" * 8}, {"meta": None}, {"meta": {}},
    {"meta": {f"k{i}": "v" * 1024 for i in range(16)}}, {"meta": {"k" * 64: ""}},
])
def test_fast_decoder_edges_valid(over):
    raw = pack(fields(**over))
    assert fast_fields(raw) is not None
    assert _typed(msgspec.structs.asdict(fast_fields(raw))) == _typed(check_frame_fields(_unpack(raw)))


@pytest.mark.parametrize("over", [
    {"call_id": "x" * 257}, {"channel": "é" * 65}, {"channel": ""}, {"seq": 2**53 + 1}, {"seq": -1}, {"seq": True},
    {"seq": 7.0}, {"end": 1}, {"v": True}, {"v": 2}, {"sample_rate": 7999}, {"encoding": "PCM_S16LE"},
    {"audio": "text"}, {"audio": b"\0"}, {"extra": 1}, {"ts_ms": -5}, {"meta": []}, {"meta": "x"},
    {"meta": {f"k{i}": "v" for i in range(17)}}, {"meta": {"": "v"}}, {"meta": {"k" * 65: "v"}},
    {"meta": {"k": "v" * 1025}}, {"meta": {"k": 1}}, {"meta": {"k": b"v"}}, {"meta": {1: "v"}},
])
def test_fast_decoder_edges_refused(over):
    raw = pack(fields(**over))
    assert fast_fields(raw) is None
    with pytest.raises(FrameError):
        decode_frame(raw)
