"""Every English TTS voice on this machine, a fixed train/test voice split, and synthesis.

The synthetic corpus needs many speakers so the model learns tone rather than
one voice. espeak-ng gives accents x timbre variants, flite and festival give
a handful of very different (diphone, clustergen, HTS) voices. Test voices are
held out entirely -- whole timbres, a whole accent, whole speakers -- so test
scores say how the model does on a voice it has never heard.
"""

from __future__ import annotations

import html
import math
import os
import re
import shutil
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from schemas.wav import read_wav

ENGINES = ("espeak-ng", "flite", "festival")
SPLIT_SALT = "voicetone-voices-v1"  # changing it reshuffles the voice split: do so only on purpose

# Variants that are not plausible call audio, or remove the pitch we use to carry tone.
_ESPEAK_SKIP_VARIANTS = {"whisper", "whisperf", "Demonic", "fast"}
_ESPEAK_ACCENTS = {
    "en-us": "us", "en-gb": "gb", "en-gb-scotland": "scotland", "en-gb-x-rp": "gb-rp",
    "en-gb-x-gbclan": "gb-lancaster", "en-gb-x-gbcwmd": "gb-west-midlands", "en-029": "caribbean",
    "en-us-nyc": "us-nyc",
}
# flite voices: (family = the recorded speaker, gender, accent). awb_time only says the time.
_FLITE_KNOWN = {
    "kal": ("kal", "male", "us"), "kal16": ("kal", "male", "us"), "awb": ("awb", "male", "scotland"),
    "rms": ("rms", "male", "us"), "slt": ("slt", "female", "us"),
}
_FLITE_SKIP = {"awb_time"}
_FESTIVAL_KNOWN = {
    "kal_diphone": ("kal", "male", "us"), "ked_diphone": ("ked", "male", "us"),
    "cmu_us_slt_arctic_hts": ("slt", "female", "us"), "rab_diphone": ("rab", "male", "gb"),
    "don_diphone": ("don", "male", "gb"), "cmu_us_awb_arctic_hts": ("awb", "male", "scotland"),
    "cmu_us_rms_arctic_hts": ("rms", "male", "us"), "cmu_us_bdl_arctic_hts": ("bdl", "male", "us"),
    "cmu_us_clb_arctic_hts": ("clb", "female", "us"), "cmu_us_jmk_arctic_hts": ("jmk", "male", "canada"),
}
_FESTIVAL_DIRS = (Path("/usr/share/festival/voices"), Path("/usr/lib/festival/voices"))


class SynthesisError(RuntimeError):
    """A TTS engine failed or produced no audio."""


@dataclass(frozen=True)
class Voice:
    """One TTS voice. ``name`` is what the engine is given (``en-us+f3``, ``slt``, ``kal_diphone``)."""

    engine: str
    name: str
    gender_guess: str
    accent: str

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.name}"

    @property
    def family(self) -> str:
        """The recorded speaker (or espeak timbre variant): voices sharing it share a split."""
        if self.engine == "espeak-ng":
            return "espeak:" + (self.name.split("+", 1)[1] if "+" in self.name else "default")
        table = _FLITE_KNOWN if self.engine == "flite" else _FESTIVAL_KNOWN
        return table.get(self.name, (self.name, "", ""))[0]


