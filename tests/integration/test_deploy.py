"""Static checks of deploy/: there is no Docker engine or cluster here, so the manifests are parsed
and cross-checked against the code they configure (settings, CLI, metrics, probe paths, topics)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import yaml

from streams.metrics import HEALTHZ_PATH, METRIC_NAMES, METRICS_PATH, READYZ_PATH  # noqa: E402
from tests.harness import ROOT  # noqa: E402
from streams.settings import Settings  # noqa: E402

DEPLOY = ROOT / "deploy"
DOCKERFILES = [DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.cuda"]
ENV_RE = re.compile(r"\bVOICETONE_[A-Z][A-Z0-9_]*")
DEFAULTS = Settings()
TOPIC_FIELDS = ("input_topic", "segments_topic", "aggregates_topic", "calls_topic", "dlq_topic")


def _yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def _docs(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _k8s(kind: str) -> list[dict]:
    """Objects of the base k8s/ manifests (overlays excluded: they hold partial patches)."""
    return [d for p in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in _docs(p) if d.get("kind") == kind]


def _compose() -> dict:
    return _docs(DEPLOY / "compose.yaml")[0]


def _dockerfile_instr(path: Path, name: str) -> list[str]:
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith(name + " ")]
    assert len(lines) == 1, f"{path.name}: expected one {name}"
    return json.loads(lines[0][len(name) + 1:])


def _torch_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if re.match(r"torch\s*==", d)]
    return pin.split("==")[1].strip()


def test_every_yaml_parses():
    files = _yaml_files()
    assert {p.relative_to(DEPLOY).as_posix() for p in files} >= {
        "compose.yaml", "prometheus.yml", "k8s/deployment.yaml", "k8s/keda-scaledobject.yaml"}
    for path in files:
        assert _docs(path), f"{path} is empty"


def test_every_voicetone_env_var_is_a_settings_field():
    fields = set(Settings.model_fields)
    sources = [p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix != ".json"]
    seen = set()
    for path in sources:
        for name in ENV_RE.findall(path.read_text()):
            seen.add(name)
            assert name.removeprefix("VOICETONE_").lower() in fields, f"{path.relative_to(ROOT)}: {name}"
    assert {"VOICETONE_METRICS_HOST", "VOICETONE_METRICS_PORT", "VOICETONE_BROKER"} <= seen


def test_containers_bind_metrics_on_all_interfaces():
    assert DEFAULTS.metrics_host == "127.0.0.1"  # the default stays local; containers override it
    worker_env = _compose()["services"]["worker"]["environment"]
    (cm,) = _k8s("ConfigMap")
    for env in (worker_env, cm["data"]):
        assert env["VOICETONE_METRICS_HOST"] == "0.0.0.0"
        assert int(env["VOICETONE_METRICS_PORT"]) == 9100
    for path in DOCKERFILES:
        assert "VOICETONE_METRICS_HOST=0.0.0.0" in path.read_text()


def test_entrypoint_is_the_console_script_and_worker_a_subcommand():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for path in DOCKERFILES:
        assert _dockerfile_instr(path, "ENTRYPOINT") == ["voicetone"]
        assert _dockerfile_instr(path, "CMD") == ["worker"]
    assert "voicetone" in scripts
    assert _compose()["services"]["worker"]["command"] == ["worker"]
    (dep,) = _k8s("Deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["args"] == ["worker"]
    cli = ROOT / "voicetone" / "cli.py"
    module, _, func = scripts["voicetone"].partition(":")
    assert module == "voicetone.cli" and re.search(rf"^def {func}\(", cli.read_text(), re.M)
    assert re.search(r"""add_parser\(\s*["']worker["']""", cli.read_text()), "no `worker` sub-command in cli.py"


def test_images_pin_the_project_torch_and_ship_the_default_model():
    pin = _torch_pin()
    cpu = (DEPLOY / "Dockerfile").read_text()
    assert cpu.startswith("#") and "FROM python:3.11-slim" in cpu
    assert f"torch=={pin}" in cpu and "download.pytorch.org/whl/cpu" in cpu
    cuda_from = re.findall(r"^FROM (\S+)", (DEPLOY / "Dockerfile.cuda").read_text(), re.M)
    assert cuda_from and all(re.fullmatch(rf"pytorch/pytorch:{re.escape(pin)}-cuda[\d.]+-cudnn\d+-runtime", f)
                             for f in cuda_from)
    for path in DOCKERFILES:
        assert "model/weights/default.pt" in path.read_text()


def test_images_run_the_worker_on_jemalloc():
    from streams.heap import JEMALLOC

    for path in DOCKERFILES:
        text = path.read_text()
        preload = re.findall(r"^ENV LD_PRELOAD=(\S+)$", text, re.M)
        assert preload == [JEMALLOC], f"{path.name}: the worker must run on jemalloc (streams/heap.py)"
        install = text.index("libjemalloc2")
        assert install < text.index("ENV LD_PRELOAD") < text.index("pip install /wheels"), path.name


def _created_topics() -> dict[str, int]:
    script = "\n".join(_compose()["services"]["topics"]["command"])
    assert "kafka-topics.sh" in script
    return {t: int(n) for t, n in re.findall(r"^\s*create\s+(\S+)\s+(\d+)\s*$", script, re.M)}


def test_compose_creates_the_contract_topics():
    topics = _created_topics()
    assert set(topics) == {getattr(DEFAULTS, f) for f in TOPIC_FIELDS}
    assert topics[DEFAULTS.input_topic] == 12


def test_partition_counts_agree_and_bound_the_workers():
    partitions = _created_topics()[DEFAULTS.input_topic]
    compose = _compose()
    worker = compose["services"]["worker"]
    assert int(worker["environment"]["VOICETONE_TOPIC_PARTITIONS"]) == partitions
    replicas = re.fullmatch(r"\$\{WORKERS:-(\d+)\}", str(worker["deploy"]["replicas"]))
    assert replicas and int(replicas.group(1)) <= partitions
    (cm,) = _k8s("ConfigMap")
    (so,) = _k8s("ScaledObject")
    assert so["spec"]["maxReplicaCount"] <= int(cm["data"]["VOICETONE_TOPIC_PARTITIONS"])
    assert so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"]


def test_keda_scales_on_the_worker_group_and_input_topic():
    (cm,) = _k8s("ConfigMap")
    (so,) = _k8s("ScaledObject")
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == cm["data"].get("VOICETONE_APP_ID", DEFAULTS.app_id) == DEFAULTS.app_id
    assert meta["topic"] == cm["data"].get("VOICETONE_INPUT_TOPIC", DEFAULTS.input_topic) == DEFAULTS.input_topic
    assert meta["bootstrapServers"] == cm["data"]["VOICETONE_BROKER"]
    (dep,) = _k8s("Deployment")
    assert so["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    (auth,) = _k8s("TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    (secret,) = _k8s("Secret")
    assert {r["key"] for r in auth["spec"]["secretTargetRef"]} <= set(secret["stringData"])


def test_probes_and_scrapes_use_the_paths_the_server_serves():
    (dep,) = _k8s("Deployment")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"]["path"] == HEALTHZ_PATH
    assert container["startupProbe"]["httpGet"]["path"] == HEALTHZ_PATH
    assert container["readinessProbe"]["httpGet"]["path"] == READYZ_PATH
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert port_names[container[probe]["httpGet"]["port"]] == 9100
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    (svc,) = _k8s("Service")
    assert svc["metadata"]["annotations"]["prometheus.io/path"] == METRICS_PATH
    (job,) = _docs(DEPLOY / "prometheus.yml")[0]["scrape_configs"]
    assert job["metrics_path"] == METRICS_PATH
    assert job["dns_sd_configs"][0]["names"] == ["worker"] and job["dns_sd_configs"][0]["port"] == 9100
    health = " ".join(_compose()["services"]["worker"]["healthcheck"]["test"])
    assert f":9100{READYZ_PATH}" in health or f":9100{HEALTHZ_PATH}" in health
    for path in DOCKERFILES:
        assert f":9100{HEALTHZ_PATH}" in path.read_text()


def test_gpu_overlay_requests_a_gpu_on_gpu_nodes():
    overlay = _docs(DEPLOY / "k8s" / "gpu" / "kustomization.yaml")[0]
    (patch_ref,) = overlay["patches"]
    patch = _docs(DEPLOY / "k8s" / "gpu" / patch_ref["path"])[0]
    spec = patch["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"]
    assert {"name": "VOICETONE_DEVICE", "value": "cuda"} in container["env"]
    (dep,) = _k8s("Deployment")
    assert container["name"] == dep["spec"]["template"]["spec"]["containers"][0]["name"]
    base = _docs(DEPLOY / "k8s" / "kustomization.yaml")[0]["resources"]
    assert all((DEPLOY / "k8s" / r).exists() for r in base)


def _exported(name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum", "_created"):
        if name.endswith(suffix) and name.removesuffix(suffix) in METRIC_NAMES:
            return name.removesuffix(suffix)
    return name


def test_dashboard_only_uses_defined_metrics():
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "voicetone.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert exprs
    used = set()
    for expr in exprs:
        names = re.findall(r"\bvoicetone_[a-z0-9_]+", expr)
        assert names, f"panel query without a voicetone metric: {expr}"
        for name in names:
            assert _exported(name) in METRIC_NAMES, f"undefined metric {name} in {expr}"
            used.add(_exported(name))
    assert used == set(METRIC_NAMES), f"metrics not on the dashboard: {set(METRIC_NAMES) - used}"
    ds = _docs(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")[0]["datasources"][0]
    assert all(p["datasource"]["uid"] == ds["uid"] for p in dash["panels"])


def test_gpu_time_slicing_config_shares_each_gpu_between_workers():
    import yaml

    (cm,) = _docs(DEPLOY / "k8s" / "gpu" / "time-slicing-config.yaml")
    assert cm["kind"] == "ConfigMap"
    sharing = yaml.safe_load(cm["data"]["any"])["sharing"]["timeSlicing"]
    (res,) = sharing["resources"]
    assert res["name"] == "nvidia.com/gpu" and res["replicas"] > 1
    assert sharing["failRequestsGreaterThanOne"] is True   # a worker must not take several slices of one GPU
