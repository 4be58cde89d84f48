"""`voicetone` command line: one entry point for the service, the tools and training.

Heavy imports (torch, faust) happen inside the commands, so `voicetone --help`
and the light tools start fast. A failure the user can act on ends in one line on
stderr and an exit code (README, "Exit codes"): `EXIT_USAGE` for bad input (flags,
settings, files, checkpoints), `EXIT_UNAVAILABLE` for a broker that cannot be
used, `EXIT_INTERRUPTED` for Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from voicetone import __version__

EXIT_USAGE = 2          # bad flags, settings, files or checkpoints (argparse uses 2 too)
EXIT_UNAVAILABLE = 3    # the broker cannot be used: unreachable, TLS, authentication, a topic missing
EXIT_INTERRUPTED = 130  # Ctrl-C
#: seconds a tool waits for the broker before it gives up (--connect-timeout)
CONNECT_TIMEOUT_S = 10.0


def _settings(args, **extra):
    """Settings from VOICETONE_* env vars, overridden by the flags given."""
    from streams.settings import Settings

    overrides = {k: v for k, v in extra.items() if v is not None}
    for name in ("broker", "device", "precision", "model_path"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


def _add_broker(p, required: bool = False, connect_timeout: bool = False) -> None:
    p.add_argument("--broker", required=required, default=None,
                   help="Kafka bootstrap servers (host:port[,host:port]); default $VOICETONE_BROKER")
    if connect_timeout:
        add_connect_timeout(p)


def add_connect_timeout(p) -> None:
    p.add_argument("--connect-timeout", dest="connect_timeout", type=_positive, default=CONNECT_TIMEOUT_S,
                   metavar="S", help="give up (exit 3) when the broker does not answer within this many seconds "
                                     f"(default {CONNECT_TIMEOUT_S:g})")


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def tool_logging(settings) -> None:
    """Logging for a command-line tool: warnings and up (its own output is the point, and a broker problem
    is its one error line), unless VOICETONE_LOG_LEVEL asks for more."""
    from voicetone.logs import setup_logging

    setup_logging(settings.log_level if "log_level" in settings.model_fields_set else "WARNING",
                  json=settings.log_json)


def _add_model(p) -> None:
    """The model options shared by every command that runs the model (they override VOICETONE_*)."""
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--precision", choices=("fp32", "bf16", "int8"), default=None,
                   help="inference precision (int8: CPU only, faster); default $VOICETONE_PRECISION or fp32")
    p.add_argument("--model-path", dest="model_path", default=None)


def _add_chime(p, switch: bool = True) -> None:
    """The Chime notification options (they override VOICETONE_CHIME_*)."""
    if switch:
        p.add_argument("--chime", action="store_true",
                       help="print Amazon Chime SDK voice tone analysis notifications (EventBridge JSON lines)")
    p.add_argument("--chime-roles", dest="chime_roles", default=None, metavar="CH=ROLE,...",
                   help="participantRole per channel, e.g. 0=AGENT,1=CUSTOMER; default $VOICETONE_CHIME_ROLES "
                        "(agent=AGENT,customer=CUSTOMER)")
    p.add_argument("--chime-caller", dest="chime_caller", default=None, metavar="CHANNEL",
                   help="the channel that placed the call (isCaller true)")
    p.add_argument("--chime-interval", dest="chime_interval", type=float, default=None, metavar="S",
                   help="seconds of audio between a channel's notifications; default $VOICETONE_CHIME_INTERVAL_S (5)")


def _chime_config(args, settings):
    """The ChimeConfig the flags ask for (None without --chime)."""
    if not getattr(args, "chime", True):
        if any(getattr(args, n) is not None for n in ("chime_roles", "chime_caller", "chime_interval")):
            raise ValueError("--chime-roles, --chime-caller and --chime-interval go with --chime")
        return None
    from voicetone.chime import ChimeConfig

    return ChimeConfig.from_settings(settings, roles=args.chime_roles, caller=args.chime_caller,
                                     interval_s=args.chime_interval)


def _meta(pairs: Optional[Sequence[str]]) -> Optional[dict]:
    """``--meta KEY=VALUE`` flags as a frame meta map (the frame's rules checked)."""
    if not pairs:
        return None
    from schemas.errors import FrameError
    from schemas.frames import check_meta

    meta: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--meta {pair!r}: expected KEY=VALUE, e.g. transactionId=abc-123")
        if key in meta:
            raise ValueError(f"--meta {key} is given twice")
        meta[key] = value
    try:
        return check_meta(meta)
    except FrameError as e:
        raise ValueError(f"--meta: {e.detail}") from None


def _time_ms(text: Optional[str]) -> Optional[int]:
    """``--start-time``: ISO 8601 (a time without zone is UTC) or epoch milliseconds."""
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    from datetime import datetime, timezone

    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--start-time {text!r} is neither ISO 8601 (2026-01-05T09:30:00Z) "
                         "nor epoch milliseconds") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return round(t.timestamp() * 1000)


