"""`voicetone replay`: play audio files (WAV, FLAC, OGG, MP3) into `audio.frames` as live calls."""

from __future__ import annotations

import time
from typing import Optional, Sequence

from voicetone.framing import load_source, merge_sources
from streams.settings import Settings


def replay(settings: Settings, files: Sequence[str], call_id: Optional[str] = None, channel: Optional[str] = None,
           speed: float = 1.0, frame_ms: int = 100, encoding: str = "pcm_s16le",
           sample_rate: Optional[int] = None, progress: bool = True, meta: Optional[dict] = None,
           connect_timeout_s: float = 10.0) -> int:
    """Several files are several concurrent calls; `speed` 1 is real time, 0 flat out.
    Each frame's `ts_ms` is set when it is sent, so latency can be measured downstream;
    each channel's first frame carries `meta` (call ids) if given.
    Raises `BrokerUnavailable` when the broker does not answer within `connect_timeout_s`, or frames
    cannot be delivered."""
    from confluent_kafka import Producer
    from rich.progress import Progress

    from streams.kafka_client import BrokerUnavailable, BrokerWatch, client_config, connect, produce

    if call_id and len(files) > 1:
        raise ValueError("--call-id names one call: give one file, or let the file names be the call IDs")
    sources = [load_source(f, call_id, channel, sample_rate) for f in files]
    connect(settings, connect_timeout_s)
    watch = BrokerWatch(settings.broker_list())
    producer = Producer(client_config(settings, watch, **{"linger.ms": 5, "enable.idempotence": True}))
    errors: list[str] = []

    def on_delivery(err, msg) -> None:
        if err is not None:
            errors.append(str(err))

    total = max(s.duration_s for s in sources)
    start = time.monotonic()
    sent = 0
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"replaying {len(sources)} call(s)", total=total)
        for audio_t, key, value in merge_sources(sources, frame_ms, encoding, meta):
            if speed > 0:
                # a frame is sent once its audio has "happened": at the end of the frame
                due = start + (audio_t + frame_ms / 1000) / speed
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            value = _stamp(value)
            produce(producer, settings.input_topic, key, value, on_delivery)
            producer.poll(0)
            sent += 1
            bar.update(task, completed=min(audio_t, total))
    left = producer.flush(30)
    if left or errors:
        seen = watch.worst()
        why = seen[1] if seen is not None else "; ".join(dict.fromkeys(errors[:3]))
        raise BrokerUnavailable(f"{left + len(errors)} frame(s) not delivered to the Kafka broker at "
                                f"{settings.broker_list()} ({why})", "delivery", True)
    if progress:
        print(f"sent {sent} frames of {len(sources)} call(s) in {time.monotonic() - start:.1f} s")
    return 0


def _stamp(value: bytes) -> bytes:
    """Set `ts_ms` to the send time (wall clock) on an encoded frame."""
    import msgpack

    fields = msgpack.unpackb(value, raw=False)
    fields["ts_ms"] = int(time.time() * 1000)
    return msgpack.packb(fields, use_bin_type=True)
