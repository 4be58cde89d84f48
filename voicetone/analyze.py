"""`voicetone analyze`: the worker's windowing, model and aggregation on audio files (WAV, FLAC, OGG, MP3)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import orjson

from streams.settings import Settings

#: the widest label (`no_speech`): label columns never get narrower, so a label is never cut
LABEL_WIDTH = 9


def analyze_files(settings: Settings, files: Sequence[str], frame_ms: int = 100, model=None,
                  on_audio: Optional[Callable[[float, float], None]] = None, start_ts_ms: Optional[int] = None,
                  meta: Optional[dict] = None) -> list[dict]:
    """Events for every file (call ID = file name without extension), in order. `on_audio(seconds, total)`
    is called as each frame's audio goes in, with the seconds of audio in all files (for a progress bar).
    With ``start_ts_ms`` (the wall-clock time of each file's first sample) the frames carry ts_ms; with
    ``meta`` each channel's first frame carries it."""
    from model import load
    from streams.offline import OfflineRunner
    from voicetone.framing import iter_frames, load_source

    sources = [load_source(path) for path in files]   # every file readable before the model loads
    model = model or load(settings.model_path, device=settings.device, precision=settings.precision,
                          jit=settings.jit)
    total_s = sum(src.duration_s for src in sources)
    events: list[dict] = []
    for src in sources:
        runner = OfflineRunner(model, settings, settings.max_batch_size)
        # f32le keeps the file's samples exactly
        frames = iter_frames(src, frame_ms, "f32le", with_ts=start_ts_ms is not None,
                             ts_start_ms=start_ts_ms or 0, meta=meta)
        step_s = max(1, int(src.sample_rate * frame_ms / 1000)) / src.sample_rate / len(src.channels)

        def fed():
            for _, key, value in frames:
                if on_audio is not None:
                    on_audio(step_s, total_s)
                yield key, value

        runner.feed(fed())
        events.extend(runner.finish())
    return events


def analyze(settings: Settings, files: Sequence[str], as_json: bool = False, frame_ms: int = 100,
            chime=None, start_ts_ms: Optional[int] = None, meta: Optional[dict] = None) -> int:
    """Print the events (JSON lines or a table); with ``chime`` (a ``ChimeConfig``) the Chime notifications
    instead, as EventBridge JSON lines, the files' audio starting at ``start_ts_ms`` (default: now)."""
    from rich.console import Console

    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"no such file: {', '.join(missing)}")
    if chime is not None and start_ts_ms is None:
        import time

        start_ts_ms = int(time.time() * 1000)
    events = _with_progress(Console(stderr=True), settings, files, frame_ms, start_ts_ms=start_ts_ms, meta=meta)
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
    print_tables(Console(), events)
    return 0


def _with_progress(console, settings: Settings, files: Sequence[str], frame_ms: int, **kw) -> list[dict]:
    """`analyze_files` with a progress bar over the audio's duration, on a terminal only."""
    if not console.is_terminal:
        return analyze_files(settings, files, frame_ms, **kw)
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("analyzing"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
                  TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task("analyze", total=None)

        def on_audio(seconds: float, total: float) -> None:
            bar.update(task, total=total, advance=seconds)

        return analyze_files(settings, files, frame_ms, on_audio=on_audio, **kw)


def print_tables(console, events: list[dict]) -> None:
    """One table per (call, channel) that fits the terminal, labels never cut; the channel's call summary
    under it. On a terminal too narrow for the whole table, P(positive, neutral, negative) are left out
    (the label names the largest; --json has them all)."""
    from rich.measure import Measurement

    current = {(e["call_id"], e["channel"], e["segment_index"]): e for e in events if e["type"] == "aggregate"}
    order: list[tuple[str, str]] = []
    for ev in events:
        if ev["type"] == "segment" and (ev["call_id"], ev["channel"]) not in order:
            order.append((ev["call_id"], ev["channel"]))
    for ev in events:
        if ev["type"] == "dead_letter":
            console.print(f"[red]rejected frame[/]: {ev['reason']}: {ev['detail']}")
    for call_id, channel in order:
        segments = [e for e in events if e["type"] == "segment" and (e["call_id"], e["channel"]) == (call_id, channel)]
        table = _table(f"voicetone analyze: {call_id} / {channel}", segments, current, probabilities=True)
        if Measurement.get(console, console.options.update_width(10_000), table).maximum > console.width:
            table = _table(f"voicetone analyze: {call_id} / {channel}", segments, current, probabilities=False)
        console.print(table)
        for ev in events:
            if ev["type"] == "call" and (ev["call_id"], ev["channel"]) == (call_id, channel):
                console.print(f"  call ended: {ev['duration_ms'] / 1000:.1f} s, {ev['segments']} segments, "
                              f"overall [bold]{ev['overall']['label']}[/]")
        console.print()


def _table(title: str, segments: list[dict], current: dict, probabilities: bool):
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, padding=0, collapse_padding=True,
                  title_justify="left")
    table.add_column("seg", justify="right", no_wrap=True)
    table.add_column("time (s)", justify="right", no_wrap=True)
    for name in ("speech", "pos", "neu", "neg") if probabilities else ("speech",):
        table.add_column(name, justify="right", no_wrap=True)
    for name in ("label", "current", "overall"):
        table.add_column(name, no_wrap=True, min_width=LABEL_WIDTH)
    for ev in segments:
        agg = current.get((ev["call_id"], ev["channel"], ev["segment_index"]))
        s = ev["sentiment"]
        probs = [f"{s['positive']:.2f}", f"{s['neutral']:.2f}", f"{s['negative']:.2f}"] if probabilities else []
        table.add_row(str(ev["segment_index"]), f"{ev['start_ms'] / 1000:.1f}-{ev['end_ms'] / 1000:.1f}",
                      f"{ev['speech_probability']:.2f}", *probs, ev["label"],
                      agg["current"]["label"] if agg else "", agg["overall"]["label"] if agg else "")
    return table
