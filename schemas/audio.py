"""Audio payload codecs: 16-bit PCM, G.711 mu-law / A-law, 32-bit float.

Telephony sends G.711 (8 bits a sample), meeting audio PCM or float; the model
wants float32 in [-1, 1].  Decoding runs per frame on the hot path, so G.711
uses 256-entry lookup tables and encoding a 65536-entry table built once from
the ITU-T G.711 segment rules (the reference ``g711.c`` algorithm, vectorised).
"""

from __future__ import annotations

import numpy as np

from schemas.errors import FrameError

ENCODINGS: tuple[str, ...] = ("pcm_s16le", "mulaw", "alaw", "f32le")
SAMPLE_WIDTH: dict[str, int] = {"pcm_s16le": 2, "mulaw": 1, "alaw": 1, "f32le": 4}

_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159  # 14-bit magnitude limit before biasing
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], np.int32)
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], np.int32)


def _ulaw_decode_table() -> np.ndarray:
    """Linear 16-bit value of every mu-law byte (bytes are stored inverted)."""
    u = (~np.arange(256, dtype=np.int32)) & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _alaw_decode_table() -> np.ndarray:
    """Linear 16-bit value of every A-law byte (even bits are inverted, 0x55)."""
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


def _ulaw_encode_table() -> np.ndarray:
    """mu-law byte for every int16 value, indexed by ``value + 32768``."""
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_ULAW_SEG_END, mag, side="left")
    code = (seg << 4) | ((mag >> (seg + 1)) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _alaw_encode_table() -> np.ndarray:
    """A-law byte for every int16 value, indexed by ``value + 32768``."""
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 3
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = np.searchsorted(_ALAW_SEG_END, mag, side="left")
    shift = np.where(seg < 2, 1, seg)
    code = (seg << 4) | ((mag >> shift) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


ULAW_TO_LINEAR: np.ndarray = _ulaw_decode_table()
ALAW_TO_LINEAR: np.ndarray = _alaw_decode_table()
_ULAW_F32 = (ULAW_TO_LINEAR.astype(np.float32) / np.float32(32768.0))
_ALAW_F32 = (ALAW_TO_LINEAR.astype(np.float32) / np.float32(32768.0))
_PCM16_SCALE = np.float32(1.0 / 32768.0)
_LINEAR_TO_ULAW = _ulaw_encode_table()
_LINEAR_TO_ALAW = _alaw_encode_table()
for _t in (ULAW_TO_LINEAR, ALAW_TO_LINEAR, _ULAW_F32, _ALAW_F32, _LINEAR_TO_ULAW, _LINEAR_TO_ALAW):
    _t.flags.writeable = False


def decode_audio(encoding: str, data: bytes) -> np.ndarray:
    """Decode a frame's ``audio`` bytes to float32 samples in [-1, 1].

    f32le values outside [-1, 1] are clipped (the model is trained on that
    range); NaN or infinity is refused, since it would poison a whole window.
    """
    width = SAMPLE_WIDTH.get(encoding) if isinstance(encoding, str) else None
    if width is None:
        raise FrameError("unknown_encoding", f"encoding {encoding!r} is not one of {', '.join(ENCODINGS)}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FrameError("bad_field", f"audio must be bytes, not {type(data).__name__}")
    if len(data) % width:
        raise FrameError("misaligned_audio", f"{len(data)} bytes is not a multiple of the {width}-byte {encoding} sample")
    return decode_valid_audio(encoding, data)


def decode_valid_audio(encoding: str, data: bytes) -> np.ndarray:
    """``decode_audio`` for an encoding and length already checked (``decode_frame``'s
    hot path); still refuses NaN or infinity, which only decoding can see."""
    if encoding == "pcm_s16le":
        return np.frombuffer(data, "<i2") * _PCM16_SCALE  # float32 (a float32 scalar keeps it so)
    if encoding == "mulaw":
        return _ULAW_F32[np.frombuffer(data, np.uint8)]
    if encoding == "alaw":
        return _ALAW_F32[np.frombuffer(data, np.uint8)]
    out = np.frombuffer(data, "<f4").astype(np.float32)  # astype copies: frombuffer is read-only
    if not np.isfinite(out).all():
        raise FrameError("non_finite_audio", f"f32le audio holds {int((~np.isfinite(out)).sum())} NaN/inf samples")
    np.clip(out, -1.0, 1.0, out=out)
    return out


def _to_int16(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples, dtype=np.float32)
    if not np.isfinite(x).all():
        raise FrameError("non_finite_audio", "cannot encode NaN/inf samples")
    return np.clip(np.rint(x * np.float32(32768.0)), -32768, 32767).astype(np.int16)


def encode_audio(encoding: str, samples: np.ndarray) -> bytes:
    """Encode float samples ([-1, 1], clipped) to a frame's ``audio`` bytes.

    Scaling is by 32768 both ways so decode(encode(decode(b))) == decode(b).
    """
    if not isinstance(encoding, str) or encoding not in SAMPLE_WIDTH:
        raise FrameError("unknown_encoding", f"encoding {encoding!r} is not one of {', '.join(ENCODINGS)}")
    x = np.asarray(samples)
    if x.ndim != 1:
        raise FrameError("bad_field", f"samples must be 1-D (mono), got shape {x.shape}")
    if encoding == "f32le":
        x = x.astype("<f4")
        if not np.isfinite(x).all():
            raise FrameError("non_finite_audio", "cannot encode NaN/inf samples")
        return np.clip(x, -1.0, 1.0).tobytes()
    pcm = _to_int16(x)
    if encoding == "pcm_s16le":
        return pcm.astype("<i2").tobytes()
    idx = pcm.astype(np.int32) + 32768
    table = _LINEAR_TO_ULAW if encoding == "mulaw" else _LINEAR_TO_ALAW
    return table[idx].tobytes()
