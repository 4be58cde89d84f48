"""Non-speech clips for training the speech-presence output.

A call's channel is often not speech: silence, line noise, mains hum, DTMF
key presses, busy/ringback tones, hold music, clicks. The model must say
``no_speech`` for these rather than guess a sentiment, so the corpus carries
them as ``speech: false`` entries. Tonal ones matter most: they have pitch
and rhythm, the very cues our TTS speech uses for tone.
"""

from __future__ import annotations

import numpy as np

from model.data.augment import brown_noise, hum, pink_noise, white_noise

SAMPLE_RATE = 16000
KINDS = ("silence", "noise_floor", "white", "pink", "brown", "hum", "dtmf", "busy", "ringback", "hold_music", "clicks")

DTMF_ROWS = (697.0, 770.0, 852.0, 941.0)
DTMF_COLS = (1209.0, 1336.0, 1477.0, 1633.0)
DTMF_KEYS = "123A456B789C*0#D"


def _db(level_db: float) -> float:
    return float(10.0 ** (level_db / 20.0))


def _tone(freqs, n: int, sr: int, phase: np.ndarray | None = None) -> np.ndarray:
    t = np.arange(n) / sr
    out = np.zeros(n)
    for i, f in enumerate(freqs):
        out += np.sin(2 * np.pi * f * t + (0.0 if phase is None else phase[i]))
    return out / max(1, len(freqs))


def _cadence(n: int, sr: int, pattern_s: list[tuple[float, bool]]) -> np.ndarray:
    """0/1 gate repeating an (duration, on) pattern, with 5 ms ramps so edges don't click."""
    gate = np.zeros(n)
    pos, k = 0, 0
    while pos < n:
        dur, on = pattern_s[k % len(pattern_s)]
        m = int(dur * sr)
        if on:
            gate[pos:pos + m] = 1.0
        pos += m
        k += 1
    ramp = max(1, int(0.005 * sr))
    kernel = np.ones(ramp) / ramp
    return np.convolve(gate, kernel, mode="same")


def dtmf(digits: str, sr: int, rng: np.random.Generator, n: int) -> np.ndarray:
    """Key presses: each digit's row+column tones, 60-150 ms, separated by 50-300 ms gaps."""
    out = np.zeros(n)
    pos = int(rng.uniform(0.05, 0.3) * sr)
    for d in digits:
        i = DTMF_KEYS.index(d)
        m = int(rng.uniform(0.06, 0.15) * sr)
        if pos + m > n:
            break
        out[pos:pos + m] = _tone((DTMF_ROWS[i // 4], DTMF_COLS[i % 4]), m, sr) * np.hanning(m) ** 0.1
        pos += m + int(rng.uniform(0.05, 0.3) * sr)
    return out


def hold_music(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Chords and arpeggios of harmonic tones, like a synthesised hold tune."""
    root = 220.0 * 2 ** (rng.integers(-5, 6) / 12)
    progression = [(0, 4, 7), (5, 9, 12), (7, 11, 14), (9, 12, 16), (2, 5, 9)]
    beat = int(rng.uniform(0.2, 0.45) * sr)
    out = np.zeros(n)
    arpeggio = rng.random() < 0.5
    pos, k = 0, 0
    while pos < n:
        chord = progression[int(rng.integers(len(progression)))]
        notes = [chord[k % 3]] if arpeggio else list(chord)
        m = min(beat * (1 if arpeggio else 4), n - pos)
        t = np.arange(m) / sr
        env = np.exp(-t * rng.uniform(1.5, 4.0))
        for semis in notes:
            f = root * 2 ** (semis / 12)
            for h in range(1, 5):
                if f * h < sr / 2:
                    out[pos:pos + m] += env * np.sin(2 * np.pi * f * h * t) / h ** 1.5
        pos += m
        k += 1
    return out


def make_clip(kind: str, rng: np.random.Generator, duration_s: float | None = None,
              sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """One clip of ``kind`` (see KINDS), 1-6 s unless ``duration_s`` is given, float32 in [-1, 1]."""
    if kind not in KINDS:
        raise ValueError(f"unknown non-speech kind {kind!r}; expected one of {KINDS}")
    sr = sample_rate
    n = int((duration_s if duration_s is not None else rng.uniform(1.0, 6.0)) * sr)
    if kind == "silence":
        return np.zeros(n, dtype=np.float32)
    if kind == "noise_floor":
        x = white_noise(n, rng) * _db(rng.uniform(-75, -55))
    elif kind in ("white", "pink", "brown"):
        gen = {"white": white_noise, "pink": pink_noise, "brown": brown_noise}[kind]
        x = gen(n, rng) * _db(rng.uniform(-45, -15))
    elif kind == "hum":
        x = hum(n, sr, rng) * _db(rng.uniform(-40, -15))
    elif kind == "dtmf":
        digits = "".join(rng.choice(list(DTMF_KEYS[:12] + "0*#"), size=int(rng.integers(3, 12))))
        x = dtmf(digits, sr, rng, n) * _db(rng.uniform(-20, -6))
    elif kind == "busy":
        if rng.random() < 0.5:  # North America: 480+620 Hz, 0.5 s on / 0.5 s off
            x = _tone((480.0, 620.0), n, sr) * _cadence(n, sr, [(0.5, True), (0.5, False)])
        else:  # UK: 400 Hz, 0.375 s on / 0.375 s off
            x = _tone((400.0,), n, sr) * _cadence(n, sr, [(0.375, True), (0.375, False)])
        x *= _db(rng.uniform(-24, -10))
    elif kind == "ringback":
        if rng.random() < 0.5:  # North America: 440+480 Hz, 2 s on / 4 s off
            x = _tone((440.0, 480.0), n, sr) * _cadence(n, sr, [(2.0, True), (4.0, False)])
        else:  # UK double ring: 400+450 Hz
            x = _tone((400.0, 450.0), n, sr) * _cadence(n, sr, [(0.4, True), (0.2, False), (0.4, True), (2.0, False)])
        x *= _db(rng.uniform(-24, -10))
    elif kind == "hold_music":
        x = hold_music(n, sr, rng)
        x = x / (np.max(np.abs(x)) + 1e-9) * _db(rng.uniform(-20, -6))
    else:  # clicks: sparse decaying impulses over a faint floor, like a bad line or a handset knock
        x = white_noise(n, rng) * _db(-65)
        for _ in range(int(rng.integers(2, 15))):
            k = int(rng.integers(0, max(1, n - 200)))
            m = int(rng.integers(20, 200))
            x[k:k + m] += rng.choice([-1.0, 1.0]) * _db(rng.uniform(-20, -3)) * np.exp(-np.arange(m) / (m / 5))
    if kind not in ("silence", "noise_floor", "clicks") and rng.random() < 0.5:
        x = x + white_noise(n, rng) * _db(rng.uniform(-70, -50))  # a faint line floor under the tone
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def random_clip(rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> tuple[str, np.ndarray]:
    """A clip of a kind drawn uniformly from KINDS."""
    kind = str(rng.choice(KINDS))
    return kind, make_clip(kind, rng, sample_rate=sample_rate)