def cmd_worker(args) -> int:
    from voicetone.worker import run_worker

    return run_worker(_settings(args))


def cmd_broker(args) -> int:
    from voicetone.broker import run_broker

    return run_broker(args.port, args.host)


def cmd_replay(args) -> int:
    from voicetone.replay import replay

    settings = _settings(args)
    tool_logging(settings)
    return replay(settings, args.files, connect_timeout_s=args.connect_timeout, call_id=args.call_id, channel=args.channel, speed=args.speed,
                  frame_ms=args.frame_ms, encoding=args.encoding, sample_rate=args.sample_rate,
                  progress=not args.quiet, meta=_meta(args.meta))


def cmd_watch(args) -> int:
    from voicetone.watch import watch

    settings = _settings(args)
    tool_logging(settings)
    return watch(settings, connect_timeout_s=args.connect_timeout, call_id=args.call_id, as_json=args.json,
                 from_beginning=args.from_beginning, idle_exit_s=args.idle_exit, chime=_chime_config(args, settings))


def cmd_analyze(args) -> int:
    from voicetone.analyze import analyze

    settings = _settings(args)
    return analyze(settings, args.files, as_json=args.json, frame_ms=args.frame_ms,
                   chime=_chime_config(args, settings), start_ts_ms=_time_ms(args.start_time), meta=_meta(args.meta))


def cmd_chime(args) -> int:
    from voicetone.chime import run_bridge

    settings = _settings(args)
    tool_logging(settings)
    return run_bridge(settings, _chime_config(args, settings), sink=args.sink, topic=args.topic, group=args.group,
                      from_beginning=args.from_beginning, idle_exit_s=args.idle_exit, call_id=args.call_id,
                      connect_timeout_s=args.connect_timeout)


