"""`voicetone analyze`: the worker's windowing, model and aggregation on WAV files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import orjson

from voicetone.settings import Settings


def analyze_files(settings: Settings, files: Sequence[str], frame_ms: int = 100, model=None,
                  start_ts_ms: Optional[int] = None, meta: Optional[dict] = None) -> list[dict]:
    """Events for every file (call ID = file name without extension), in order. With ``start_ts_ms`` (the
    wall-clock time of each file's first sample) the frames carry ts_ms; with ``meta`` each channel's first
    frame carries it."""
    from model import load
    from streams.offline import OfflineRunner
    from streams.pipeline import ProcessorConfig
    from voicetone.framing import iter_frames, load_source

    model = model or load(settings.model_path, device=settings.device, precision=settings.precision,
                          jit=settings.jit)
    events: list[dict] = []
    for path in files:
        runner = OfflineRunner(model, ProcessorConfig.from_settings(settings), settings.max_batch_size)
        # f32le keeps the file's samples exactly
        frames = iter_frames(load_source(path), frame_ms, "f32le", with_ts=start_ts_ms is not None,
                             ts_start_ms=start_ts_ms or 0, meta=meta)
        runner.feed((k, v) for _, k, v in frames)
        events.extend(runner.finish())
    return events


def analyze(settings: Settings, files: Sequence[str], as_json: bool = False, frame_ms: int = 100,
            chime=None, start_ts_ms: Optional[int] = None, meta: Optional[dict] = None) -> int:
    """Print the events (JSON lines or a table); with ``chime`` (a ``ChimeConfig``) the Chime notifications
    instead, as EventBridge JSON lines, the files' audio starting at ``start_ts_ms`` (default: now)."""
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"no such file: {', '.join(missing)}")
    if chime is not None and start_ts_ms is None:
        import time

        start_ts_ms = int(time.time() * 1000)
    events = analyze_files(settings, files, frame_ms, start_ts_ms=start_ts_ms, meta=meta)
    if chime is not None:
        from voicetone.chime import ChimeBridge, stream_sink

        bridge, write = ChimeBridge(chime), stream_sink("stdout")
        for ev in events:
            for note in bridge.feed(ev):
                write(note)
        return 0
    if as_json:
        for ev in events:
            print(orjson.dumps(ev).decode())
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table("call", "channel", "segment", "time (s)", "speech", "pos", "neu", "neg", "label",
                  "current (30 s)", "overall", title="voicetone analyze")
    current = {}
    for ev in events:
        if ev["type"] == "aggregate":
            current[(ev["call_id"], ev["channel"], ev["segment_index"])] = ev
    for ev in events:
        if ev["type"] == "segment":
            agg = current.get((ev["call_id"], ev["channel"], ev["segment_index"]))
            s = ev["sentiment"]
            table.add_row(ev["call_id"], ev["channel"], str(ev["segment_index"]),
                          f"{ev['start_ms'] / 1000:.1f}-{ev['end_ms'] / 1000:.1f}",
                          f"{ev['speech_probability']:.2f}", f"{s['positive']:.2f}", f"{s['neutral']:.2f}",
                          f"{s['negative']:.2f}", ev["label"],
                          agg["current"]["label"] if agg else "", agg["overall"]["label"] if agg else "")
        elif ev["type"] == "call":
            table.add_row(ev["call_id"], ev["channel"], "end", f"{ev['duration_ms'] / 1000:.1f}", "", "", "", "",
                          "", "", f"[bold]{ev['overall']['label']}[/]")
        elif ev["type"] == "dead_letter":
            console.print(f"[red]rejected frame[/]: {ev['reason']}: {ev['detail']}")
    console.print(table)
    return 0
