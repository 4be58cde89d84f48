"""Audio codecs: G.711 against ITU-T reference values, round trips, bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.audio import ALAW_TO_LINEAR, ENCODINGS, ULAW_TO_LINEAR, decode_audio, encode_audio
from schemas.errors import FrameError


def test_mulaw_reference_values():
    # G.711 mu-law: bytes are sent inverted; 0xFF/0x7F are +0/-0, 0x80/0x00 the extremes.
    assert ULAW_TO_LINEAR[0xFF] == 0 and ULAW_TO_LINEAR[0x7F] == 0
    assert ULAW_TO_LINEAR[0x80] == 32124 and ULAW_TO_LINEAR[0x00] == -32124
    assert ULAW_TO_LINEAR[0xFE] == 8 and ULAW_TO_LINEAR[0x7E] == -8
    # First code of each segment (positive side): ((0x84 << seg) - 0x84).
    for seg in range(8):
        assert ULAW_TO_LINEAR[0xFF ^ (seg << 4)] == (0x84 << seg) - 0x84


def test_alaw_reference_values():
    # G.711 A-law: even bits inverted (0x55); 0xD5/0x55 are the smallest +/- levels.
    assert ALAW_TO_LINEAR[0xD5] == 8 and ALAW_TO_LINEAR[0x55] == -8
    assert ALAW_TO_LINEAR[0xAA] == 32256 and ALAW_TO_LINEAR[0x2A] == -32256
    assert ALAW_TO_LINEAR[0xD5 ^ 0x10] == 0x108  # first level of segment 1 = 264


def test_g711_tables_are_odd_symmetric_and_monotone():
    # mu-law: positive codes 0x80..0xFF run from the largest level down to 0.
    pos = ULAW_TO_LINEAR[0x80:].astype(int)
    assert np.all(np.diff(pos) < 0)
    assert np.array_equal(ULAW_TO_LINEAR[:0x80], -ULAW_TO_LINEAR[0x80:])
    # A-law: after undoing the 0x55 inversion, magnitude grows with the 7 low bits.
    a_pos = ALAW_TO_LINEAR[0x80:].astype(int)
    mags = np.array([a_pos[(i ^ 0x55) & 0x7F] for i in range(128)])
    assert np.all(np.diff(mags) > 0)
    assert np.array_equal(ALAW_TO_LINEAR[:0x80], -ALAW_TO_LINEAR[0x80:])


@pytest.mark.parametrize("encoding", ["mulaw", "alaw"])
def test_g711_encode_inverts_decode_for_every_code(encoding):
    codes = np.arange(256, dtype=np.uint8).tobytes()
    levels = decode_audio(encoding, codes)
    again = encode_audio(encoding, levels)
    back = np.frombuffer(again, np.uint8)
    mismatched = np.nonzero(back != np.arange(256))[0].tolist()
    # Only mu-law "-0" (0x7F) may come back as "+0" (0xFF): both decode to 0.
    assert mismatched in ([], [0x7F])
    assert np.array_equal(decode_audio(encoding, again), levels)


@pytest.mark.parametrize("encoding,max_err", [("pcm_s16le", 1 / 32768), ("mulaw", 0.032), ("alaw", 0.032), ("f32le", 0)])
def test_round_trip_every_encoding(encoding, max_err):
    rng = np.random.default_rng(1)
    x = np.clip(rng.standard_normal(4000) * 0.3, -1, 1).astype(np.float32)
    y = decode_audio(encoding, encode_audio(encoding, x))
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.abs(y - x).max() <= max_err + 1e-7
    assert np.abs(y).max() <= 1.0


def test_g711_error_is_relative_to_level():
    """Log companding: quiet samples are coded finely, loud ones coarsely."""
    quiet = np.full(10, 0.001, np.float32)
    for enc in ("mulaw", "alaw"):
        assert abs(decode_audio(enc, encode_audio(enc, quiet))[0] - 0.001) < 0.0003


def test_encode_clips_out_of_range():
    y = decode_audio("pcm_s16le", encode_audio("pcm_s16le", np.array([2.0, -2.0], np.float32)))
    assert y.tolist() == [32767 / 32768, -1.0]


@pytest.mark.parametrize("encoding,nbytes", [("pcm_s16le", 3), ("f32le", 6), ("f32le", 1)])
def test_misaligned(encoding, nbytes):
    with pytest.raises(FrameError) as e:
        decode_audio(encoding, b"\x00" * nbytes)
    assert e.value.reason == "misaligned_audio"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_f32(bad):
    data = np.array([0.1, bad], "<f4").tobytes()
    with pytest.raises(FrameError) as e:
        decode_audio("f32le", data)
    assert e.value.reason == "non_finite_audio"


def test_f32_out_of_range_is_clipped():
    assert decode_audio("f32le", np.array([1.5, -3.0, 0.25], "<f4").tobytes()).tolist() == [1.0, -1.0, 0.25]


@pytest.mark.parametrize("encoding", ["pcm_u8", "", "MULAW", None])
def test_unknown_encoding(encoding):
    with pytest.raises(FrameError) as e:
        decode_audio(encoding, b"")
    assert e.value.reason == "unknown_encoding"
    with pytest.raises(FrameError):
        encode_audio(encoding, np.zeros(2, np.float32))


def test_empty_audio_decodes_to_empty():
    for enc in ENCODINGS:
        out = decode_audio(enc, b"")
        assert out.dtype == np.float32 and out.size == 0


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(ENCODINGS), st.binary(max_size=64))
def test_decode_any_bytes_only_frameerror(encoding, data):
    try:
        out = decode_audio(encoding, data)
    except FrameError as e:
        assert e.reason in ("misaligned_audio", "non_finite_audio")
    else:
        assert out.dtype == np.float32 and np.all(np.abs(out) <= 1.0)


def test_frameerror_str():
    e = FrameError("bad_field", "seq must be an int")
    assert str(e) == "bad_field: seq must be an int" and e.reason == "bad_field" and isinstance(e, ValueError)
