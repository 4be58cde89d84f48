"""`voicetone analyze` on a long stereo call: wall time, CPU time and peak memory, per model setting.

The call is the bundled sample calls' two channels looped to ``--minutes`` (8 kHz stereo WAV, written
once to a temporary folder). Each setting runs ``voicetone analyze FILE --json`` in a fresh process
(as a user runs it), settings from ``VOICETONE_*`` variables; peak memory is that process's maximum
resident set (``getrusage`` of the child). Settings alternate over ``--repeats`` so that drift of the
machine's speed falls on each alike; the ratio of each to the first is printed beside the figures.

    python -m bench.bench_analyze [--minutes 10] [--repeats 1] \\
        [--setting default=] [--setting whisper=VOICETONE_MODEL_PATH=whisper-base,VOICETONE_PRECISION=int8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

SAMPLES = Path(__file__).resolve().parents[1] / "voicetone" / "samples"
DEFAULT_SETTINGS = ("default=", "whisper-base-int8=VOICETONE_MODEL_PATH=whisper-base,VOICETONE_PRECISION=int8")


def long_call(path: Path, minutes: float, rate: int = 8000) -> float:
    """Write a stereo int16 WAV of ``minutes``: the sample calls' (agent, customer) audio, looped."""
    agent, customer = [], []
    for wav in sorted(SAMPLES.glob("*.wav")):
        with wave.open(str(wav)) as w:
            if w.getframerate() != rate or w.getnchannels() != 2:
                raise ValueError(f"{wav}: expected {rate} Hz stereo")
            data = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
        agent.append(data[:, 0])
        customer.append(data[:, 1])
    one = np.stack([np.concatenate(agent), np.concatenate(customer)], axis=1)
    n = int(minutes * 60 * rate)
    audio = np.tile(one, (-(-n // len(one)), 1))[:n]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(audio.astype("<i2").tobytes())
    return n / rate


def parse_setting(text: str) -> tuple[str, dict[str, str]]:
    name, _, rest = text.partition("=")
    env = dict(item.split("=", 1) for item in rest.split(",") if item)
    return name, env


def run_analyze(path: Path, env: dict[str, str]) -> dict:
    """One ``voicetone analyze`` process: wall and CPU seconds, its own peak RSS (``wait4``), its events."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "voicetone", "analyze", str(path), "--json"],
                                env={**os.environ, **env}, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"analyze exited {proc.returncode}: {stderr.strip()[-500:]}")
    events = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024,
            "events": len(events), "segments": sum(e.get("type") == "segment" for e in events),
            "model_version": next((e["model_version"] for e in events if e.get("model_version")), None)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--setting", action="append", metavar="NAME=VAR=VALUE,...",
                   help="a named set of VOICETONE_* variables (repeatable); default: the bundled default model "
                        "and whisper-base at int8")
    args = p.parse_args(argv)
    settings = [parse_setting(s) for s in (args.setting or DEFAULT_SETTINGS)]
    results: dict[str, list[dict]] = {name: [] for name, _ in settings}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "long-call.wav"
        audio_s = long_call(path, args.minutes)
        for _ in range(args.repeats):
            for name, env in settings:
                r = run_analyze(path, env)
                results[name].append(r)
                print(f"{name}: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU, peak {r['peak_rss_mb']:.0f} MB, "
                      f"{r['segments']} segments", file=sys.stderr)
    first = min(r["wall_s"] for r in results[settings[0][0]])
    print(f"| setting | model | wall s (best of {args.repeats}) | x real time | CPU s | peak RSS MB | vs {settings[0][0]} |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, runs in results.items():
        best = min(runs, key=lambda r: r["wall_s"])
        print(f"| {name} | {best['model_version']} | {best['wall_s']:.1f} | {audio_s / best['wall_s']:.1f} | "
              f"{best['cpu_s']:.1f} | {max(r['peak_rss_mb'] for r in runs):.0f} | {best['wall_s'] / first:.2f}x |")
    print(json.dumps({"bench": "analyze", "audio_s": audio_s, "cpus": os.cpu_count(), "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