def cmd_demo(args) -> int:
    from voicetone.demo import run_demo

    return run_demo(_settings(args), out_dir=args.out, speed=args.speed, files=args.files)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voicetone", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"voicetone {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("demo", help="embedded broker + worker + sample calls, live events and a timeline picture")
    _add_broker(p)
    p.add_argument("--out", default="voicetone-demo", help="folder for the timeline pictures and events")
    p.add_argument("--speed", type=float, default=4.0, help="replay speed (1 = real time)")
    _add_model(p)
    p.add_argument("files", nargs="*", help="WAV files to play instead of the bundled sample calls")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("worker", help="the stream processor (Faust worker); SIGTERM stops it")
    _add_broker(p)
    _add_model(p)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("broker", help="the embedded Kafka-compatible broker (tansu), for development")
    p.add_argument("--port", type=int, default=9092)
    p.add_argument("--host", default="127.0.0.1")
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("replay", help="produce audio files (WAV, FLAC, OGG, MP3) as audio frames")
    p.add_argument("files", nargs="+")
    _add_broker(p, required=True, connect_timeout=True)
    p.add_argument("--call-id", default=None, help="call ID (default: the file name without extension)")
    p.add_argument("--channel", default=None, help="channel name(s); comma separated for stereo, e.g. agent,customer")
    p.add_argument("--speed", type=float, default=1.0, help="1 = real time, 0 = as fast as possible")
    p.add_argument("--frame-ms", type=int, default=100)
    p.add_argument("--encoding", choices=("pcm_s16le", "mulaw", "alaw", "f32le"), default="pcm_s16le")
    p.add_argument("--sample-rate", type=int, default=None, help="resample to this rate before sending")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--meta", action="append", metavar="KEY=VALUE",
                   help="call metadata on each channel's first frame (repeatable), e.g. transactionId=abc-123")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("watch", help="print segment and aggregate events as they arrive")
    _add_broker(p, required=True, connect_timeout=True)
    p.add_argument("--call-id", default=None)
    p.add_argument("--json", action="store_true", help="one raw event per line")
    p.add_argument("--from-beginning", action="store_true")
    p.add_argument("--idle-exit", type=float, default=None, help="exit after this many seconds without events")
    _add_chime(p)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("analyze", help="offline: windowing, model and aggregation on audio files (WAV, FLAC, OGG, "
                                       "MP3), no broker")
    p.add_argument("files", nargs="+")
    p.add_argument("--json", action="store_true", help="one event per line")
    p.add_argument("--frame-ms", type=int, default=100)
    p.add_argument("--start-time", dest="start_time", default=None, metavar="TIME",
                   help="wall-clock time of each file's first sample (ISO 8601 or epoch ms): the frames carry "
                        "ts_ms from it; default with --chime: now")
    p.add_argument("--meta", action="append", metavar="KEY=VALUE",
                   help="call metadata on each channel's first frame (repeatable), e.g. transactionId=abc-123")
    _add_chime(p)
    _add_model(p)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("chime", help="publish Amazon Chime SDK voice tone analysis notifications from the events")
    _add_broker(p, required=True, connect_timeout=True)
    p.add_argument("--sink", choices=("kafka", "stdout", "kinesis"), default="kafka",
                   help="kafka: the --topic (EventBridge JSON values); stdout: EventBridge JSON lines; "
                        "kinesis: PutRecords entries, one per line")
    p.add_argument("--topic", default=None, help="default $VOICETONE_CHIME_TOPIC (sentiment.chime)")
    p.add_argument("--group", default="voicetone-chime", help="consumer group (commits as it goes)")
    p.add_argument("--call-id", default=None)
    p.add_argument("--from-beginning", action="store_true",
                   help="where the group has committed nothing, start at the oldest event (else the newest)")
    p.add_argument("--idle-exit", type=float, default=None, help="exit after this many seconds without events")
    _add_chime(p, switch=False)
    p.set_defaults(func=cmd_chime)

    data = sub.add_parser("data", help="corpus building: synth, pseudo-label, align, features, real-eval")
    dsub = data.add_subparsers(dest="data_command", metavar="COMMAND")
    dsub.required = True
    from model.data.align import add_cli as add_align_cli
    from model.data.cli import add_cli as add_data_cli
    from model.data.feature_cache import add_cli as add_features_cli
    from model.data.real_eval import add_cli as add_real_eval_cli
    from model.data.synth import add_cli as add_synth_cli
    add_synth_cli(dsub)
    add_data_cli(dsub)
    add_align_cli(dsub)
    add_features_cli(dsub)
    add_real_eval_cli(dsub)

    train = sub.add_parser("train", help="training stages: pretrain, asr, classifier; recipe: the shipped chain")
    tsub = train.add_subparsers(dest="train_command", metavar="STAGE")
    tsub.required = True
    from model.train.cli import add_cli as add_train_cli
    add_train_cli(tsub)

    from model.evaluate import add_cli as add_evaluate_cli
    from schemas.json_schemas import add_cli as add_schemas_cli
    from voicetone.report import add_cli as add_report_cli
    add_evaluate_cli(sub)
    add_schemas_cli(sub)
    add_report_cli(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # a clear line, not a traceback, for what the user can act on
        code, line = failure(exc)
        if code is None:
            raise
        print(f"voicetone: error: {line}", file=sys.stderr)
        return code


def failure(exc: BaseException) -> tuple[Optional[int], str]:
    """(exit code, one line) for an error the user can act on; (None, "") for a bug."""
    from pydantic import ValidationError

    from model.checkpoint import CheckpointError
    from schemas.wav import WavError
    from streams.kafka_client import BrokerUnavailable
    from voicetone.broker import BrokerError
    from streams.settings import describe_error

    if isinstance(exc, BrokerUnavailable):
        return EXIT_UNAVAILABLE, str(exc)
    if isinstance(exc, ValidationError):
        return EXIT_USAGE, describe_error(exc)
    if isinstance(exc, (WavError, CheckpointError, BrokerError, ValueError)):
        return EXIT_USAGE, " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.filename is not None:   # a file missing, unreadable, a directory
        return EXIT_USAGE, f"{exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, FileNotFoundError):
        return EXIT_USAGE, str(exc)
    return None, ""


if __name__ == "__main__":
    raise SystemExit(main())
