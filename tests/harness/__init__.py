"""Helpers shared by the tests: live broker and worker processes, reliability scenarios, spoken audio,
contract-shaped events, and a stand-in model for the stream processor."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]   # the repository root
