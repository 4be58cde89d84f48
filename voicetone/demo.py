"""`voicetone demo`: the whole pipeline on one machine, ending by itself.

Starts the embedded broker (unless --broker is given), a worker process, and
replays the bundled sample calls; prints the events live, writes a timeline
picture per call and stops everything with a bounded wait.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

import orjson

from streams.settings import Settings

SAMPLES = Path(__file__).parent / "samples"
# short consumer-group timings: the demo's worker joins in seconds, not a minute
FAST_GROUP = {"VOICETONE_REBALANCE_TIMEOUT_S": "3", "VOICETONE_SESSION_TIMEOUT_S": "6",
              "VOICETONE_HEARTBEAT_INTERVAL_S": "1", "VOICETONE_COMMIT_INTERVAL_S": "1"}


def sample_calls() -> list[Path]:
    return sorted(SAMPLES.glob("*.wav"))


def start_worker(settings: Settings, log_path: Path, extra_env: Optional[dict] = None) -> subprocess.Popen:
    env = dict(os.environ, **FAST_GROUP, VOICETONE_BROKER=settings.broker, **(extra_env or {}))
    for name in ("device", "precision", "model_path"):
        value = getattr(settings, name)
        if value is not None:
            env[f"VOICETONE_{name.upper()}"] = str(value)
    log = open(log_path, "wb")
    return subprocess.Popen([sys.executable, "-m", "voicetone", "worker"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def run_demo(settings: Settings, out_dir: str = "voicetone-demo", speed: float = 4.0,
             files: Optional[Sequence[str]] = None, timeout_s: float = 170.0) -> int:
    from rich.console import Console

    from voicetone.broker import EmbeddedBroker, stop_process_group
    from voicetone.framing import load_source
    from voicetone.replay import replay
    from voicetone.report import render_timeline
    from voicetone.watch import consume_events, format_event

    console = Console(highlight=False)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    calls = [Path(f) for f in files] if files else sample_calls()
    if not calls:
        raise FileNotFoundError(f"no sample calls in {SAMPLES}")
    expected = sum(len(load_source(c).channels) for c in calls)
    broker = None
    worker = None
    started = time.monotonic()
    try:
        if "--broker" not in sys.argv and not os.environ.get("VOICETONE_BROKER"):
            broker = EmbeddedBroker(log_path=str(out / "broker.log")).start()
            settings = settings.model_copy(update={"broker": broker.url})
            console.print(f"[bold]embedded broker[/] on {broker.url}")
        from streams.app import ensure_topics
        ensure_topics(settings)
        worker = start_worker(settings, out / "worker.log")
        console.print(f"[bold]worker[/] started (pid {worker.pid}); log in {out / 'worker.log'}")
        events: list[dict] = []
        ended: dict[tuple, int] = {}   # (call, channel) -> segments its summary reports
        seen: dict[tuple, set] = {}    # (call, channel, type) -> segment indices received

        def complete() -> bool:
            # the three topics arrive in no particular order relative to each other: a channel is
            # complete when its summary and all the segments and aggregates it counts are in
            return len(ended) >= expected and all(
                len(seen.get((*key, kind), ())) >= n for key, n in ended.items() for kind in ("segment", "aggregate"))

        def on_event(ev: dict) -> bool:
            events.append(ev)
            console.print(format_event(ev))
            key = (ev["call_id"], ev["channel"])
            if ev["type"] == "call":
                ended[key] = ev["segments"]
            elif ev["type"] in ("segment", "aggregate"):
                seen.setdefault((*key, ev["type"]), set()).add(ev["segment_index"])
            return not complete() and time.monotonic() - started < timeout_s

        def should_stop() -> bool:
            if worker.poll() is not None:
                console.print(f"[red]the worker exited (code {worker.returncode}); see {out / 'worker.log'}[/]")
                return True
            return time.monotonic() - started > timeout_s

        reader = threading.Thread(target=consume_events, args=(settings, on_event, True, timeout_s),
                                  kwargs={"should_stop": should_stop}, daemon=True)
        reader.start()
        console.print(f"replaying {len(calls)} call(s) at {speed}x: " + ", ".join(c.name for c in calls))
        # the bundled calls are stereo: agent on the left, customer on the right
        names = "agent,customer" if not files else None
        replay(settings, [str(c) for c in calls], channel=names, speed=speed, progress=False)
        reader.join(timeout=max(5.0, timeout_s - (time.monotonic() - started)))
        (out / "events.jsonl").write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
        for call in sorted({e["call_id"] for e in events}):
            png = render_timeline([e for e in events if e["call_id"] == call], out / f"{call}.png")
            console.print(f"timeline: {png}")
        ok = complete()
        console.print(f"[bold]{'done' if ok else 'incomplete'}[/]: {len(ended)}/{expected} channels summarised, "
                      f"{sum(e['type'] == 'segment' for e in events)} segments in {time.monotonic() - started:.0f} s")
        return 0 if ok else 1
    finally:
        if worker is not None:
            stop_process_group(worker, timeout=10)
        if broker is not None:
            broker.stop()
