"""Broker trouble is named once: a closed port, a port that accepts and never answers, and a broker that
requires authentication each give replay, watch and report one line (no librdkafka line) and exit 3
within their --connect-timeout; a worker started before its broker waits, says why on /readyz, and
processes a call once the broker is up."""

from __future__ import annotations

import contextlib
import logging
import socket
import time

import pytest

from streams.kafka_client import BrokerUnavailable, BrokerWatch, RateLimit, classify, connect
from streams.metrics import HealthState
from voicetone.cli import EXIT_UNAVAILABLE, build_parser, main
from streams.settings import Settings

SAMPLE = "voicetone/samples/call-delivery-thanks.wav"
TIMEOUT_S = 3.0
SLACK_S = 3.0   # reading the file to replay, closing the client


@pytest.fixture(scope="module")
def closed_port() -> str:
    from voicetone.broker import free_port

    return f"127.0.0.1:{free_port()}"   # nothing listens there


@pytest.fixture(scope="module")
def silent_port():
    """Accepts every connection and never answers."""
    import threading

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                held.append(s.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"127.0.0.1:{s.getsockname()[1]}"
    finally:
        s.close()
        for c in held:
            c.close()


@pytest.fixture(scope="module")
def auth_broker(tmp_path_factory):
    from voicetone.broker import EmbeddedBroker

    b = EmbeddedBroker(log_path=str(tmp_path_factory.mktemp("auth") / "tansu.log"), authentication=True).start()
    try:
        yield b.url
    finally:
        b.stop()


TOOLS = {
    "replay": lambda url: ["replay", SAMPLE, "--broker", url, "--speed", "0", "--quiet"],
    "watch": lambda url: ["watch", "--broker", url],
    "report": lambda url: ["report", "some-call", "--broker", url],
}
EXPECT = {"closed": "connection refused", "silent": "did not answer as Kafka",
          "auth": "likely requires authentication"}


@pytest.mark.broker
@pytest.mark.parametrize("where", sorted(EXPECT))
@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_each_tool_gives_one_line_and_exit_3(tool, where, request, capfd, monkeypatch):
    url = request.getfixturevalue({"closed": "closed_port", "silent": "silent_port", "auth": "auth_broker"}[where])
    monkeypatch.chdir(request.config.rootpath)
    build_parser()   # its imports (torch) are not the wait under test
    started = time.monotonic()
    code = main(TOOLS[tool](url) + ["--connect-timeout", str(TIMEOUT_S)])
    took = time.monotonic() - started
    out, err = capfd.readouterr()   # file descriptors: librdkafka writes to fd 2 when it has no logger
    assert code == EXIT_UNAVAILABLE, err
    assert err.count("\n") == 1, err
    assert err.startswith("voicetone: error: ") and url in err and EXPECT[where] in err, err
    assert "rdkafka" not in err and "FAIL" not in err
    assert took < TIMEOUT_S + SLACK_S, took


def test_a_host_that_does_not_resolve():
    with pytest.raises(BrokerUnavailable, match="host name not found") as exc:
        connect(Settings(broker="no-such-host.invalid:9092"), 1.0)
    assert exc.value.retry


@pytest.mark.broker
def test_a_sasl_client_with_wrong_credentials_is_told_authentication_failed(auth_broker):
    s = Settings(broker=auth_broker, security_protocol="SASL_PLAINTEXT", sasl_username="nobody",
                 sasl_password="wrong")
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="refused authentication") as exc:
        connect(s, 10.0)
    assert not exc.value.retry and time.monotonic() - started < 10.0


def test_errors_are_classified():
    assert classify("_TRANSPORT", "127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused") \
        == "refused"
    assert classify("_RESOLVE", "Failed to resolve 'x:9092': Name or service not known") == "resolve"
    assert classify("_SSL", "SSL handshake failed: certificate verify failed") == "tls"
    assert classify("_AUTHENTICATION", "SASL authentication error: Authentication failed") == "auth"
    assert classify("", "Disconnected: connection reset by peer (after 0ms in state UP)") == "closed"
    assert classify("_ALL_BROKERS_DOWN", "1/1 brokers are down") == "all_down"
    assert classify("_PARTITION_EOF", "reached end") is None
    watch = BrokerWatch("b:1")
    watch.note("", "Disconnected: connection reset by peer")
    watch.note("_TRANSPORT", "Connect to ipv4#1.2.3.4:1 failed: Connection refused")
    assert watch.worst()[0] == "refused" and watch.fatal() is None   # the latest, when nothing is fatal
    watch.note("_AUTHENTICATION", "SASL authentication error")
    assert watch.worst()[0] == "auth" and "refused authentication" in str(watch.fatal())


