"""Bad input to the command line ends in one line on stderr and its exit code, never a traceback:
corrupt or foreign checkpoints, invalid settings, unreadable files (usage: 2), Ctrl-C (130)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import CheckpointError, load_checkpoint
from schemas.wav import write_wav
from tests.harness import ROOT
from voicetone.cli import EXIT_INTERRUPTED, EXIT_USAGE, main
from streams.settings import Settings



@pytest.fixture(scope="module")
def call(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("call") / "call.wav"
    write_wav(path, 16000, (0.1 * np.sin(np.arange(16000 * 3) / 16000 * 2 * np.pi * 300)).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from tests.harness.reliability import tiny_model_path

    return tiny_model_path(tmp_path_factory.mktemp("tiny"))


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("voicetone: error: "), err
    assert "Traceback" not in err
    return err


def test_a_truncated_checkpoint(tmp_path, tiny, call, capsys):
    cut = tmp_path / "truncated.pt"
    cut.write_bytes(tiny.read_bytes()[: tiny.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(cut)
    assert main(["analyze", str(call), "--model-path", str(cut)]) == EXIT_USAGE
    assert "truncated.pt: not a readable checkpoint" in _one_line(capsys)


def test_a_checkpoint_of_another_architecture(tmp_path, tiny, call, capsys):
    ckpt = load_checkpoint(tiny)
    ckpt["config"]["d_model"] = ckpt["config"]["d_model"] * 2   # the weights are of the smaller network
    other = tmp_path / "other.pt"
    torch.save(ckpt, other)
    assert main(["analyze", str(call), "--model-path", str(other)]) == EXIT_USAGE
    assert "do not fit the network" in _one_line(capsys)


def test_a_foreign_checkpoint(tmp_path, call, capsys):
    foreign = tmp_path / "resnet.pt"
    torch.save(torch.nn.Linear(4, 2).state_dict(), foreign)   # a plain state dict, not ours
    assert main(["analyze", str(call), "--model-path", str(foreign)]) == EXIT_USAGE
    assert "not a voicetone checkpoint" in _one_line(capsys)


def test_a_missing_checkpoint(tmp_path, call, capsys):
    assert main(["analyze", str(call), "--model-path", str(tmp_path / "nope.pt")]) == EXIT_USAGE
    assert "nope.pt" in _one_line(capsys)


INVALID = [
    ("VOICETONE_WINDOW_MS", "0", "window_ms"),
    ("VOICETONE_WINDOW_MS", "five", "window_ms"),
    ("VOICETONE_HOP_MS", "6000", "hop_ms (6000) must be at most window_ms (5000)"),
    ("VOICETONE_HOP_MS", "-1", "hop_ms"),
    ("VOICETONE_MIN_LAST_WINDOW_MS", "9000", "min_last_window_ms (9000) must be at most window_ms"),
    ("VOICETONE_TOPIC_PARTITIONS", "0", "topic_partitions"),
    ("VOICETONE_REPLICATION_FACTOR", "0", "replication_factor"),
    ("VOICETONE_MAX_REORDER_MS", "-5", "max_reorder_ms"),
    ("VOICETONE_MAX_GAP_MS", "-1", "max_gap_ms"),
    ("VOICETONE_MAX_FRAME_BYTES", "0", "max_frame_bytes"),
    ("VOICETONE_MAX_FRAME_MS", "0", "max_frame_ms"),
    ("VOICETONE_IDLE_TIMEOUT_S", "0", "idle_timeout_s"),
    ("VOICETONE_HEARTBEAT_INTERVAL_S", "90", "heartbeat_interval_s (90) must be shorter than session_timeout_s"),
    ("VOICETONE_SESSION_TIMEOUT_S", "0", "session_timeout_s"),
    ("VOICETONE_COMMIT_INTERVAL_S", "0", "commit_interval_s"),
    ("VOICETONE_METRICS_PORT", "70000", "metrics_port"),
    ("VOICETONE_LOG_LEVEL", "loud", "log_level"),
    ("VOICETONE_BROKER", "kafka:port", "broker"),
    ("VOICETONE_DEVICE", "tpu", "device"),
    ("VOICETONE_MAX_BATCH_SIZE", "0", "max_batch_size"),
]


@pytest.mark.parametrize("env, value, says", INVALID, ids=[f"{e}={v}" for e, v, _ in INVALID])
def test_each_invalid_setting_is_one_line_and_exit_2(env, value, says, call, monkeypatch, capsys):
    monkeypatch.setenv(env, value)
    assert main(["analyze", str(call)]) == EXIT_USAGE
    err = _one_line(capsys)
    assert "invalid setting" in err and says in err
    if "must be" not in says:   # a field's own range: the line names its variable
        assert env in err


def test_valid_edges_are_accepted():
    Settings(hop_ms=5000, window_ms=5000, min_last_window_ms=0, max_reorder_ms=0, max_gap_ms=0,
             broker="kafka://a:9092,b:1,localhost")


def test_the_worker_refuses_an_invalid_setting_before_it_starts(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "VOICETONE_HOP_MS": "9000",
           "VOICETONE_BROKER": "127.0.0.1:9"}
    proc = subprocess.run([sys.executable, "-m", "voicetone", "worker"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == EXIT_USAGE
    assert proc.stderr.count("\n") == 1 and "hop_ms (9000) must be at most window_ms" in proc.stderr


def test_unreadable_files(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nope.wav")]) == EXIT_USAGE
    assert "no such file" in _one_line(capsys)
    locked = tmp_path / "locked.wav"
    write_wav(locked, 8000, np.zeros(8000, np.float32))
    locked.chmod(0)
    try:
        readable = False
        try:
            locked.read_bytes()
            readable = True   # root reads anything: the permission case cannot happen here
        except PermissionError:
            pass
        if not readable:
            assert main(["analyze", str(locked)]) == EXIT_USAGE
            assert "Permission denied" in _one_line(capsys)
    finally:
        locked.chmod(0o644)
    (tmp_path / "notes.wav").write_text("not audio")
    assert main(["analyze", str(tmp_path / "notes.wav")]) == EXIT_USAGE
    assert "notes.wav" in _one_line(capsys)


def test_interrupted_is_130(call, monkeypatch):
    import voicetone.analyze

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(voicetone.analyze, "analyze", interrupted)
    assert main(["analyze", str(call)]) == EXIT_INTERRUPTED
