"""Audio files in and out: WAV with the standard library, the compressed formats through libsndfile.

Every part of voicetone that touches files (replay, analyze, corpus building,
training) reads audio through here, so "any rate, mono or stereo" means the
same thing everywhere. `read_audio` reads what people record calls in (WAV,
FLAC, OGG Vorbis/Opus, MP3) through `soundfile` (libsndfile >= 1.1, shipped in
its wheels), any rate and channel count, channels in the file's order.
"""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np


class WavError(ValueError):
    """The file is not an audio file voicetone can read."""


#: what `read_audio` reads, for the error message on anything else
AUDIO_FORMATS = "WAV, FLAC, OGG (Vorbis, Opus) and MP3"


def read_audio(path: str | Path) -> tuple[int, np.ndarray]:
    """(sample_rate, samples[channels, n]) as float32 in [-1, 1] from any audio file of `AUDIO_FORMATS`;
    WAV through `read_wav` (bit for bit), the rest through libsndfile. `WavError` names what is wrong."""
    path = Path(path)
    with path.open("rb") as f:   # FileNotFoundError / PermissionError / IsADirectoryError as they are
        head = f.read(12)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return read_wav(path)
    import soundfile

    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).split(": ", 1)[-1] if str(exc) else type(exc).__name__
        raise WavError(f"{path}: cannot decode audio ({reason}); voicetone reads {AUDIO_FORMATS}") from None
    if samples.size == 0:
        raise WavError(f"{path}: no audio in the file")
    samples = np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)
    return int(rate), np.ascontiguousarray(np.clip(samples, -1.0, 1.0).T)


def read_wav(path: str | Path) -> tuple[int, np.ndarray]:
    """Return (sample_rate, samples[channels, n]) as float32 in [-1, 1].

    Reads PCM 8/16/24/32-bit and IEEE float32 files (format 3, which the
    ``wave`` module refuses, is parsed by hand).
    """
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavError(f"{path}: not a RIFF/WAVE file")
    fmt = None
    payload = None
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = data[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            fmt = body
        elif cid == b"data":
            payload = body
        pos += 8 + size + (size & 1)
    if fmt is None or payload is None or len(fmt) < 16:
        raise WavError(f"{path}: missing fmt or data chunk")
    tag, channels, rate, _, block, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == 0xFFFE and len(fmt) >= 26:  # WAVE_FORMAT_EXTENSIBLE: real tag in the sub-format GUID
        tag = struct.unpack("<H", fmt[24:26])[0]
    if channels < 1 or rate <= 0:
        raise WavError(f"{path}: {channels} channels at {rate} Hz")
    width = bits // 8
    usable = len(payload) - len(payload) % (width * channels)
    raw = payload[:usable]
    if tag == 3 and bits == 32:
        samples = np.frombuffer(raw, "<f4").astype(np.float32)
    elif tag == 1 and bits == 8:
        samples = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif tag == 1 and bits == 16:
        samples = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif tag == 1 and bits == 24:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        ints = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16))
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        samples = ints.astype(np.float32) / float(1 << 23)
    elif tag == 1 and bits == 32:
        samples = (np.frombuffer(raw, "<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    else:
        raise WavError(f"{path}: unsupported WAV format tag {tag} with {bits} bits")
    samples = np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)
    return rate, np.ascontiguousarray(samples.reshape(-1, channels).T)


def write_wav(path: str | Path, sample_rate: int, samples: np.ndarray) -> None:
    """Write float samples ([n] mono or [channels, n]) as 16-bit PCM."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    pcm = (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(x.shape[0])
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.T.tobytes())
