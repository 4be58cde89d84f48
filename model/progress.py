"""Progress of long jobs (training, corpus synthesis, evaluation) on a terminal and off it.

rich draws its bar only on a terminal. A job whose output goes to a file (a recipe run in the background,
CI, a batch job) would otherwise print nothing between its first line and its last, for up to an hour.
Off a terminal, `ProgressBar` therefore writes a plain line at most once a minute instead: step, share
done, rate and time left.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional

#: seconds between plain progress lines when the output is not a terminal
EVERY_S = 60.0


class ProgressLog:
    """The plain lines: at most one per ``every_s`` seconds, with the rate since this run began."""

    def __init__(self, desc: str, start: int, t0: float, every_s: float = EVERY_S, unit: str = "step",
                 units: str | None = None):
        self.desc, self.start, self.t0, self.every_s, self.unit = desc, start, t0, every_s, unit
        self.units = units or unit + "s"
        self.last = t0

    def line(self, done: int, total: int, now: float, info: str = "") -> str | None:
        """The line to write once ``done`` of ``total`` are done, or None (too soon after the last)."""
        if now - self.last < self.every_s:
            return None
        self.last = now
        rate = (done - self.start) / max(now - self.t0, 1e-9)   # per second since this run began
        left = f", ~{(total - done) / rate / 60:.0f} min left" if rate > 0 else ""
        return (f"{self.desc}: {self.unit} {done} of {total} ({done / max(total, 1):.0%}), "
                f"{rate * 60:.0f} {self.units}/min{left}" + (f"; {info}" if info else ""))


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class ProgressBar:
    """A rich bar with a free-text ``info`` column on a terminal; plain `ProgressLog` lines through ``emit``
    (default: standard error) elsewhere; nothing when not ``enabled``. Use as a context manager."""

    def __init__(self, desc: str, total: int, enabled: bool = True, *, completed: int = 0,
                 transient: bool = False, unit: str = "step", units: str | None = None,
                 emit: Optional[Callable[[str], None]] = None):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.total, self.done, self.info = total, completed, ""
        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=transient,
                             disable=not enabled)
        self._task = self._bar.add_task(desc, total=total, completed=completed, info="")
        on_terminal = self._bar.console.is_terminal
        self._plain = (ProgressLog(desc, completed, time.time(), EVERY_S, unit, units)
                       if enabled and not on_terminal else None)
        self._emit = emit or _stderr

    def __enter__(self) -> "ProgressBar":
        self._bar.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        self._bar.__exit__(*exc)
        return False

    def update(self, *, total: int | None = None, info: str | None = None) -> None:
        if total is not None:
            self.total = total
            self._bar.update(self._task, total=total)
        if info is not None:
            self.info = info
            self._bar.update(self._task, info=info)

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._bar.advance(self._task, n)
        if self._plain is not None:
            msg = self._plain.line(self.done, self.total, time.time(), self.info)
            if msg:
                self._emit(msg)
