"""Every tunable of the service in one place.

Each field can be set by a ``VOICETONE_<NAME>`` environment variable (for
example ``VOICETONE_BROKER=kafka://kafka:9092``) and most by a CLI flag; the
deploy manifests are checked against this model, so a setting that is not here
does not exist. Values are checked here, ranges and relations (a hop no longer than its window, a
heartbeat interval below the consumer group's liveness timeout), so a bad one stops the command with one line
(`describe_error`) instead of misbehaving later.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ProcessorConfig(BaseModel):
    """What the stream processor needs: window geometry, frame limits, the silence gate, caps. The service's
    `Settings` inherit these fields, so each default is written here once; the offline runner and the tests
    build this alone, without reading the environment."""

    input_topic: str = Field("audio.frames", description="Topic of the audio frames (named in dead letters)")
    silence_dbfs: float = Field(-55.0, le=0, description="A window whose loudest 20 ms is below this level skips "
                                "the model (speech 0, label no_speech); -inf: every window goes to the model")

    # --- windowing -----------------------------------------------------------
    window_ms: int = Field(5000, ge=500, le=60_000, description="Audio per segment")
    hop_ms: int = Field(2500, ge=100, description="Audio between the starts of two segments; at most window_ms")
    min_last_window_ms: int = Field(1000, ge=0, description="A shorter last window is dropped; at most window_ms")
    idle_timeout_s: float = Field(30.0, gt=0, description="A channel with no frames for this long is ended")
    max_reorder_ms: int = Field(2000, ge=0, description="Frames later than this behind the newest are dead-lettered")
    max_gap_ms: int = Field(10000, ge=0, description="A gap of missing frames longer than this is dead-lettered, not silence-filled")
    max_frame_bytes: int = Field(1_000_000, ge=1, description="Frames larger than this are dead-lettered")
    max_frame_ms: int = Field(5000, ge=1, description="Frames holding more audio than this are dead-lettered")
    dlq_max_value_bytes: int = Field(262144, ge=0, description="Dead letters keep at most this many bytes of the raw value")
    max_active_channels: int = Field(20000, ge=1, description="Cap on open (call, channel) states per worker")

    @model_validator(mode="after")
    def _window_relations(self) -> "ProcessorConfig":
        if self.hop_ms > self.window_ms:
            raise ValueError(f"hop_ms ({self.hop_ms}) must be at most window_ms ({self.window_ms})")
        if self.min_last_window_ms > self.window_ms:
            raise ValueError(f"min_last_window_ms ({self.min_last_window_ms}) must be at most window_ms "
                             f"({self.window_ms})")
        return self


def default(name: str):
    """The default of a `ProcessorConfig` field, for the pure cores' own constructor defaults."""
    return ProcessorConfig.model_fields[name].default