def test_repeated_client_lines_are_held_back_and_counted():
    now = [0.0]
    limit = RateLimit(30.0, clock=lambda: now[0])

    def rec(name, msg):
        return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, (), None)

    assert limit.filter(rec("aiokafka.conn", "Unable connect to node with id 1: [Errno 111]"))
    assert not limit.filter(rec("aiokafka.conn", "Unable connect to node with id 2: [Errno 111]"))  # digits aside
    assert not limit.filter(rec("aiokafka.conn", "Unable connect to node with id 1: [Errno 111]"))
    assert limit.filter(rec("aiokafka.conn", "Unable to update metadata"))   # another line
    assert limit.filter(rec("voicetone.worker", "x")) and limit.filter(rec("voicetone.worker", "x"))  # not a client
    now[0] = 31.0
    r = rec("aiokafka.conn", "Unable connect to node with id 1: [Errno 111]")
    assert limit.filter(r) and "2 similar line(s)" in r.getMessage()


def test_wait_for_broker_backs_off_and_says_why_on_readyz(closed_port, caplog):
    from streams.app import wait_for_broker

    health = HealthState()
    health.set_model_loaded()
    health.set_assignment([])
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        ready, why = health.readiness()
        assert not ready and "connection refused" in why
        if len(sleeps) == 7:
            raise KeyboardInterrupt   # enough: the test's way out of the endless wait

    with caplog.at_level(logging.WARNING, "voicetone.worker"), pytest.raises(KeyboardInterrupt):
        wait_for_broker(Settings(broker=closed_port), health, attempt_s=0.2, sleep=sleep)
    assert sleeps == [1, 2, 4, 8, 16, 30, 30]
    lines = [r.getMessage() for r in caplog.records if r.name == "voicetone.worker"]
    assert len(lines) == 7 and all(closed_port in ln and "trying again" in ln for ln in lines)


@pytest.mark.broker
def test_the_worker_stops_with_one_line_when_the_broker_refuses_it(auth_broker, tmp_path):
    import os
    import subprocess
    import sys

    from tests.harness import ROOT as root
    from tests.harness.reliability import tiny_model_path

    env = dict(os.environ, PYTHONPATH=str(root), VOICETONE_BROKER=auth_broker, VOICETONE_DEVICE="cpu",
               VOICETONE_MODEL_PATH=str(tiny_model_path(tmp_path)), VOICETONE_APP_ID="edges-auth")
    proc = subprocess.Popen([sys.executable, "-m", "voicetone", "worker"], env=env, cwd=root, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        from voicetone.broker import stop_process_group
        stop_process_group(proc, timeout=5)
    assert proc.returncode == EXIT_UNAVAILABLE, err[-2000:]
    assert "Traceback" not in err and "rdkafka" not in err
    assert err.strip().splitlines()[-1].startswith("voicetone: error: ") and auth_broker in err


@pytest.mark.broker
def test_a_worker_started_before_its_broker_processes_a_call_once_it_is_up(tmp_path):
    from tests.harness.reliability import (EventLog, WorkerProc, base_settings, call_frames, make_calls, produce_all,
                                    tiny_model_path, workers)
    from voicetone.broker import EmbeddedBroker, free_port

    port = free_port()
    settings = base_settings(f"127.0.0.1:{port}", tiny_model_path(tmp_path))
    w = WorkerProc(settings, tmp_path / "worker.log")
    with workers(w):
        w.start()
        deadline = time.monotonic() + 90
        why = ""
        while time.monotonic() < deadline:   # up, not ready, and saying why
            assert w.alive() is None, w.alive()
            try:
                code, body = w.http("/readyz", 1.0)
                why = body.decode()
                if code == 503 and "connection refused" in why:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        else:
            raise AssertionError(f"/readyz never said the broker is unreachable (last: {why}); {w.log_tail()}")
        time.sleep(4)   # into the next attempt
        broker = EmbeddedBroker(port=port, log_path=str(tmp_path / "broker.log")).start()
        try:
            w.wait_ready(120)
            files = make_calls(tmp_path, 1, 6.0, seed=1)
            events = EventLog(settings, [settings.calls_topic])
            events.start()
            try:
                produce_all(settings, [(k, v) for _, k, v in call_frames(files)[0]])
                events.wait_for(lambda ev: sum(e["type"] == "call" for e in ev) >= 1, 90, "the call summary",
                                w.alive)
            finally:
                events.stop()
            w.stop()   # while the broker is still up: its shutdown is not what this test looks at
        finally:
            w.stop()
            broker.stop()
    log = (tmp_path / "worker.log").read_text(errors="replace")
    retries = [ln for ln in log.splitlines() if "trying again" in ln]
    assert 1 <= len(retries) <= 4, retries   # one line per failed attempt (each waits 10 s for the broker)
    assert "Traceback" not in log and "rdkafka" not in log and "Connect to ipv4" not in log
