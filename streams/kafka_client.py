"""Kafka clients at the edges: their logs through Python logging, and broker trouble named once.

librdkafka (confluent-kafka) writes its own lines to stderr, one per reconnect attempt: against a broker
that is down that is hundreds of lines a minute and no diagnosis. Every confluent-kafka client voicetone
makes takes `client_config`: librdkafka's log goes to the ``voicetone.kafka`` logger (levels mapped from
librdkafka's syslog levels by confluent-kafka; `log_level` set from that logger's level), and its errors
to a `BrokerWatch`. Connection failures reach both channels; the watch names them once, so the
per-attempt lines (librdkafka's ``FAIL`` facility) are logged at DEBUG. `RateLimit` thins whatever
repeats, for these lines and for aiokafka's (the worker's Faust consumer and producer).

`connect` probes a broker before a tool or the worker starts on it and raises `BrokerUnavailable` with
one line: the address, what went wrong (refused, unknown host, no answer, TLS, authentication, a topic
missing) and the likely fix.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, Iterable, Optional

log = logging.getLogger("voicetone.kafka")

#: loggers whose repeated lines `RateLimit` thins
CLIENT_LOGGERS = ("voicetone.kafka", "aiokafka")
#: python logging level -> librdkafka's syslog level (its `log_level`: what it bothers to format at all)
SYSLOG_LEVEL = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}
#: librdkafka log facilities whose lines also reach the error callback (and so `BrokerWatch`)
WATCHED_FACILITIES = frozenset({"FAIL"})


class BrokerUnavailable(RuntimeError):
    """The broker cannot be used: unreachable, TLS or authentication refused, a topic missing.

    ``retry`` says whether waiting may help (a broker down or starting) or not (credentials, TLS, rights).
    """

    def __init__(self, message: str, kind: str, retry: bool):
        super().__init__(message)
        self.kind = kind
        self.retry = retry


class RateLimit(logging.Filter):
    """Let a line through at most once per ``interval_s`` per (logger, level, text without its numbers);
    the next one that passes says how many were held back. Applies to `CLIENT_LOGGERS` only."""

    def __init__(self, interval_s: float = 30.0, prefixes: Iterable[str] = CLIENT_LOGGERS,
                 clock=time.monotonic):
        super().__init__()
        self.interval_s = interval_s
        self.prefixes = tuple(prefixes)
        self.clock = clock
        self._seen: dict[tuple, list] = {}   # key -> [last passed at, held back since]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
            return True
        text = "".join(c for c in record.getMessage() if not c.isdigit())
        key = (record.name, record.levelno, text)
        now = self.clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self.interval_s:
                seen[1] += 1
                return False
            held = seen[1] if seen is not None else 0
            self._seen[key] = [now, 0]
            if len(self._seen) > 10_000:   # a flood of distinct lines must not grow memory
                self._seen = {key: self._seen[key]}
        if held:
            record.msg = f"{record.getMessage()} ({held} similar line(s) in the last {self.interval_s:.0f} s held back)"
            record.args = ()
        return True


class _LibrdkafkaLog:
    """What confluent-kafka's ``logger`` setting calls: ``log(level, "%s [%s] %s", facility, client, text)``.

    Lines of `WATCHED_FACILITIES` go to `watch` (some connection failures, such as a broker closing the
    connection, reach no error callback) and are logged at DEBUG; `quiet` logs every line at DEBUG (the
    probe of `connect`, whose result is the diagnosis)."""

    def __init__(self, logger: logging.Logger, watch: Optional["BrokerWatch"] = None, quiet: bool = False):
        self.logger, self.watch, self.quiet = logger, watch, quiet

    def log(self, level: int, msg: str, *args: Any) -> None:
        if args and args[0] in WATCHED_FACILITIES:
            level = logging.DEBUG
            if self.watch is not None and len(args) > 2:
                self.watch.note("", str(args[2]))
        self.logger.log(logging.DEBUG if self.quiet else level, msg, *args)


class BrokerWatch:
    """The error callback of one client: remembers the latest problem of each kind, classified."""

    def __init__(self, address: str):
        self.address = address
        self.problems: dict[str, tuple[float, str]] = {}   # kind -> (when, librdkafka's text)
        self.all_down_since: Optional[float] = None
        self._lock = threading.Lock()

    def __call__(self, err) -> None:
        self.note(err.name(), err.str())
        log.debug("kafka client error %s: %s", err.name(), err.str())

    def note(self, name: str, text: str) -> None:
        """Record an error (librdkafka's code name, may be empty, and text)."""
        kind = classify(name, text)
        with self._lock:
            now = time.monotonic()
            if kind == "all_down":
                self.all_down_since = self.all_down_since or now
            elif kind is not None:
                self.problems[kind] = (now, text)

    def up(self) -> None:
        """The broker answered: forget the outage."""
        with self._lock:
            self.all_down_since = None
            self.problems.clear()

    def fatal(self) -> Optional[BrokerUnavailable]:
        """A problem that waiting will not fix (TLS, authentication), as the error to raise."""
        with self._lock:
            for kind in ("auth", "tls"):
                if kind in self.problems:
                    return describe(kind, self.address, self.problems[kind][1])
        return None

    def worst(self) -> Optional[tuple[str, str]]:
        """(kind, text): an authentication or TLS problem if one was seen, else the latest one; or None."""
        with self._lock:
            for kind in ("auth", "tls"):
                if kind in self.problems:
                    return kind, self.problems[kind][1]
            if not self.problems:
                return None
            kind = max(self.problems, key=lambda k: self.problems[k][0])
            return kind, self.problems[kind][1]


def classify(name: str, text: str) -> Optional[str]:
    """A librdkafka error (its code name and text) as one of our kinds, None when not broker trouble."""
    low = text.lower()
    if name == "_ALL_BROKERS_DOWN":
        return "all_down"
    if name in ("_AUTHENTICATION", "SASL_AUTHENTICATION_FAILED") or "authentication" in low or "sasl" in low:
        return "auth"
    if name == "_SSL" or "ssl" in low or "tls" in low or "certificate" in low:
        return "tls"
    if name == "_RESOLVE" or "resolve" in low:
        return "resolve"
    if "connection refused" in low:
        return "refused"
    if "disconnected" in low or "connection reset" in low or "connection closed" in low:
        return "closed"
    if name == "_TIMED_OUT" or "timed out" in low:
        return "timeout"
    if name == "_TRANSPORT":
        return "transport"
    return None


_SECURITY_HINT = ("VOICETONE_SECURITY_PROTOCOL (SSL, SASL_PLAINTEXT, SASL_SSL), VOICETONE_SASL_MECHANISM, "
                  "VOICETONE_SASL_USERNAME and VOICETONE_SASL_PASSWORD")


def describe(kind: str, address: str, detail: str = "", timeout_s: float = 0.0) -> BrokerUnavailable:
    """The one line for a problem of `kind` with the broker at `address`, and whether to retry."""
    detail = detail.strip().rstrip(".")
    at = f"the Kafka broker at {address}"
    lines = {
        "refused": (f"cannot reach {at}: connection refused (is the broker running, and is this its port? "
                    "set --broker or VOICETONE_BROKER)", True),
        "resolve": (f"cannot reach {at}: host name not found (check the host in --broker or VOICETONE_BROKER)",
                    True),
        "timeout": (f"cannot reach {at}: no answer to a connection within {timeout_s:.0f} s (a firewall, or a "
                    "wrong address? check --broker or VOICETONE_BROKER)", True),
        "silent": (f"{at} accepts connections but did not answer as Kafka within {timeout_s:.0f} s (not a Kafka "
                   "port, or a TLS listener? check --broker and VOICETONE_SECURITY_PROTOCOL)", True),
        "closed": (f"{at} closed the connection on the first request: it likely requires authentication or TLS "
                   f"(set {_SECURITY_HINT})", False),
        "auth": (f"{at} refused authentication ({detail or 'no detail'}): check {_SECURITY_HINT}", False),
        "tls": (f"TLS with {at} failed ({detail or 'no detail'}): check VOICETONE_SECURITY_PROTOCOL and "
                "VOICETONE_SSL_CAFILE/CERTFILE/KEYFILE", False),
        "transport": (f"cannot talk to {at} ({detail or 'transport failure'}); check --broker or "
                      "VOICETONE_BROKER", True),
    }
    message, retry = lines[kind]
    return BrokerUnavailable(message, kind, retry)


def missing_topics(address: str, topics: list[str], detail: str = "") -> BrokerUnavailable:
    """A topic a client needs is not there: `detail` says why it could not be created, if it tried."""
    names = ", ".join(topics)
    if detail:
        return BrokerUnavailable(f"topic(s) {names} missing on the Kafka broker at {address} and this user may not "
                                 f"create them ({detail.strip().rstrip('.')}): create them, or grant this user "
                                 "CREATE on the cluster", "topic", False)
    return BrokerUnavailable(f"topic(s) {names} missing on the Kafka broker at {address}: start a worker (it "
                             "creates them) or create them", "topic", False)


def client_config(settings, watch: Optional[BrokerWatch] = None, quiet: bool = False, **extra: Any) -> dict:
    """confluent-kafka settings for `settings`' broker: its security settings, its log through Python
    logging (all of it at DEBUG when `quiet`), its errors to `watch` (one made here when not given), and
    `extra`."""
    conf = dict(settings.confluent_config())
    watch = watch if watch is not None else BrokerWatch(settings.broker_list())
    level = log.getEffectiveLevel()
    conf.update({"logger": _LibrdkafkaLog(log, watch, quiet),
                 "log_level": next((v for k, v in sorted(SYSLOG_LEVEL.items()) if k >= level), 2),
                 "error_cb": watch})
    conf.update(extra)
    return conf


def produce(producer, topic: str, key: Optional[bytes], value: bytes, on_delivery=None,
            wait_s: float = 0.05) -> None:
    """Queue one message on a confluent-kafka `producer`; while its local queue is full (``BufferError``),
    serve delivery reports for up to `wait_s` and try again."""
    extra = {} if on_delivery is None else {"on_delivery": on_delivery}
    while True:
        try:
            producer.produce(topic, key=key, value=value, **extra)
            return
        except BufferError:
            producer.poll(wait_s)


def _addresses(broker_list: str) -> list[tuple[str, int]]:
    out = []
    for part in broker_list.split(","):
        host, _, port = part.strip().rpartition(":")
        out.append((host.strip("[]") or "localhost", int(port) if port.isdigit() else 9092))
    return out


def tcp_check(broker_list: str, timeout_s: float) -> Optional[tuple[str, str]]:
    """None when some bootstrap address accepts a TCP connection; else (kind, address) of the first failure."""
    first: Optional[tuple[str, str]] = None
    for host, port in _addresses(broker_list):
        try:
            with socket.create_connection((host, port), timeout=max(0.1, timeout_s)):
                return None
        except socket.gaierror:
            kind = "resolve"
        except ConnectionRefusedError:
            kind = "refused"
        except (socket.timeout, TimeoutError):
            kind = "timeout"
        except OSError:
            kind = "refused"
        first = first or (kind, f"{host}:{port}")
    return first


def connect(settings, timeout_s: float = 10.0, need_topics: Iterable[str] = (), create: bool = False,
            partitions: int = 1, replication: int = 1):
    """Metadata of `settings`' cluster once it answers, within `timeout_s`; else `BrokerUnavailable`.

    A broker that refuses connections or closes them is tried again until the deadline (it may be
    starting); a TLS or authentication error ends the wait at once. With `need_topics`, the missing ones
    are created when `create` (`partitions` each), else reported: a tool must not wait on a topic that
    nobody will make."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    address = settings.broker_list()
    deadline = time.monotonic() + timeout_s
    watch = BrokerWatch(address)
    ms = str(max(1000, int(timeout_s * 1000)))   # a silent port must not hold a request past our deadline
    admin = AdminClient(client_config(settings, watch, quiet=True, **{"socket.timeout.ms": ms,
                                                          "socket.connection.setup.timeout.ms": ms}))
    reached = False   # some bootstrap address accepted a TCP connection
    meta = None
    failure: Optional[tuple[str, str]] = None
    while meta is None and time.monotonic() < deadline:
        left = deadline - time.monotonic()
        if not reached:
            failure = tcp_check(address, min(left, 3.0))
            if failure is not None:
                time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
                continue
            reached = True
        try:
            meta = admin.list_topics(timeout=max(0.1, min(1.0, left)))
        except KafkaException:
            admin.poll(0)   # serves the error callback
            fatal = watch.fatal()
            if fatal is not None:
                raise fatal from None
    if meta is None:
        admin.poll(0)
        if not reached and failure is not None:
            raise describe(failure[0], failure[1], timeout_s=timeout_s)
        seen = watch.worst()   # it accepted TCP connections: a time-out is a silent peer, not an unreachable one
        if seen is not None and seen[0] not in ("transport", "timeout"):
            raise describe(seen[0], address, seen[1], timeout_s)
        raise describe("silent", address, timeout_s=timeout_s)
    need = [t for t in need_topics if t not in meta.topics]
    if need:
        if not create:
            raise missing_topics(address, need)
        _create_topics(admin, address, need, partitions, replication, max(1.0, deadline - time.monotonic()))
        meta = admin.list_topics(timeout=max(1.0, deadline - time.monotonic()))
    return meta


def _create_topics(admin, address: str, topics: list[str], partitions: int, replication: int,
                   timeout_s: float) -> None:
    from confluent_kafka.admin import NewTopic

    futures = admin.create_topics([NewTopic(t, partitions, replication) for t in topics])
    for topic, fut in futures.items():
        try:
            fut.result(timeout_s)
        except Exception as exc:
            err = exc.args[0] if exc.args else exc
            name = getattr(err, "name", lambda: "")()
            text = getattr(err, "str", lambda: str(exc))()
            if name == "TOPIC_ALREADY_EXISTS" or "TOPIC_ALREADY_EXISTS" in str(exc):
                continue   # created concurrently by another worker
            if "AUTHORIZATION" in name or "authoriz" in text.lower() or "denied" in text.lower():
                raise missing_topics(address, [topic], text) from None
            raise BrokerUnavailable(f"could not create topic {topic} on the Kafka broker at {address}: {text}",
                                    "topic", False) from None
