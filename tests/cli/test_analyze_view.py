"""`voicetone analyze`'s readable view: tables that fit the terminal with no label cut, progress on a
terminal only."""

from __future__ import annotations

import io

import numpy as np
from rich.console import Console

from schemas.wav import write_wav
from tests.harness.events import aggregate, segment
from voicetone.analyze import analyze_files, print_tables
from streams.settings import Settings


def _events() -> list[dict]:
    events = []
    for i, label in enumerate(["no_speech", "negative", "positive", "neutral"] * 3):
        seg = segment("a-rather-long-call-identifier", "customer", i, label)
        seg["end_ms"] = seg["start_ms"] + 5000 + 100_000   # wide time cells: 100.0-205.0
        events += [seg, aggregate("a-rather-long-call-identifier", "customer", i, "no_speech", "no_speech")]
    return events


def _render(width: int) -> list[str]:
    out = io.StringIO()
    print_tables(Console(file=out, width=width, color_system=None), _events())
    return out.getvalue().splitlines()


def test_the_table_fits_the_terminal_and_never_cuts_a_label():
    for width in (120, 80, 64, 52):
        lines = _render(width)
        assert all(len(line.rstrip()) <= width for line in lines), (width, lines)
        assert not any("…" in line for line in lines[1:]), (width, lines)
        rows = [ln for ln in lines if ln.split() and ln.split()[0].isdigit()]
        assert len(rows) == 12 and all(ln.split()[-3:] == [ln.split()[-3], "no_speech", "no_speech"] for ln in rows)
        assert {ln.split()[-3] for ln in rows} == {"no_speech", "negative", "positive", "neutral"}
    assert "pos" in _render(80)[1] and "pos" not in _render(52)[1]   # narrow: the probabilities give way


def test_progress_reports_the_audio_fed(tmp_path):
    from tests.harness.reliability import tiny_model_path

    write_wav(tmp_path / "a.wav", 8000, np.zeros((2, 8000 * 7), np.float32))
    write_wav(tmp_path / "b.wav", 16000, np.zeros(16000 * 3, np.float32))
    seen: list[tuple[float, float]] = []
    settings = Settings(model_path=str(tiny_model_path(tmp_path)), device="cpu")
    analyze_files(settings, [str(tmp_path / "a.wav"), str(tmp_path / "b.wav")],
                  on_audio=lambda s, total: seen.append((s, total)))
    assert {total for _, total in seen} == {10.0}
    assert abs(sum(s for s, _ in seen) - 10.0) < 1e-6
