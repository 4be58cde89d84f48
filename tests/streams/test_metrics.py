"""The worker's HTTP endpoint, exercised over a real socket on an ephemeral port."""

import json
import urllib.error
import urllib.request

import pytest

from streams.metrics import METRIC_NAMES, GcTimer, HealthState, Metrics, start_http_server


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture
def served():
    metrics = Metrics()
    clock = FakeClock()
    health = HealthState(stall_after_s=10, metrics=metrics, clock=clock)
    server = start_http_server("127.0.0.1", 0, metrics, health)
    try:
        yield f"http://127.0.0.1:{server.port}", metrics, health, clock
    finally:
        server.close()


def test_binds_ephemeral_port_on_requested_host(served):
    base, *_ = served
    assert not base.endswith(":0")


def test_metrics_exposes_all_names_and_values(served):
    base, metrics, _, _ = served
    metrics.frames.inc(3)
    metrics.dead_letters.labels(reason="bad_msgpack").inc()
    metrics.batch_size.observe(5)
    metrics.set_consumer_lag({0: 7, 3: 2})
    code, body = _get(base + "/metrics")
    text = body.decode()
    assert code == 200
    for name in METRIC_NAMES:
        assert f"# TYPE {name.removesuffix('_total')}" in text, name
    assert "voicetone_frames_total 3.0" in text
    assert 'voicetone_dead_letters_total{reason="bad_msgpack"} 1.0' in text
    assert 'voicetone_consumer_lag{partition="0"} 7.0' in text
    assert 'voicetone_batch_size_bucket{le="8.0"} 1.0' in text


def test_consumer_lag_drops_revoked_partitions():
    metrics = Metrics()
    metrics.set_consumer_lag({0: 7, 3: 2})
    metrics.set_consumer_lag({3: 1})
    text = metrics.render().decode()
    assert 'partition="0"' not in text
    assert 'voicetone_consumer_lag{partition="3"} 1.0' in text


def test_readyz_needs_model_and_assignment(served):
    base, metrics, health, _ = served
    code, body = _get(base + "/readyz")
    assert code == 503 and json.loads(body)["reason"] == "model not loaded"
    health.set_model_loaded()
    assert _get(base + "/readyz")[0] == 503
    health.set_assignment([])  # a standby worker with no partitions is still ready
    code, body = _get(base + "/readyz")
    assert code == 200 and json.loads(body)["status"] == "ok"
    assert metrics.ready._value.get() == 1
    health.set_revoked()
    assert _get(base + "/readyz")[0] == 503
    health.set_assignment([1, 2])
    health.set_not_ready("shutting down")
    code, body = _get(base + "/readyz")
    assert code == 503 and json.loads(body)["reason"] == "shutting down"
    assert metrics.ready._value.get() == 0


def test_healthz_fails_when_loop_stalls(served):
    base, _, health, clock = served
    assert _get(base + "/healthz")[0] == 200
    clock.t += 11
    code, body = _get(base + "/healthz")
    assert code == 503 and "no progress" in json.loads(body)["reason"]
    health.mark_progress()
    assert _get(base + "/healthz")[0] == 200


def test_unknown_path_is_404(served):
    assert _get(served[0] + "/nope")[0] == 404


def test_publish_latency_from_audio_end():
    metrics = Metrics()
    assert metrics.observe_publish_latency(10_000, published_at_s=11.5) == pytest.approx(1.5)
    assert metrics.observe_publish_latency(20_000, published_at_s=19.0) == 0.0  # skew clamps
    text = metrics.render().decode()
    assert "voicetone_end_to_end_latency_seconds_count 2.0" in text


def test_gc_seconds_count_the_collector_running():
    import gc

    def gen2_seconds(text: str) -> float:
        line = next(ln for ln in text.splitlines() if ln.startswith('voicetone_gc_seconds_total{generation="2"}'))
        return float(line.split()[-1])

    metrics = Metrics()
    before = gen2_seconds(metrics.render().decode())
    junk = [[i] for i in range(200_000)]   # something for a full collection to walk
    gc.collect()
    del junk
    after = gen2_seconds(metrics.render().decode())
    assert after > before
    assert Metrics().render().decode().count('voicetone_gc_seconds_total{generation="2"}') == 1   # one per registry
    assert gc.callbacks.count(GcTimer.install()._on_gc) == 1


def test_the_e2e_benchmark_reads_what_the_worker_exports(served):
    """bench/bench_e2e.py computes the model's and the collector's shares of the worker from these names."""
    from bench import bench_e2e

    base, metrics, _, _ = served
    metrics.inference_cpu_seconds.inc(2.5)
    metrics.batch_size.observe(8)
    gc_before = sum(GcTimer.install().seconds)
    got = bench_e2e.scrape(int(base.rsplit(":", 1)[1]))
    gc_after = sum(GcTimer.install().seconds)   # a collection may run meanwhile
    assert got[bench_e2e.MODEL_CPU] == 2.5
    assert got["voicetone_batch_size_count"] == 1
    assert gc_before - 1e-9 <= got[bench_e2e.GC_SECONDS] <= gc_after + 1e-9   # the three generations summed