class Settings(BaseSettings, ProcessorConfig):
    """Every tunable of the service; the processor's own (`ProcessorConfig`) are inherited."""

    model_config = SettingsConfigDict(env_prefix="VOICETONE_", extra="ignore")

    # --- Kafka ---------------------------------------------------------------
    broker: str = Field("kafka://localhost:9092", description="Broker URL(s), comma separated; kafka:// or plain host:port")
    app_id: str = Field("voicetone", description="Faust app id: the consumer group and the prefix of its changelog topics")
    segments_topic: str = "sentiment.segments"
    aggregates_topic: str = "sentiment.aggregates"
    calls_topic: str = "sentiment.calls"
    dlq_topic: str = "audio.frames.dlq"
    topic_partitions: int = Field(8, ge=1, le=10_000,
                                  description="Partitions of the topics the worker creates if they are missing")
    replication_factor: int = Field(1, ge=1, le=100)

    # --- Kafka security ------------------------------------------------------
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: Optional[str] = None
    sasl_password: Optional[str] = None
    ssl_cafile: Optional[str] = None
    ssl_certfile: Optional[str] = None
    ssl_keyfile: Optional[str] = None

    # --- consumer group timing (short values make tests join fast) -----------
    rebalance_timeout_s: float = Field(60.0, gt=0)
    session_timeout_s: float = Field(60.0, gt=0)
    heartbeat_interval_s: float = Field(3.0, gt=0, description="Shorter than session_timeout_s")
    commit_interval_s: float = Field(2.0, gt=0)
    fetch_max_wait_ms: int = Field(50, ge=1, description="Longest the broker may hold a fetch with no data; bounds latency")
    ingest_batch_ms: float = Field(10.0, gt=0, description="Longest consumed frames wait to be ingested together "
                                   "(a backlog is read ~2x faster in batches; adds at most this to latency)")

    # --- model ---------------------------------------------------------------
    model_path: Optional[str] = Field(None, description="Checkpoint file; the bundled default model when unset")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "int8"] = "fp32"  # int8: CPU only, ~1.4x windows/s (bench_model.py)
    jit: bool = Field(True, description="Run the model as a traced network (one GIL release per call: the "
                      "event loop cannot stall it; bench/gil_convoy.py); false keeps it eager")
    max_batch_size: int = Field(64, ge=1, description="Most windows in one model call")
    max_batch_wait_ms: float = Field(50.0, ge=0, description="Longest a ready window waits for others to fill a batch")
    inference_workers: int = Field(2, ge=1, description="Model calls run at once, each in its own thread; results "
                                   "are applied in the order the batches were cut, so each channel's segments stay in "
                                   "order. On 2 CPU cores two calls with one torch thread each run ~1.5x the windows/s "
                                   "of one call with two threads (bench/bench_drain.py)")
    inference_nice: int = Field(10, ge=0, le=19, description="Niceness of the threads that run the model (Linux): "
                                "the event loop, which receives frames and publishes events, then takes a core "
                                "before a model call does, so a long call does not hold back the latency of every "
                                "other window; 0 treats them alike")
    inference_threads: int = Field(0, ge=0, description="torch intra-op threads per process; 0: torch's default "
                                   "divided among the inference workers (at least 1)")
    event_loop: Literal["asyncio", "uvloop"] = Field("uvloop", description="The worker's event loop: uvloop runs "
                                                     "asyncio's scheduling in C (the worker drains a backlog ~16% "
                                                     "faster: bench/bench_drain.py); asyncio: the standard library's")
    switch_interval_ms: float = Field(5.0, gt=0, le=100, description="Python's GIL switch interval in the worker "
                                      "(sys.setswitchinterval; 5 is Python's default): how long the model thread may "
                                      "wait for the GIL beside the busy event loop. 0.5 helps an eager model beside a "
                                      "fully busy thread 8x (bench/gil_convoy.py) but made no difference end to end "
                                      "on 2 cores (docs/benchmarks.md)")
    gc_freeze: bool = Field(True, description="Once started, move every object alive (the model, torch, Faust: "
                            "~280,000) out of the cyclic garbage collector's sight (gc.freeze), so that its full "
                            "collections, which stop the event loop, walk only what the calls create since")
    gc_threshold: int = Field(10_000, ge=1, description="Allocations between the garbage collector's youngest "
                              "collections (Python's default: 700); the worker allocates a few per frame, and "
                              "each collection is a pause of the event loop")
    # --- Amazon Chime SDK-shaped notifications (voicetone chime, watch/analyze --chime) ---
    chime_topic: str = Field("sentiment.chime", description="Topic the Chime bridge publishes notifications to")
    chime_interval_s: float = Field(5.0, gt=0, description="Audio between two VoiceToneAnalysisSuccessful "
                                    "notifications of a channel (Chime: 5 s)")
    chime_roles: str = Field("agent=AGENT,customer=CUSTOMER", description="participantRole per channel, "
                             "CHANNEL=AGENT|CUSTOMER comma separated (e.g. 0=AGENT,1=CUSTOMER for WAV files); a "
                             "channel not named, and without participantRole in its frame meta, gets none")
    chime_caller: Optional[str] = Field(None, description="The channel that placed the call (isCaller true); "
                                        "unset: isCaller only where frame meta gives it")
    chime_source: str = Field("aws.chime", description="Notification source (aws.chime matches rules written "
                              "for Chime; EventBridge PutEvents refuses aws.* from outside AWS)")
    chime_account: str = Field("", description="Notification account field")
    chime_region: str = Field("", description="Notification region field")
    chime_voice_connector_id: Optional[str] = Field(None, description="voiceConnectorId for channels whose "
                                                    "frame meta has none")
    chime_media_insights_pipeline_id: Optional[str] = Field(None, description="mediaInsightsPipelineId for "
                                                            "channels whose frame meta has none")
    chime_scores: Literal["number", "string"] = Field("number", description="voiceToneScore values as JSON "
                                                       "numbers, or as strings as the guide's example prints them")

    # --- operations ----------------------------------------------------------
    metrics_host: str = Field("127.0.0.1", description="Bind address of /metrics, /healthz, /readyz")
    metrics_port: int = Field(0, ge=0, le=65535, description="0 disables the HTTP endpoint")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL")
    log_json: bool = False

    @field_validator("broker")
    @classmethod
    def _broker_addresses(cls, value: str) -> str:
        parts = [p.strip() for p in value.split(",")]
        for part in parts:
            hostport = part.split("://", 1)[-1]
            host, colon, port = hostport.rpartition(":")
            if not hostport or (colon and (not host or not port.isdigit() or not 0 < int(port) < 65536)):
                raise ValueError(f"{part!r} is not host:port (port 1-65535)")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return value.upper()

    @model_validator(mode="after")
    def _heartbeat_relation(self) -> "Settings":
        if self.heartbeat_interval_s >= self.session_timeout_s:
            raise ValueError(f"heartbeat_interval_s ({self.heartbeat_interval_s:g}) must be shorter than "
                             f"session_timeout_s ({self.session_timeout_s:g})")
        return self

    def broker_list(self) -> str:
        """Broker URL as confluent-kafka's bootstrap.servers wants it."""
        return ",".join(part.split("://", 1)[-1] for part in self.broker.split(","))

    def kafka_url(self) -> str:
        """Broker URL as Faust wants it."""
        return ";".join(
            p if "://" in p else f"kafka://{p}" for p in (s.strip() for s in self.broker.split(","))
        )

    def confluent_config(self) -> dict:
        """Client settings for confluent-kafka (replay, watch, tools)."""
        conf: dict = {"bootstrap.servers": self.broker_list(), "security.protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL"):
            conf.update({
                "sasl.mechanism": self.sasl_mechanism,
                "sasl.username": self.sasl_username or "",
                "sasl.password": self.sasl_password or "",
            })
        if self.security_protocol.endswith("SSL"):
            if self.ssl_cafile:
                conf["ssl.ca.location"] = self.ssl_cafile
            if self.ssl_certfile:
                conf["ssl.certificate.location"] = self.ssl_certfile
            if self.ssl_keyfile:
                conf["ssl.key.location"] = self.ssl_keyfile
        return conf


def describe_error(exc: ValidationError) -> str:
    """One line for invalid settings: each bad value with its environment variable and what it must be."""
    parts = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        msg = msg[:1].lower() + msg[1:]
        if err["loc"]:
            name = str(err["loc"][0])
            parts.append(f"{name}={err.get('input')!r} (VOICETONE_{name.upper()}): {msg}")
        else:
            parts.append(msg)
    return "invalid setting: " + "; ".join(parts)
