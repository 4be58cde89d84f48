"""``voicetone data synth``: build the synthetic multi-voice, multi-condition training corpus.

Text (model.data.sentences) x voices (model.data.voices) x tone (prosody
mapped from the sentiment, jittered so classes overlap) x channel conditions
(clean, telephone G.711, noisy/reverberant, via model.data.augment), plus
non-speech clips. Test utterances use held-out sentences *and* held-out
voices. A share of the train entries lose their transcript or label on
purpose, so the heterogeneous-data path (pseudo-labelling) is exercised.

The whole corpus is planned up front from the seed, then rendered; a file
already on disk is skipped, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
import wave
import zlib
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from model.data import augment, nonspeech
from model.data.manifest import ManifestEntry, write_manifest
from model.data.sentences import DEFAULT_GRAMMAR, GRAMMARS, SENTIMENTS, sample as sample_sentence
from model.data.voices import Voice, synthesize, voices_for_split
from model.progress import ProgressBar
from schemas.resample import resample
from schemas.wav import write_wav

SAMPLE_RATE = 16000
CONDITIONS = ("clean", "telephone", "noisy")
ENGINE_WEIGHTS = {"espeak-ng": 0.6, "flite": 0.25, "festival": 0.15}  # festival is slowest: used least
SENTENCE_COUNTS = ((1, 0.55), (2, 0.3), (3, 0.15))  # multi-sentence turns give 5-10 s utterances
MAX_TURN_WORDS = 26  # about 10 s at TTS speaking rates: longer turns are cut short

# Tone policy: (rate, pitch in semitones, pitch-range factor, level in dB) means and spreads.
# Spreads are wide on purpose: tone should help, not give the answer away.
TONES = {
    "positive": ((1.08, 2.0, 1.35, 1.0), (0.06, 1.5, 0.2, 2.0)),
    "neutral": ((1.0, 0.0, 1.0, 0.0), (0.06, 1.5, 0.15, 2.0)),
    "negative-tense": ((1.03, -0.5, 1.15, 3.0), (0.06, 1.5, 0.2, 2.0)),
    "negative-weary": ((0.88, -2.5, 0.75, 0.0), (0.06, 1.5, 0.15, 2.0)),
}


@dataclass
class Job:
    """Everything needed to render one utterance, fixed at planning time so reruns are identical."""

    uid: str
    split: str
    speech: bool
    condition: str
    seed: int
    sentiment: str | None = None
    texts: list[str] = field(default_factory=list)
    template_ids: list[str] = field(default_factory=list)
    voice: Voice | None = None
    tone: str = ""
    prosody: dict = field(default_factory=dict)
    withheld: str = ""

    @property
    def rel_path(self) -> str:
        return f"audio/{self.split}/{self.uid}.wav"


TONE_POLICIES = ("independent", "label")


def tone_prosody(sentiment: str, rng: random.Random, policy: str = "independent") -> tuple[str, dict]:
    """Draw prosody for an utterance. ``label``: from its sentiment (positive brighter/faster, negative
    lower and tense or weary). ``independent`` (the default): any of the four tones whatever the label,
    so the corpus varies delivery without teaching that delivery names the class -- real callers do
    not follow the generator's rules, and a model that learns them loses ~4 points of UA on voices
    that do not (docs/model-report.md)."""
    if policy == "independent":
        tone = rng.choice(sorted(TONES))
    elif policy == "label":
        tone = sentiment if sentiment != "negative" else rng.choice(("negative-tense", "negative-weary"))
    else:
        raise ValueError(f"unknown tone policy {policy!r}; expected one of {TONE_POLICIES}")
    (rate, semis, rng_f, level), (sd_r, sd_s, sd_f, sd_l) = TONES[tone]
    return tone, {
        "rate": float(np.clip(rng.gauss(rate, sd_r), 0.75, 1.35)),
        "pitch": float(2.0 ** (np.clip(rng.gauss(semis, sd_s), -6, 6) / 12.0)),
        "pitch_range": float(np.clip(rng.gauss(rng_f, sd_f), 0.4, 2.0)),
        "level_db": float(rng.gauss(level, sd_l)),
    }


def _pick_voice(voices: dict[str, list[Voice]], rng: random.Random) -> Voice:
    engines = [e for e in ENGINE_WEIGHTS if voices.get(e)]
    engine = rng.choices(engines, weights=[ENGINE_WEIGHTS[e] for e in engines])[0]
    # gender first, then a voice: espeak-ng's variants are mostly male and would swamp female voices
    genders = sorted({v.gender_guess for v in voices[engine]})
    gender = rng.choice(genders)
    return rng.choice([v for v in voices[engine] if v.gender_guess == gender])


TEST_DESIGNS = ("held-out", "train-sentences", "train-voices")


def plan_corpus(n_utterances: int, seed: int, conditions: Sequence[str] = CONDITIONS,
                nonspeech_fraction: float = 0.1, test_fraction: float = 0.2,
                withhold_fraction: float = 0.1, test_design: str = "held-out",
                grammar: str = DEFAULT_GRAMMAR, tone_policy: str = "independent") -> list[Job]:
    """The deterministic list of utterances: splits, classes (balanced per split), voices, texts, tone.

    ``test_design`` says what the test split holds out: "held-out" (the default) both its voices and
    its sentences; "train-sentences" only its voices (sentences from the training design); "train-voices"
    only its sentences (spoken by training voices). The two partial designs tell which of the two a
    held-out figure is lost to. ``grammar`` names the sentence grammar (model.data.sentences.GRAMMARS);
    ``tone_policy`` how prosody is drawn (`tone_prosody`)."""
    if tone_policy not in TONE_POLICIES:
        raise ValueError(f"unknown tone policy {tone_policy!r}; expected one of {TONE_POLICIES}")
    if test_design not in TEST_DESIGNS:
        raise ValueError(f"unknown test design {test_design!r}; expected one of {TEST_DESIGNS}")
    for c in conditions:
        if c not in CONDITIONS:
            raise ValueError(f"unknown condition {c!r}; expected some of {CONDITIONS}")
    rng = random.Random(zlib.crc32(f"synth|{seed}".encode()))
    by_split = {s: defaultdict(list) for s in ("train", "test")}
    for s in by_split:
        for v in voices_for_split(s):
            by_split[s][v.engine].append(v)
    if not any(by_split["train"].values()):
        raise RuntimeError("no TTS voices found: install espeak-ng (and optionally flite, festival)")
    n_test = int(round(n_utterances * test_fraction))
    splits = ["test"] * n_test + ["train"] * (n_utterances - n_test)
    rng.shuffle(splits)
    seen: set[str] = set()
    turn = Counter()
    jobs: list[Job] = []
    for i, split in enumerate(splits):
        job = Job(uid=f"s{seed}-{i:06d}", split=split, speech=rng.random() >= nonspeech_fraction,
                  condition=rng.choice(list(conditions)), seed=rng.getrandbits(32))
        if job.speech:
            job.sentiment = SENTIMENTS[turn[split] % 3]
            turn[split] += 1
            sentence_split = "train" if split == "test" and test_design == "train-sentences" else split
            voice_split = "train" if split == "test" and test_design == "train-voices" else split
            count = rng.choices([c for c, _ in SENTENCE_COUNTS], weights=[w for _, w in SENTENCE_COUNTS])[0]
            for k in range(count):
                words = sum(len(t.split()) for t in job.texts)
                for _attempt in range(20):
                    s = sample_sentence(job.sentiment, sentence_split, rng, grammar=grammar)
                    if s.text not in seen and (k == 0 or words + len(s.text.split()) <= MAX_TURN_WORDS):
                        break
                else:
                    if k:  # no short enough sentence: keep the turn as it is
                        break
                seen.add(s.text)
                job.texts.append(s.text)
                job.template_ids.append(s.template_id)
            pool = by_split[voice_split] if any(by_split[voice_split].values()) else by_split["train"]
            job.voice = _pick_voice(pool, rng)
            job.tone, job.prosody = tone_prosody(job.sentiment, rng, tone_policy)
            if split == "train" and rng.random() < withhold_fraction:
                job.withheld = rng.choice(("transcript", "sentiment", "both"))
        jobs.append(job)
    return jobs


def _speech_audio(job: Job, rng: np.random.Generator) -> np.ndarray:
    pieces = [np.zeros(int(rng.uniform(0.1, 0.6) * SAMPLE_RATE), np.float32)]
    p = job.prosody
    for k, text in enumerate(job.texts):
        if k:
            pieces.append(np.zeros(int(rng.uniform(0.2, 0.9) * SAMPLE_RATE), np.float32))
        jit = lambda v, sd: float(v * np.exp(rng.normal(0.0, sd)))  # small drift between sentences
        sr, x = synthesize(job.voice, text, rate=jit(p["rate"], 0.02), pitch=jit(p["pitch"], 0.02),
                           pitch_range=jit(p["pitch_range"], 0.05))
        pieces.append(resample(x, sr, SAMPLE_RATE).astype(np.float32) if sr != SAMPLE_RATE else x)
    pieces.append(np.zeros(int(rng.uniform(0.1, 0.6) * SAMPLE_RATE), np.float32))
    x = np.concatenate(pieces)
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    target = 10.0 ** ((-24.0 + rng.uniform(-6.0, 6.0) + p["level_db"]) / 20.0)
    return x * (target / rms) if rms > 1e-8 else x


def _apply_condition(x: np.ndarray, condition: str, rng: np.random.Generator, meta: dict) -> np.ndarray:
    if condition == "telephone":
        codec = str(rng.choice(["mulaw", "alaw"]))
        meta["codec"] = codec
        return augment.telephone_channel(x, SAMPLE_RATE, codec)
    if condition == "noisy":
        reverb = rng.random() < 0.5
        noise = not reverb or rng.random() < 0.6
        if reverb:
            rt60 = float(rng.uniform(0.2, 0.9))
            x = augment.reverberate(x, augment.synthetic_rir(SAMPLE_RATE, rt60, rng))
            meta["rt60"] = f"{rt60:.2f}"
        if noise:
            kind = str(rng.choice(augment.NOISE_KINDS))
            snr = float(rng.uniform(0.0, 15.0))
            x = augment.add_noise(x, augment.make_noise(kind, x, SAMPLE_RATE, rng), snr)
            meta["noise"], meta["snr_db"] = kind, f"{snr:.1f}"
    return x


def render(job: Job, out_dir: Path) -> dict:
    """Synthesise one job to its WAV (atomically) unless present; return facts for the manifest/stats."""
    path = out_dir / job.rel_path
    meta: dict = {}
    if path.exists():
        with wave.open(str(path), "rb") as w:
            return {"duration_s": w.getnframes() / w.getframerate(), "skipped": True, "meta": _meta_file(path)}
    rng = np.random.default_rng(job.seed)
    if job.speech:
        x = _speech_audio(job, rng)
    else:
        kind, x = nonspeech.random_clip(rng, SAMPLE_RATE)
        meta["kind"] = kind
    x = _apply_condition(x, job.condition, rng, meta)
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak > 0.99:
        x = x * (0.99 / peak)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.wav")
    write_wav(tmp, SAMPLE_RATE, x)
    _meta_file(path, meta)
    os.replace(tmp, path)
    return {"duration_s": len(x) / SAMPLE_RATE, "skipped": False, "meta": meta}


def _meta_file(path: Path, meta: dict | None = None) -> dict:
    """Render-time facts (noise kind, SNR, codec) kept beside the WAV so a resumed run still knows them."""
    side = path.with_suffix(".json")
    if meta is not None:
        side.write_text(json.dumps(meta))
        return meta
    return json.loads(side.read_text()) if side.exists() else {}


def manifest_entry(job: Job, facts: dict) -> ManifestEntry:
    """The manifest line of a rendered job; withheld fields are left empty for pseudo-labelling."""
    group = {"condition": job.condition, "split": job.split}
    group.update({k: str(v) for k, v in facts.get("meta", {}).items()})
    if not job.speech:
        group.update(engine="none", voice="none", gender="none", accent="none")
        return ManifestEntry(audio=job.rel_path, transcript="", transcript_source="human", speech=False,
                             group=group, split=job.split)
    v = job.voice
    group.update(engine=v.engine, voice=v.name, gender=v.gender_guess, accent=v.accent, tone=job.tone,
                 label=job.sentiment,
                 sentences=str(len(job.texts)), templates=",".join(job.template_ids))
    transcript, sentiment = " ".join(job.texts), job.sentiment
    if job.withheld:
        group["withheld"] = job.withheld
    if job.withheld in ("transcript", "both"):
        transcript = None
    if job.withheld in ("sentiment", "both"):
        sentiment = None
    return ManifestEntry(audio=job.rel_path, transcript=transcript, sentiment=sentiment, speech=True,
                         speaker=v.id, group=group, split=job.split,
                         transcript_source="human" if transcript is not None else None,
                         sentiment_source="human" if sentiment is not None else None)


def synth_corpus(out_dir: str | Path, n_utterances: int, seed: int = 0, conditions: Sequence[str] = CONDITIONS,
                 nonspeech_fraction: float = 0.1, test_fraction: float = 0.2, workers: int = 2,
                 withhold_fraction: float = 0.1, progress: bool = True, test_design: str = "held-out",
                 grammar: str = DEFAULT_GRAMMAR, tone_policy: str = "independent") -> Path:
    """Render the corpus into ``out_dir``; write ``train.jsonl``, ``test.jsonl``, ``stats.json``.

    Returns the train manifest's path. Utterances whose synthesis fails are
    left out of the manifests (and counted in stats.json as failures).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = plan_corpus(n_utterances, seed, conditions, nonspeech_fraction, test_fraction, withhold_fraction,
                       test_design, grammar, tone_policy)
    facts: dict[str, dict] = {}
    failures: list[str] = []
    started = time.monotonic()
    with ProgressBar("synthesising", len(jobs), progress, unit="utterance") as bar, \
            ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(render, job, out_dir): job for job in jobs}
        for fut in as_completed(futures):
            job = futures[fut]
            try:
                facts[job.uid] = fut.result()
            except Exception as exc:  # one bad voice/text must not lose the rest of the corpus
                failures.append(f"{job.uid} {job.voice.id if job.voice else 'nonspeech'}: {exc}")
            bar.advance()
    elapsed = time.monotonic() - started
    entries = {"train": [], "test": []}
    for job in jobs:
        if job.uid in facts:
            entries[job.split].append((manifest_entry(job, facts[job.uid]), facts[job.uid]))
    for split, items in entries.items():
        write_manifest(out_dir / f"{split}.jsonl", [e for e, _ in items])
    rendered = sum(not f["skipped"] for f in facts.values())
    stats = corpus_stats([(e, f["duration_s"]) for items in entries.values() for e, f in items])
    stats.update(seed=seed, grammar=grammar, test_design=test_design, tone_policy=tone_policy, requested=n_utterances,
                 rendered_now=rendered, failures=failures[:50],
                 failure_count=len(failures), seconds=round(elapsed, 1),
                 utterances_per_s=round(rendered / elapsed, 2) if elapsed > 0 and rendered else None)
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=1))
    return out_dir / "train.jsonl"


