"""Real synthetic speech for tests: flite (clearest for PocketSphinx), else espeak-ng; neither is a failure
(scripts/setup.sh installs both)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def speak(path: str | Path, text: str) -> str:
    """Write ``text`` spoken to the WAV file ``path``; returns the path as a string."""
    if shutil.which("flite"):
        subprocess.run(["flite", "-t", text, "-o", str(path)], check=True, capture_output=True)
    elif shutil.which("espeak-ng"):
        subprocess.run(["espeak-ng", "-s", "140", "-v", "en-us", "-w", str(path), text], check=True,
                       capture_output=True)
    else:
        pytest.fail("no TTS engine (flite or espeak-ng) installed: run scripts/setup.sh")
    return str(path)
