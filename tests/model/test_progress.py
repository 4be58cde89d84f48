"""Long jobs report progress off a terminal too: plain lines at most once a minute (model.progress)."""

from model import progress
from model.progress import ProgressBar, ProgressLog


def test_plain_lines_come_at_most_once_per_interval_with_rate_and_time_left():
    log = ProgressLog("asr", start=100, t0=0.0, every_s=60.0)
    assert log.line(150, 400, now=30.0) is None                      # too soon after the start
    assert log.line(160, 400, now=60.0, info="loss=2.000") == \
        "asr: step 160 of 400 (40%), 60 steps/min, ~4 min left; loss=2.000"
    assert log.line(170, 400, now=90.0) is None and log.line(220, 400, now=120.0) is not None
    clips = ProgressLog("evaluating", start=0, t0=0.0, every_s=0.0, unit="window")
    assert clips.line(30, 90, now=60.0) == "evaluating: window 30 of 90 (33%), 30 windows/min, ~2 min left"


def test_the_bar_writes_lines_where_the_output_is_not_a_terminal(monkeypatch):
    monkeypatch.setattr(progress, "EVERY_S", 0.0)
    lines: list[str] = []
    with ProgressBar("synthesising", 3, unit="utterance", emit=lines.append) as bar:   # pytest's output: no tty
        for i in range(3):
            bar.update(info=f"#{i}")
            bar.advance()
    assert [ln.split(" (")[0] for ln in lines] == [f"synthesising: utterance {i} of 3" for i in (1, 2, 3)]
    assert lines[-1].endswith("; #2")
    quiet: list[str] = []
    with ProgressBar("off", 3, enabled=False, emit=quiet.append) as bar:
        bar.advance(3)
    assert quiet == [] and bar.done == 3