def corpus_stats(items: Sequence[tuple[ManifestEntry, float]]) -> dict:
    """Counts per split/class/engine/condition/gender/accent, withheld fields and duration summaries."""
    count = lambda key: dict(sorted(Counter(key(e) for e, _ in items).items()))
    durs = np.array([d for _, d in items]) if items else np.zeros(1)
    speech_durs = np.array([d for e, d in items if e.speech]) if any(e.speech for e, _ in items) else np.zeros(1)
    return {
        "entries": len(items),
        "hours": round(float(durs.sum()) / 3600, 3),
        "split": count(lambda e: e.split),
        # the true class, also for entries whose label was withheld (the label group keeps it;
        # older corpora drew tone from the label, so there the tone names the class)
        "class": count(lambda e: f"{e.split}:{e.group.get('label') or e.group.get('tone', 'no_speech').split('-')[0]}"),
        "tone": count(lambda e: e.group.get("tone", "no_speech")),
        "engine": count(lambda e: f"{e.split}:{e.group.get('engine')}"),
        "voices": {s: len({e.speaker for e, _ in items if e.split == s and e.speaker}) for s in ("train", "test")},
        "condition": count(lambda e: e.group.get("condition")),
        "gender": count(lambda e: e.group.get("gender")),
        "accent": count(lambda e: e.group.get("accent")),
        "sentences_per_utterance": count(lambda e: e.group.get("sentences", "0")),
        "withheld": count(lambda e: e.group.get("withheld", "none")),
        "nonspeech_kind": count(lambda e: e.group.get("kind", "speech")),
        "duration_s": {k: round(float(f(durs)), 2) for k, f in (("min", np.min), ("median", np.median), ("max", np.max))},
        "speech_duration_s": {k: round(float(f(speech_durs)), 2)
                              for k, f in (("min", np.min), ("median", np.median), ("p90", lambda a: np.percentile(a, 90)), ("max", np.max))},
    }


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    manifest = synth_corpus(args.out, args.n, args.seed, tuple(args.conditions), args.nonspeech_fraction,
                            args.test_fraction, args.workers, args.withhold_fraction, progress=not args.quiet,
                            test_design=args.test_design, grammar=args.grammar, tone_policy=args.tone_policy)
    stats = json.loads((manifest.parent / "stats.json").read_text())
    table = Table(title=f"synthetic corpus in {manifest.parent}")
    table.add_column("what")
    table.add_column("counts")
    for key in ("split", "class", "engine", "voices", "condition", "gender", "withheld", "duration_s",
                "speech_duration_s", "hours", "utterances_per_s", "failure_count"):
        table.add_row(key, json.dumps(stats[key]))
    Console().print(table)
    for line in stats["failures"][:5]:
        Console().print(f"[yellow]failed[/yellow] {line}")
    return 0 if stats["entries"] else 1


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Add the ``synth`` sub-command (mounted under ``voicetone data``)."""
    p = subparsers.add_parser(
        "synth",
        help="synthesise a multi-voice, multi-condition speech sentiment corpus with the local TTS engines",
        description="Writes 16 kHz WAVs under OUT/audio and the manifests OUT/train.jsonl, OUT/test.jsonl "
                    "(test sentences and voices are never used for training), plus OUT/stats.json. "
                    "Existing files are kept, so an interrupted run can be resumed with the same arguments.",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--n", type=int, default=300, help="number of utterances (default 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="parallel TTS processes (default 2)")
    p.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    p.add_argument("--nonspeech-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--test-design", choices=TEST_DESIGNS, default="held-out",
                   help="what the test split holds out: held-out voices and sentences (default); train-sentences: "
                        "held-out voices reading training-design sentences; train-voices: training voices reading "
                        "held-out sentences (to tell which of the two a held-out figure is lost to; meant with --test-fraction 1: "
                        "it also changes which training utterances are drawn)")
    p.add_argument("--grammar", choices=tuple(GRAMMARS), default=DEFAULT_GRAMMAR,
                   help=f"sentence grammar (default {DEFAULT_GRAMMAR}); broad adds twice the templates and many more "
                        "phrases per slot, and keeps every core held-out phrase and template held out")
    p.add_argument("--tone-policy", choices=TONE_POLICIES, default="independent",
                   help="independent (default): each utterance's prosody drawn whatever its label; label: "
                        "positive brighter and faster, negative lower and tense or weary (the older corpora)")
    p.add_argument("--withhold-fraction", type=float, default=0.1,
                   help="share of train entries whose transcript and/or label is dropped for pseudo-labelling")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)
    return p