def _run(cmd: list[str], input_text: str | None = None, timeout: float = 60.0) -> str:
    proc = subprocess.run(cmd, input=input_text, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SynthesisError(f"{' '.join(cmd[:3])}... exited {proc.returncode}: {proc.stderr.strip()[:300]}")
    return proc.stdout + proc.stderr


def _gender(code: str) -> str:
    g = code.split("/")[-1].strip().upper()
    return {"M": "male", "F": "female"}.get(g, "unknown")


def espeak_voices() -> list[Voice]:
    """English espeak-ng accents (not MBROLA ones: no mbrola data here) times every usable variant."""
    if not shutil.which("espeak-ng"):
        return []
    accents: dict[str, str] = {}
    for line in _run(["espeak-ng", "--voices=en"]).splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 5 and parts[4].startswith("gmw/") and parts[1] != "variant":
            accents.setdefault(parts[1], _ESPEAK_ACCENTS.get(parts[1], parts[1]))
    variants: list[tuple[str, str]] = []
    for line in _run(["espeak-ng", "--voices=variant"]).splitlines()[1:]:
        m = re.match(r"\s*\d+\s+variant\s+(\S+)\s+.*?\s!v/(\S+)\s*(?:\(|$)", line)
        if not m or m.group(2) in _ESPEAK_SKIP_VARIANTS or line.rstrip().endswith(" serious"):
            continue
        variants.append((m.group(2), _gender(m.group(1))))
    voices = []
    for lang, accent in sorted(accents.items()):
        voices.append(Voice("espeak-ng", lang, "male", accent))
        voices += [Voice("espeak-ng", f"{lang}+{v}", g, accent) for v, g in sorted(set(variants))]
    return voices


def flite_voices() -> list[Voice]:
    """flite's compiled-in voices (``flite -lv``), minus limited-domain ones."""
    if not shutil.which("flite"):
        return []
    out = _run(["flite", "-lv"])
    names = out.split(":", 1)[-1].split()
    voices = []
    for name in names:
        if name in _FLITE_SKIP:
            continue
        _, gender, accent = _FLITE_KNOWN.get(name, (name, "unknown", "unknown"))
        voices.append(Voice("flite", name, gender, accent))
    return voices


def festival_voices() -> list[Voice]:
    """Festival voices installed on disk (each folder under voices/<language>/ is one)."""
    if not shutil.which("text2wave"):
        return []
    found: set[str] = set()
    for root in _FESTIVAL_DIRS:
        for lang in ("english", "us", "en"):
            d = root / lang
            if d.is_dir():
                found |= {p.name for p in d.iterdir() if p.is_dir()}
    voices = []
    for name in sorted(found):
        _, gender, accent = _FESTIVAL_KNOWN.get(name, (name, "unknown", "unknown"))
        voices.append(Voice("festival", name, gender, accent))
    return voices


@lru_cache(maxsize=1)
def list_voices() -> tuple[Voice, ...]:
    """All English voices of all installed engines, in a stable order."""
    return tuple(espeak_voices() + flite_voices() + festival_voices())


def _h(*parts: str) -> int:
    return zlib.crc32("|".join((SPLIT_SALT,) + parts).encode())


def held_out_voice_ids(voices: tuple[Voice, ...] | list[Voice], test_fraction: float = 0.2) -> frozenset[str]:
    """Ids of the held-out voices; the same on every machine with the same voices installed.

    espeak-ng: ``test_fraction`` of the timbre variants (under every accent) plus
    one whole accent. flite/festival: whole speakers (``Voice.family``) chosen so
    each engine with more than one voice loses at least one and keeps at least one.
    """
    held: set[str] = set()
    esp = [v for v in voices if v.engine == "espeak-ng"]
    if esp:
        fams = sorted({v.family for v in esp}, key=lambda f: _h(f))
        held_fams = set(fams[: max(1, round(len(fams) * test_fraction))]) if len(fams) > 1 else set()
        accents = sorted({v.accent for v in esp}, key=lambda a: _h("accent", a))
        held_accent = {accents[0]} if len(accents) > 1 else set()
        held |= {v.id for v in esp if v.family in held_fams or v.accent in held_accent}
    others = [v for v in voices if v.engine != "espeak-ng"]
    by_family: dict[str, set[str]] = {}
    for v in others:
        by_family.setdefault(v.family, set()).add(v.engine)
    engines_multi = {e for e in {v.engine for v in others} if sum(v.engine == e for v in others) > 1}
    target = max(1, round(len(by_family) * test_fraction)) if len(by_family) > 1 else 0
    chosen: list[str] = []
    uncovered = set(engines_multi)
    gender = {v.family: v.gender_guess for v in others}
    common = {g: sum(v.gender_guess == g for v in others) for g in set(gender.values())}
    # most engines covered first; among ties the commonest gender, so rarer voices stay in training
    order = sorted(by_family, key=lambda f: (-len(by_family[f] & uncovered), -common[gender[f]], _h(f)))
    for fam in order:
        if len(chosen) >= target and not uncovered:
            break
        if not (by_family[fam] & uncovered) and len(chosen) >= target:
            continue
        # never take an engine's last training voice
        left = [v for v in others if v.family not in chosen and v.family != fam]
        if any(not any(w.engine == e for w in left) for e in by_family[fam] if e in engines_multi):
            continue
        chosen.append(fam)
        uncovered -= by_family[fam]
    held |= {v.id for v in others if v.family in chosen}
    return frozenset(held)


def voices_for_split(split: str, test_fraction: float = 0.2) -> list[Voice]:
    """Voices of one split ("train" or "test")."""
    voices = list_voices()
    held = held_out_voice_ids(voices, test_fraction)
    return [v for v in voices if (v.id in held) == (split == "test")]


def _sox(src: Path, dst: Path, effects: list[str]) -> None:
    if not shutil.which("sox"):
        raise SynthesisError("sox is needed for pitch/tempo changes of flite and festival voices")
    _run(["sox", str(src), str(dst)] + effects)


def synthesize(voice: Voice, text: str, rate: float = 1.0, pitch: float = 1.0, volume: float = 1.0,
               pitch_range: float = 1.0) -> tuple[int, np.ndarray]:
    """Speak ``text``; return (sample_rate, mono float32).

    ``rate``, ``pitch`` and ``pitch_range`` are multipliers of the voice's own
    default (1.0 = unchanged), ``volume`` a linear gain. espeak-ng applies all
    through SSML <prosody>; flite/festival change speed natively (except HTS
    voices) and pitch through sox; they have no pitch-range control.
    """
    if not text.strip():
        raise ValueError("empty text")
    with tempfile.TemporaryDirectory(prefix="vt-tts-") as tmp:
        raw, out = Path(tmp) / "raw.wav", Path(tmp) / "out.wav"
        cents = 1200.0 * math.log2(max(pitch, 1e-3))
        effects: list[str] = []
        if voice.engine == "espeak-ng":
            ssml = (f'<speak><prosody rate="{rate * 100:.0f}%" pitch="{(pitch - 1) * 100:+.0f}%" '
                    f'range="{(pitch_range - 1) * 100:+.0f}%">{html.escape(text)}</prosody></speak>')
            _run(["espeak-ng", "-v", voice.name, "-m", "-w", str(raw), ssml])
        elif voice.engine == "flite":
            _run(["flite", "-voice", voice.name, "--setf", f"duration_stretch={1.0 / rate:.3f}",
                  "-t", text, "-o", str(raw)])
            effects = ["pitch", f"{cents:.0f}"] if abs(cents) >= 1 else []
        elif voice.engine == "festival":
            hts = "hts" in voice.name
            cmd = ["text2wave", "-eval", f"(voice_{voice.name})", "-o", str(raw)]
            if not hts:
                cmd[3:3] = ["-eval", f"(Parameter.set 'Duration_Stretch {1.0 / rate:.3f})"]
            _run(cmd, input_text=text + "\n", timeout=120)
            effects = ["pitch", f"{cents:.0f}"] if abs(cents) >= 1 else []
            if hts and abs(rate - 1.0) > 1e-3:
                effects += ["tempo", "-s", f"{rate:.3f}"]
        else:
            raise ValueError(f"unknown engine {voice.engine!r}")
        if not raw.exists() or raw.stat().st_size <= 44:
            raise SynthesisError(f"{voice.id} produced no audio for {text[:40]!r}")
        if effects:
            _sox(raw, out, effects)
            raw = out
        sr, x = read_wav(raw)
    audio = x.mean(axis=0) * float(volume)
    return sr, np.clip(audio, -1.0, 1.0).astype(np.float32)


def engine_available(engine: str) -> bool:
    """Whether the engine's program is on PATH."""
    prog = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "text2wave"}[engine]
    return shutil.which(prog) is not None and os.access(shutil.which(prog) or "", os.X_OK)
