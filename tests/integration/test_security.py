"""Security: Kafka authentication, safe checkpoint loading, local-only HTTP endpoint."""

from __future__ import annotations

import ast
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness import ROOT
from streams.settings import Settings

CODE_DIRS = ("model", "streams", "voicetone", "schemas", "bench", "examples")


# ------------------------------------------------------------------ Kafka authentication
@pytest.mark.broker
def test_worker_is_refused_by_a_broker_that_requires_authentication(tmp_path):
    from confluent_kafka.admin import AdminClient

    from tests.harness.reliability import WorkerProc, base_settings, running_broker, tiny_model_path

    with running_broker(tmp_path, authentication=True) as broker:
        settings = base_settings(broker.url, tiny_model_path(tmp_path))
        with pytest.raises(Exception):  # the clients replay/watch use: no metadata without credentials
            AdminClient({**settings.confluent_config(), "socket.timeout.ms": 3000}).list_topics(timeout=5)
        w = WorkerProc(settings, tmp_path / "worker.log")
        try:
            w.start()
            code = w.wait_exit(timeout=90)
            assert code is not None and code != 0, f"worker without credentials did not fail: {w.log_tail()}"
        finally:
            w.stop()
        assert "NotAuthenticated" in (tmp_path / "broker.log").read_text(errors="replace")


@pytest.mark.broker
def test_worker_works_with_scram_credentials(tmp_path):
    from tests.harness.reliability import (EventLog, WorkerProc, base_settings, call_frames, make_calls, produce_all,
                                    running_broker, tiny_model_path, workers)
    from voicetone.broker import tansu_binary

    with running_broker(tmp_path, authentication=True) as broker:
        r = subprocess.run([tansu_binary(), "user", "create", "voicetone", "s3cret-pw", "--broker",
                            f"tcp://{broker.url}", "--mechanism", "scram512"], capture_output=True, text=True,
                           timeout=30)
        if r.returncode != 0:
            pytest.skip("the bundled tansu cannot create a SCRAM user on a broker started with --authentication "
                        f"(and has no persistent storage to create one beforehand): {r.stderr.strip()[-200:]}")
        settings = base_settings(broker.url, tiny_model_path(tmp_path), security_protocol="SASL_PLAINTEXT",
                                 sasl_mechanism="SCRAM-SHA-512", sasl_username="voicetone",
                                 sasl_password="s3cret-pw")
        env = {"VOICETONE_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "VOICETONE_SASL_MECHANISM": "SCRAM-SHA-512",
               "VOICETONE_SASL_USERNAME": "voicetone", "VOICETONE_SASL_PASSWORD": "s3cret-pw"}
        files = make_calls(tmp_path, 1, 6.0, seed=1)
        log = EventLog(settings, [settings.calls_topic])
        log.start()
        w = WorkerProc(settings, tmp_path / "worker.log", env)
        try:
            with workers(w):
                w.start()
                w.wait_ready()
                produce_all(settings, [(k, v) for _, k, v in call_frames(files)[0]])
                log.wait_for(lambda ev: any(e["type"] == "call" for e in ev), 90, "the call summary", w.alive)
        finally:
            log.stop()


@pytest.mark.parametrize("mech", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_settings_reach_both_kafka_clients(mech):
    from streams.app import faust_security

    s = Settings(security_protocol="SASL_SSL", sasl_mechanism=mech, sasl_username="u", sasl_password="p")
    conf = s.confluent_config()
    assert (conf["security.protocol"], conf["sasl.mechanism"], conf["sasl.username"], conf["sasl.password"]) == \
        ("SASL_SSL", mech, "u", "p")
    cred = faust_security(s)
    assert cred.username == "u" and cred.password == "p"
    assert str(getattr(cred.mechanism, "value", cred.mechanism)) == mech
    assert cred.ssl_context is not None  # SASL_SSL: TLS too
    assert faust_security(Settings()) is None


# ------------------------------------------------------------------ checkpoints
class _Evil:
    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_load_checkpoint_refuses_a_pickled_object(tmp_path):
    import torch

    from model.checkpoint import FORMAT, FORMAT_VERSION, load_checkpoint

    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "payload": evil}, path)
    with pytest.raises(Exception) as exc:
        load_checkpoint(path)
    assert "weights_only" in str(exc.value) or "Unsupported" in str(exc.value) or "global" in str(exc.value)
    assert not marker.exists(), "loading a checkpoint ran code from it"


def _calls(name_is: str):
    for d in CODE_DIRS:
        for path in (ROOT / d).rglob("*.py"):
            if any(part.startswith(".venv") or part == "site-packages" for part in path.parts):
                continue
            try:
                tree = ast.parse(path.read_text(), str(path))
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    f = node.func
                    name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                    base = getattr(f.value, "id", "") if isinstance(f, ast.Attribute) else ""
                    if f"{base}.{name}" == name_is or name == name_is:
                        yield path.relative_to(ROOT), node


def test_every_torch_load_is_weights_only_and_nothing_unpickles():
    loads = list(_calls("torch.load"))
    assert loads, "expected model.checkpoint to use torch.load"
    for path, node in loads:
        kw = {k.arg: k.value for k in node.keywords}
        assert "weights_only" in kw and isinstance(kw["weights_only"], ast.Constant) and \
            kw["weights_only"].value is True, f"{path}:{node.lineno}: torch.load without weights_only=True"
    for fn in ("pickle.load", "pickle.loads", "dill.load", "joblib.load"):
        found = [f"{p}:{n.lineno}" for p, n in _calls(fn)]
        assert not found, f"{fn} in {found}"


# ------------------------------------------------------------------ HTTP endpoint
def _non_loopback_ip() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))  # no packet is sent: picks the outgoing interface
            ip = s.getsockname()[0]
        return None if ip.startswith("127.") else ip
    except OSError:
        return None


def test_metrics_endpoint_binds_localhost_by_default():
    from streams.metrics import HealthState, Metrics, start_http_server

    settings = Settings()
    assert settings.metrics_host == "127.0.0.1"
    m = Metrics()
    server = start_http_server(settings.metrics_host, 0, m, HealthState(metrics=m))
    try:
        assert server.host == "127.0.0.1"
        with socket.create_connection(("127.0.0.1", server.port), timeout=2):
            pass
        ip = _non_loopback_ip()
        if ip:
            with pytest.raises(OSError), socket.create_connection((ip, server.port), timeout=2):
                pass
    finally:
        server.close()
