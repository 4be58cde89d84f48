"""bench/ablation.py's text-only system runs end to end (it is only exercised by hand otherwise)."""

from __future__ import annotations

import json
import subprocess
import sys

from model.data.manifest import ManifestEntry, write_manifest
from tests.harness import ROOT
from tests.harness.speech import speak



def test_text_ablation_transcribes_and_labels(tmp_path):
    text = "thank you so much, this is wonderful and i am very happy"
    speak(tmp_path / "a.wav", text)
    write_manifest(tmp_path / "test.jsonl", [ManifestEntry(audio="a.wav", transcript=text, sentiment="positive")])
    out = tmp_path / "text.json"
    proc = subprocess.run([sys.executable, "-m", "bench.ablation", "text", "--test", str(tmp_path / "test.jsonl"),
                           "--out", str(out), "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    (clip,) = report["clips"]
    assert clip["label"] == 0 and clip["ref"] == text
    assert len(set(clip["hyp"].split()) & set(text.replace(",", "").split())) >= 2, clip["hyp"]  # it heard words
    assert 0 <= clip["pred"] <= 2
    assert clip["vader_on_reference"] == 0  # VADER on the true words: positive
    assert json.loads(proc.stdout.strip().splitlines()[-1])["n"] == 1
