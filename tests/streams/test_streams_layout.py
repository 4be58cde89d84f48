"""The `streams` package stays readable: small modules, small classes, and dependencies that point down
(the CLI package `voicetone` uses `streams`, never the reverse)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.harness import ROOT

STREAMS = ROOT / "streams"
MAX_MODULE_LINES = 450
MAX_CLASS_LINES = 250
MODULES = sorted(STREAMS.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(STREAMS.parent)))
def test_modules_and_classes_stay_small(path: Path):
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            assert node.end_lineno - node.lineno + 1 <= MAX_CLASS_LINES, node.name


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(STREAMS.parent)))
def test_streams_does_not_import_the_cli_package(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        assert not [n for n in names if n == "voicetone" or n.startswith("voicetone.")], node.lineno


def test_the_layout_is_seen():
    assert len(MODULES) > 10 and STREAMS / "worker.py" in MODULES
