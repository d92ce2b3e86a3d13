"""The files in deploy/: they parse, and they agree with the code they run.

No container engine runs here, so these tests read the Dockerfile, the compose file, the
Kubernetes manifests and the systemd units. They parse the ``omhooks`` commands with the real
argument parser and compare ports, paths, settings and metric names with the code. The last
tests run the systemd units' own commands on loopback, against a Redis of their own.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram
from redis import Redis

from omhooks.cli import _parser
from omhooks.lifecycle import apply_snapshot, load_lifecycle
from omhooks.redis_server import LocalRedis, free_port
from omhooks.settings import Settings
from omhooks.stack import wait_until_ok
from ordermesh.signing import signed_headers
from receiver.app import create_app
from workers import metrics as worker_metrics
from workers import reconcile_metrics
from workers.journal import Journal, pending_messages

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"
RECEIVER_UNIT = SYSTEMD / "ordermesh-hooks-receiver.service"
WORKER_UNIT = SYSTEMD / "ordermesh-hooks-worker.service"
FIXTURE_SECRET = "whsec_b3JkZXJtZXNoLWZpeHR1cmUtc2VjcmV0LTAwMDE="

# The metric names the alert rules and the dashboard may use, and their types. The
# reconciliation names are those of workers/reconcile_metrics.py.
METRICS = {
    "omhooks_receiver_responses_total": "counter",
    "omhooks_receiver_verification_failures_total": "counter",
    "omhooks_receiver_enqueue_seconds": "histogram",
    "omhooks_handler_runs_total": "counter",
    "omhooks_handler_retries_total": "counter",
    "omhooks_handler_duration_seconds": "histogram",
    "omhooks_dead_letters_total": "counter",
    "omhooks_dead_letters": "gauge",
    "omhooks_queue_depth": "gauge",
    "omhooks_queue_oldest_message_age_seconds": "gauge",
    "omhooks_reconcile_runs_total": "counter",
    "omhooks_reconcile_missed_orders_total": "counter",
    "omhooks_reconcile_events_fed_total": "counter",
    "omhooks_reconcile_last_success_timestamp_seconds": "gauge",
}
RECONCILE_METRICS = sorted(name for name in METRICS if name.startswith("omhooks_reconcile_"))
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

SETTING_VARIABLES = {f"OMHOOKS_{name.upper()}" for name in Settings.model_fields} | {"REDIS_URL"}
SECRET_VARIABLES = {
    f"OMHOOKS_{name.upper()}"
    for name, field in Settings.model_fields.items()
    if "SecretStr" in str(field.annotation)
}

RECEIVER_RSS_LIMIT_BYTES = 100 * 1000 * 1000
WORKER_PROCESS_RSS_LIMIT_BYTES = 150 * 1000 * 1000
START_TIMEOUT_SECONDS = 30.0
PROCESSING_TIMEOUT_SECONDS = 60.0


# Readers of the deployment files.


def load_yaml(path: Path) -> list[Any]:
    """Return every document of a YAML file."""
    with path.open(encoding="utf-8") as stream:
        return [document for document in yaml.safe_load_all(stream) if document is not None]


def read_env_file(path: Path) -> dict[str, str]:
    """Return the KEY=VALUE lines of an environment file (systemd, Docker and kustomize)."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, separator, value = stripped.partition("=")
        assert separator, f"{path.name}: not a KEY=VALUE line: {line!r}"
        values[name.strip()] = value.strip()
    return values


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Return a systemd unit as section -> key -> values, in file order."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            current = sections.setdefault(stripped[1:-1], {})
            continue
        key, _, value = stripped.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_value(path: Path, section: str, key: str) -> str:
    """Return the last value of a key in a unit, as systemd applies it."""
    return read_unit(path)[section][key][-1]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """Return the Dockerfile's instructions as (INSTRUCTION, arguments), continuations joined."""
    instructions = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        instruction, _, arguments = whole.partition(" ")
        instructions.append((instruction.upper(), arguments.strip()))
    return instructions


def final_stage() -> list[tuple[str, str]]:
    """Return the instructions of the Dockerfile's last stage, its FROM first."""
    instructions = dockerfile_instructions()
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def dockerfile_command() -> list[str]:
    """Return the final stage's CMD, which must be in JSON (exec) form."""
    commands = [arguments for name, arguments in final_stage() if name == "CMD"]
    return list(json.loads(commands[-1]))


def compose() -> dict[str, Any]:
    document: dict[str, Any] = load_yaml(DEPLOY / "compose.yaml")[0]
    return document


def compose_service(name: str) -> dict[str, Any]:
    service: dict[str, Any] = compose()["services"][name]
    return service


def kubernetes_objects() -> list[dict[str, Any]]:
    """Return every object of the files kustomization.yaml lists as resources."""
    kustomization = load_yaml(KUBERNETES / "kustomization.yaml")[0]
    objects = []
    for resource in kustomization["resources"]:
        objects.extend(load_yaml(KUBERNETES / resource))
    return objects


def kubernetes_object(kind: str, name: str) -> dict[str, Any]:
    found = [
        item
        for item in kubernetes_objects()
        if item["kind"] == kind and item["metadata"]["name"] == name
    ]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def pod_spec(kind: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = kubernetes_object(kind, name)["spec"]["template"]["spec"]
    return spec


def only_container(kind: str, name: str) -> dict[str, Any]:
    containers = pod_spec(kind, name)["containers"]
    assert len(containers) == 1, f"{kind} {name} has {len(containers)} containers"
    container: dict[str, Any] = containers[0]
    return container


def container_port(container: dict[str, Any], port: int | str) -> int:
    """Return the number of a container port given by number or by name."""
    if isinstance(port, int):
        return port
    numbers = [entry["containerPort"] for entry in container["ports"] if entry["name"] == port]
    assert numbers, f"container {container['name']} has no port named {port!r}"
    return int(numbers[0])


def pod_labels(kind: str, name: str) -> dict[str, str]:
    labels: dict[str, str] = kubernetes_object(kind, name)["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Return whether a Kubernetes label selector (matchLabels, matchExpressions In) matches."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", f"unsupported operator in {expression}"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def parse_seconds(text: str | int) -> float:
    """Return the seconds of a duration such as 150, "150s", "2min" or "2m"."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|m|min)?", str(text).strip())
    assert match, f"not a duration in seconds or minutes: {text!r}"
    number = float(match.group(1))
    return number * 60 if match.group(2) in ("m", "min") else number


def parse_memory(quantity: str) -> int:
    """Return the bytes of a Kubernetes memory quantity such as "256Mi" or "1Gi"."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    match = re.fullmatch(r"(\d+)([KMG]i?)?", quantity)
    assert match, f"not a memory quantity: {quantity!r}"
    return int(match.group(1)) * units.get(match.group(2) or "", 1)


def healthcheck_url(text: str) -> tuple[int, str]:
    """Return the port and path of the loopback URL a health check requests."""
    match = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w/.-]*)", text)
    assert match, f"no http://127.0.0.1 URL in {text!r}"
    return int(match.group(1)), match.group(2)


def serve_arguments(argv: list[str]) -> Any:
    """Parse an ``omhooks serve`` command line with the real parser."""
    assert argv[1] == "serve", f"not an omhooks serve command: {argv}"
    return _parser().parse_args(argv[1:])


def receiver_paths() -> set[str]:
    """Return the paths the receiver's application routes."""
    app = create_app(Settings(webhook_secrets=[FIXTURE_SECRET]))
    return {getattr(route, "path", "") for route in app.routes}


def setting_default(name: str) -> Any:
    return Settings.model_fields[name].get_default(call_default_factory=True)


def effective_setting(environment: dict[str, str], name: str) -> float:
    """Return a numeric setting as an environment sets it, else its default."""
    variable = f"OMHOOKS_{name.upper()}"
    return float(environment.get(variable, setting_default(name)))


def omhooks_commands() -> dict[str, list[str]]:
    """Return every ``omhooks`` command line the deployment files run, by where it is."""
    commands = {"Dockerfile CMD": dockerfile_command()}
    for name, service in compose()["services"].items():
        command = service.get("command") or []
        if isinstance(command, str):
            command = shlex.split(command)
        if command and command[0] == "omhooks":
            commands[f"compose {name}"] = command
    for item in kubernetes_objects():
        if item["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for container in item["spec"]["template"]["spec"]["containers"]:
            command = container.get("command") or container.get("args") or []
            if command and command[0] == "omhooks":
                commands[f"{item['kind']} {item['metadata']['name']}"] = command
    for unit in (RECEIVER_UNIT, WORKER_UNIT):
        commands[unit.name] = shlex.split(unit_value(unit, "Service", "ExecStart"))
    return commands


OMHOOKS_COMMANDS = omhooks_commands()


# Every file parses.


@pytest.mark.parametrize(
    "path",
    sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")]),
    ids=lambda path: str(path.relative_to(DEPLOY)),
)
def test_yaml_file_parses(path: Path) -> None:
    assert load_yaml(path), f"{path} holds no document"


@pytest.mark.parametrize(
    "path", sorted(DEPLOY.rglob("*.json")), ids=lambda path: str(path.relative_to(DEPLOY))
)
def test_json_file_parses(path: Path) -> None:
    assert json.loads(path.read_text(encoding="utf-8"))


# The commands exist.


@pytest.mark.parametrize("where", sorted(OMHOOKS_COMMANDS))
def test_command_is_accepted_by_parser(where: str) -> None:
    argv = OMHOOKS_COMMANDS[where]

    try:
        arguments = _parser().parse_args(argv[1:])
    except SystemExit as exc:
        pytest.fail(f"{where}: omhooks rejects {argv[1:]} (exit status {exc.code})")

    assert Path(argv[0]).name == "omhooks"
    assert callable(arguments.command)


def test_commands_run_receiver_and_worker() -> None:
    subcommands = {argv[1] for argv in OMHOOKS_COMMANDS.values()}

    assert subcommands == {"serve", "worker"}


# The Dockerfile.


def test_dockerfile_copies_every_package() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*").split(".")[0] for pattern in patterns}
    copied = set()
    for name, arguments in dockerfile_instructions():
        words = arguments.split()
        if name == "COPY" and not any(word.startswith("--from") for word in words):
            copied.update(word.rstrip("/") for word in words[:-1] if not word.startswith("--"))

    assert packages <= copied, f"not copied: {sorted(packages - copied)}"
    assert pyproject["project"]["readme"] in copied
    assert "pyproject.toml" in copied


def test_dockerignore_keeps_copied_sources() -> None:
    patterns = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    needed = ["pyproject.toml", pyproject["project"]["readme"]]
    for package, globs in pyproject["tool"]["setuptools"]["package-data"].items():
        for pattern in globs:
            needed.extend(str(path.relative_to(ROOT)) for path in (ROOT / package).glob(pattern))
    for package in ("omhooks", "ordermesh", "receiver", "workers", "handlers"):
        needed.append(f"{package}/__init__.py")

    ignored = [path for path in needed if dockerignore_excludes(patterns, path)]

    assert ignored == []


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Apply .dockerignore rules: the last pattern matching the path or a parent folder wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern.removeprefix("!")
        anywhere = body.startswith("**/")
        body = body.removeprefix("**/")
        for candidate in candidates:
            target = Path(candidate).name if anywhere else candidate
            if fnmatch.fnmatchcase(target, body):
                excluded = not negated
                break
    return excluded


def test_dockerfile_builds_in_stages() -> None:
    stages = [arguments for name, arguments in dockerfile_instructions() if name == "FROM"]

    assert len(stages) >= 2


def test_dockerfile_runs_as_non_root() -> None:
    users = [arguments for name, arguments in final_stage() if name == "USER"]

    assert users, "the final stage sets no USER"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_dockerfile_ports_agree() -> None:
    arguments = serve_arguments(dockerfile_command())
    exposed = {
        int(port.split("/")[0])
        for name, words in final_stage()
        if name == "EXPOSE"
        for port in words.split()
    }
    checks = [words for name, words in final_stage() if name == "HEALTHCHECK"]
    port, path = healthcheck_url(checks[-1])

    assert arguments.port in exposed
    assert setting_default("worker_metrics_port") in exposed
    assert port == arguments.port
    assert path in receiver_paths()


# The compose file.


def test_compose_receiver_ports_agree() -> None:
    receiver = compose_service("receiver")
    arguments = serve_arguments(receiver["command"])
    published = {int(str(mapping).split(":")[-1].split("/")[0]) for mapping in receiver["ports"]}
    port, path = healthcheck_url(" ".join(receiver["healthcheck"]["test"]))

    assert published == {arguments.port}
    assert port == arguments.port
    assert path in receiver_paths()


def test_compose_publishes_receiver_on_loopback() -> None:
    mappings = [str(mapping) for mapping in compose_service("receiver")["ports"]]

    assert all(mapping.startswith("127.0.0.1:") for mapping in mappings)


def test_compose_worker_metrics_port_agrees() -> None:
    worker = compose_service("worker")
    environment = {**read_env_file(DEPLOY / "env.example"), **worker.get("environment", {})}
    metrics_port = int(effective_setting(environment, "worker_metrics_port"))
    port, path = healthcheck_url(" ".join(worker["healthcheck"]["test"]))

    assert [int(port) for port in worker["expose"]] == [metrics_port]
    assert port == metrics_port
    assert path == "/metrics"


def test_compose_worker_can_scale() -> None:
    worker = compose_service("worker")

    assert "ports" not in worker
    assert "container_name" not in worker


@pytest.mark.parametrize("service", ["redis", "receiver", "worker"])
def test_compose_service_restarts(service: str) -> None:
    assert compose_service(service)["restart"] in ("always", "unless-stopped")


def test_compose_redis_uses_durable_config() -> None:
    redis = compose_service("redis")
    config_path = redis["command"][-1]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in redis["volumes"]}
    data_folder = redis_config(DEPLOY / "redis.conf")["dir"]

    assert mounts[config_path] == "./redis.conf"
    assert mounts[data_folder] in compose()["volumes"]


# The Kubernetes manifests.


def test_kubernetes_receiver_ports_and_probes_agree() -> None:
    container = only_container("Deployment", "ordermesh-hooks-receiver")
    arguments = serve_arguments(container["command"])
    readiness = container["readinessProbe"]["httpGet"]
    liveness = container["livenessProbe"]["httpGet"]
    paths = receiver_paths()

    assert container_port(container, readiness["port"]) == arguments.port
    assert container_port(container, liveness["port"]) == arguments.port
    assert readiness["path"] == "/readyz"
    assert liveness["path"] == "/healthz"
    assert readiness["path"] in paths
    assert liveness["path"] in paths
    assert arguments.host == "0.0.0.0"


def test_kubernetes_receiver_service_targets_container() -> None:
    container = only_container("Deployment", "ordermesh-hooks-receiver")
    arguments = serve_arguments(container["command"])
    service = kubernetes_object("Service", "ordermesh-hooks-receiver")
    target_ports = [entry["targetPort"] for entry in service["spec"]["ports"]]

    assert [container_port(container, port) for port in target_ports] == [arguments.port]


@pytest.mark.parametrize(
    ("kind", "name", "port_of"),
    [
        ("Deployment", "ordermesh-hooks-receiver", "receiver"),
        ("Deployment", "ordermesh-hooks-worker", "worker"),
    ],
)
def test_kubernetes_scrape_annotations_agree(kind: str, name: str, port_of: str) -> None:
    template = kubernetes_object(kind, name)["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    container = only_container(kind, name)
    if port_of == "receiver":
        expected_port = serve_arguments(container["command"]).port
    else:
        settings = read_env_file(KUBERNETES / "settings.env")
        expected_port = int(effective_setting(settings, "worker_metrics_port"))
    declared_ports = [entry["containerPort"] for entry in container["ports"]]

    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == expected_port
    assert expected_port in declared_ports
    assert annotations["prometheus.io/path"] == "/metrics"


def test_receiver_serves_scraped_metrics_path() -> None:
    annotations = kubernetes_object("Deployment", "ordermesh-hooks-receiver")["spec"]["template"][
        "metadata"
    ]["annotations"]
    paths = receiver_paths()
    if "/metrics" not in paths:
        pytest.skip("the receiver has no /metrics route yet")

    assert annotations["prometheus.io/path"] in paths


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("Service", "ordermesh-hooks-receiver"),
        ("PodDisruptionBudget", "ordermesh-hooks-receiver"),
        ("Service", "ordermesh-hooks-redis"),
    ],
)
def test_kubernetes_selector_matches_pods(kind: str, name: str) -> None:
    spec = kubernetes_object(kind, name)["spec"]
    selector = spec["selector"]
    selector = selector if "matchLabels" in selector else {"matchLabels": selector}
    workload = "StatefulSet" if name.endswith("-redis") else "Deployment"

    assert selects(selector, pod_labels(workload, name))


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("Deployment", "ordermesh-hooks-receiver"),
        ("Deployment", "ordermesh-hooks-worker"),
        ("StatefulSet", "ordermesh-hooks-redis"),
    ],
)
def test_kubernetes_workload_selects_own_pods(kind: str, name: str) -> None:
    workload = kubernetes_object(kind, name)

    assert selects(workload["spec"]["selector"], pod_labels(kind, name))


def test_kubernetes_autoscaler_targets_receiver() -> None:
    autoscaler = kubernetes_object("HorizontalPodAutoscaler", "ordermesh-hooks-receiver")
    target = autoscaler["spec"]["scaleTargetRef"]
    receiver = kubernetes_object("Deployment", "ordermesh-hooks-receiver")
    resources = only_container("Deployment", "ordermesh-hooks-receiver")["resources"]

    assert (target["kind"], target["name"]) == ("Deployment", "ordermesh-hooks-receiver")
    assert "replicas" not in receiver["spec"]
    assert "cpu" in resources["requests"]


@pytest.mark.parametrize("component", ["receiver", "worker"])
def test_redis_network_policy_admits(component: str) -> None:
    policy = kubernetes_object("NetworkPolicy", "ordermesh-hooks-redis")
    sources = [peer["podSelector"] for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    labels = pod_labels("Deployment", f"ordermesh-hooks-{component}")

    assert any(selects(selector, labels) for selector in sources)


def test_kubernetes_redis_keeps_data_on_volume() -> None:
    statefulset = kubernetes_object("StatefulSet", "ordermesh-hooks-redis")
    container = only_container("StatefulSet", "ordermesh-hooks-redis")
    claims = {claim["metadata"]["name"] for claim in statefulset["spec"]["volumeClaimTemplates"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    config = redis_config(KUBERNETES / "redis.conf")
    config_folder = str(Path(container["args"][-1]).parent)

    assert mounts[config["dir"]] in claims
    assert config_folder in mounts


def test_kubernetes_memory_limits_cover_targets() -> None:
    receiver = only_container("Deployment", "ordermesh-hooks-receiver")["resources"]
    worker_container = only_container("Deployment", "ordermesh-hooks-worker")
    worker = worker_container["resources"]
    processes = _parser().parse_args(worker_container["command"][1:]).processes
    # The worker processes, plus `omhooks worker` and Dramatiq's main process together.
    worker_need = (processes + 1) * WORKER_PROCESS_RSS_LIMIT_BYTES

    assert parse_memory(receiver["limits"]["memory"]) >= RECEIVER_RSS_LIMIT_BYTES
    assert parse_memory(receiver["requests"]["memory"]) <= parse_memory(
        receiver["limits"]["memory"]
    )
    assert processes == 1
    assert parse_memory(worker["limits"]["memory"]) >= worker_need
    assert parse_memory(worker["requests"]["memory"]) <= parse_memory(worker["limits"]["memory"])


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load_yaml(KUBERNETES / "kustomization.yaml")[0]
    manifests = {
        path.name
        for path in KUBERNETES.glob("*.yaml")
        if path.name not in ("kustomization.yaml", "secret.example.yaml")
    }

    assert set(kustomization["resources"]) == manifests
    assert "secret.example.yaml" not in kustomization["resources"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_build_resolves_references() -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(KUBERNETES)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    objects = [item for item in yaml.safe_load_all(built.stdout) if item]
    config_maps = {item["metadata"]["name"] for item in objects if item["kind"] == "ConfigMap"}
    referenced = set()
    for item in objects:
        if item["kind"] not in ("Deployment", "StatefulSet"):
            continue
        spec = item["spec"]["template"]["spec"]
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    referenced.add(source["configMapRef"]["name"])
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                referenced.add(volume["configMap"]["name"])
    outside = [
        item["metadata"]["name"]
        for item in objects
        if item["kind"] != "Namespace" and item["metadata"].get("namespace") != "ordermesh-hooks"
    ]

    assert referenced
    assert referenced <= config_maps, f"missing: {sorted(referenced - config_maps)}"
    assert outside == []


# Settings and secrets.


def environment_variable_sources() -> dict[str, set[str]]:
    """Return every environment variable the deployment files set, by file."""
    sources: dict[str, set[str]] = {}
    for name, service in compose()["services"].items():
        if name != "redis":
            sources[f"compose.yaml {name}"] = set(service.get("environment", {}))
    for path in (DEPLOY / "env.example", KUBERNETES / "settings.env", SYSTEMD / "env.example"):
        sources[str(path.relative_to(DEPLOY))] = set(read_env_file(path))
    secret = load_yaml(KUBERNETES / "secret.example.yaml")[0]
    sources["kubernetes/secret.example.yaml"] = set(secret["stringData"])
    for item in kubernetes_objects():
        if item["kind"] in ("Deployment", "StatefulSet"):
            for container in item["spec"]["template"]["spec"]["containers"]:
                names = {entry["name"] for entry in container.get("env", [])}
                sources[f"{item['metadata']['name']} env"] = names
    for unit in (RECEIVER_UNIT, WORKER_UNIT):
        assignments = read_unit(unit)["Service"].get("Environment", [])
        sources[unit.name] = {
            word.split("=")[0] for line in assignments for word in shlex.split(line)
        }
    return sources


def test_environment_variables_are_settings() -> None:
    unknown = [
        f"{name} ({source})"
        for source, names in environment_variable_sources().items()
        for name in sorted(names)
        if name not in SETTING_VARIABLES
    ]

    assert unknown == []


@pytest.mark.parametrize(
    "path",
    [DEPLOY / "env.example", KUBERNETES / "settings.env", SYSTEMD / "env.example"],
    ids=lambda path: str(path.relative_to(DEPLOY)),
)
def test_env_file_is_valid_settings(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OMHOOKS_") or name == "REDIS_URL":
            monkeypatch.delenv(name)

    settings = Settings(_env_file=path)  # type: ignore[call-arg]

    assert settings.api_base_url.startswith("https://")


def test_secret_example_holds_every_secret() -> None:
    secret = load_yaml(KUBERNETES / "secret.example.yaml")[0]

    assert {"OMHOOKS_WEBHOOK_SECRETS", "OMHOOKS_API_CLIENT_SECRET"} <= SECRET_VARIABLES
    assert set(secret["stringData"]) == SECRET_VARIABLES


def test_secrets_stay_out_of_configmap() -> None:
    settings = read_env_file(KUBERNETES / "settings.env")

    assert SECRET_VARIABLES.isdisjoint(settings)


def test_secrets_stay_out_of_compose_file() -> None:
    named = {
        name
        for service in compose()["services"].values()
        for name in service.get("environment", {})
    }

    assert SECRET_VARIABLES.isdisjoint(named)


@pytest.mark.parametrize("name", ["ordermesh-hooks-receiver", "ordermesh-hooks-worker"])
def test_kubernetes_secrets_come_from_secret(name: str) -> None:
    container = only_container("Deployment", name)
    secret = load_yaml(KUBERNETES / "secret.example.yaml")[0]
    secret_refs = [
        source["secretRef"]["name"]
        for source in container.get("envFrom", [])
        if "secretRef" in source
    ]
    inline = {entry["name"] for entry in container.get("env", []) if "value" in entry}

    assert secret_refs == [secret["metadata"]["name"]]
    assert SECRET_VARIABLES.isdisjoint(inline)


# Redis durability.


def redis_config(path: Path) -> dict[str, str]:
    """Return the directives of a redis.conf, the last one of each name."""
    directives = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            name, _, value = stripped.partition(" ")
            directives[name.lower()] = value.strip()
    return directives


@pytest.mark.parametrize(
    "path", [DEPLOY / "redis.conf", KUBERNETES / "redis.conf"], ids=["compose", "kubernetes"]
)
def test_redis_config_keeps_accepted_events(path: Path) -> None:
    config = redis_config(path)

    assert config["appendonly"] == "yes"
    assert config["appendfsync"] in ("everysec", "always")
    assert config["maxmemory-policy"] == "noeviction"


def test_redis_configs_agree_on_persistence() -> None:
    compose_config = redis_config(DEPLOY / "redis.conf")
    kubernetes_config = redis_config(KUBERNETES / "redis.conf")

    for directive in ("appendonly", "appendfsync", "maxmemory-policy", "save", "dir"):
        assert kubernetes_config[directive] == compose_config[directive], directive


# Stopping the workers.


def worker_stop_settings() -> dict[str, tuple[dict[str, str], float]]:
    """Return, per deployment, the workers' environment and how long a stop may take."""
    compose_worker = compose_service("worker")
    unit = read_unit(WORKER_UNIT)["Service"]
    return {
        "compose": (
            {**read_env_file(DEPLOY / "env.example"), **compose_worker.get("environment", {})},
            parse_seconds(compose_worker["stop_grace_period"]),
        ),
        "kubernetes": (
            read_env_file(KUBERNETES / "settings.env"),
            float(
                pod_spec("Deployment", "ordermesh-hooks-worker")["terminationGracePeriodSeconds"]
            ),
        ),
        "systemd": (
            read_env_file(SYSTEMD / "env.example"),
            parse_seconds(unit["TimeoutStopSec"][-1]),
        ),
    }


@pytest.mark.parametrize("deployment", ["compose", "kubernetes", "systemd"])
def test_worker_stop_lets_runs_finish(deployment: str) -> None:
    environment, grace_seconds = worker_stop_settings()[deployment]
    shutdown = effective_setting(environment, "worker_shutdown_seconds")
    time_limit = effective_setting(environment, "retry_time_limit_seconds")

    assert shutdown >= time_limit
    assert grace_seconds >= shutdown + 10


# The systemd units.


@pytest.mark.parametrize("unit", [RECEIVER_UNIT, WORKER_UNIT], ids=lambda path: path.name)
def test_systemd_unit_is_supervised_and_hardened(unit: Path) -> None:
    service = {key: values[-1] for key, values in read_unit(unit)["Service"].items()}
    expected = {
        "EnvironmentFile": "/etc/ordermesh-hooks/env",
        "User": "ordermesh-hooks",
        "Restart": "always",
        "KillSignal": "SIGTERM",
        "KillMode": "mixed",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
    }

    for key, value in expected.items():
        assert service.get(key) == value, key
    assert parse_seconds(service["TimeoutStopSec"]) > 0
    assert read_unit(unit)["Unit"]["StartLimitIntervalSec"] == ["0"]


def test_systemd_receiver_listens_on_loopback() -> None:
    arguments = serve_arguments(shlex.split(unit_value(RECEIVER_UNIT, "Service", "ExecStart")))

    assert arguments.host == "127.0.0.1"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("unit", [RECEIVER_UNIT, WORKER_UNIT], ids=lambda path: path.name)
def test_systemd_analyze_accepts_unit(unit: Path, tmp_path: Path) -> None:
    # systemd-analyze checks that the command exists, so the copy runs this venv's omhooks.
    executable = shlex.split(unit_value(unit, "Service", "ExecStart"))[0]
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace(executable, str(omhooks_executable()[0])))

    verified = subprocess.run(
        ["systemd-analyze", "verify", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert verified.returncode == 0
    assert verified.stderr.strip() == ""


# The alert rules and the dashboard.


def metric_names_in(text: str) -> set[str]:
    return set(re.findall(r"\bomhooks_[a-z0-9_]+", text))


def is_known_metric(name: str) -> bool:
    if name in METRICS:
        return True
    for suffix in HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and METRICS.get(base) == "histogram":
            return True
    return False


def alert_rules() -> list[dict[str, Any]]:
    document = load_yaml(DEPLOY / "prometheus" / "alerts.yaml")[0]
    return [rule for group in document["groups"] for rule in group["rules"]]


@pytest.mark.parametrize(
    "path",
    [DEPLOY / "prometheus" / "alerts.yaml", DEPLOY / "grafana" / "dashboard.json"],
    ids=["alerts", "dashboard"],
)
def test_file_uses_only_listed_metrics(path: Path) -> None:
    names = metric_names_in(path.read_text(encoding="utf-8"))

    assert names, f"{path.name} uses no omhooks metric"
    assert sorted(name for name in names if not is_known_metric(name)) == []


@pytest.mark.parametrize(
    "metric",
    [
        "omhooks_receiver_responses_total",
        "omhooks_receiver_verification_failures_total",
        "omhooks_queue_oldest_message_age_seconds",
        "omhooks_dead_letters_total",
        "omhooks_reconcile_last_success_timestamp_seconds",
        "omhooks_handler_runs_total",
    ],
)
def test_alert_rules_watch_metric(metric: str) -> None:
    expressions = [rule["expr"] for rule in alert_rules()]

    assert any(metric in metric_names_in(expression) for expression in expressions)


def test_receiver_errors_alert_on_5xx() -> None:
    expressions = [
        rule["expr"] for rule in alert_rules() if "omhooks_receiver_responses_total" in rule["expr"]
    ]

    assert any('status=~"5.."' in expression for expression in expressions)


def test_alert_rules_are_complete() -> None:
    problems = []
    for rule in alert_rules():
        name = rule.get("alert", "(no name)")
        if rule.get("labels", {}).get("severity") not in ("warning", "critical"):
            problems.append(f"{name}: severity is not warning or critical")
        if not rule.get("annotations", {}).get("summary"):
            problems.append(f"{name}: no summary")
        if "for" in rule and not re.fullmatch(r"\d+[smh]", rule["for"]):
            problems.append(f"{name}: invalid for: {rule['for']!r}")

    assert problems == []


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_alert_rules() -> None:
    checked = subprocess.run(
        ["promtool", "check", "rules", str(DEPLOY / "prometheus" / "alerts.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_dashboard_panels_query_prometheus() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text(encoding="utf-8"))
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    problems = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"{panel['title']}: not on the datasource variable")
        if not [target for target in panel.get("targets", []) if target.get("expr")]:
            problems.append(f"{panel['title']}: no query")

    assert "datasource" in variables
    assert problems == []


def test_dashboard_panel_ids_are_unique() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text(encoding="utf-8"))
    ids = [panel["id"] for panel in dashboard["panels"]]

    assert len(ids) == len(set(ids))


def exposed_names(collector: Any) -> set[str]:
    """Return the sample names Prometheus stores for a collector's metric families."""
    names = set()
    for family in collector.collect():
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


def test_reconcile_metric_names_match_registry() -> None:
    registered = exposed_names(reconcile_metrics.REGISTRY)

    assert sorted(set(RECONCILE_METRICS) - registered) == []


def test_worker_metric_names_match_code() -> None:
    collectors = [
        value
        for value in vars(worker_metrics).values()
        if isinstance(value, Counter | Gauge | Histogram)
    ]
    defined = set().union(*(exposed_names(collector) for collector in collectors))
    listed = {
        name
        for name, kind in METRICS.items()
        if name.startswith(("omhooks_handler_", "omhooks_dead_letters")) and kind != "gauge"
    }

    assert sorted(listed - defined) == []


# The systemd units' own commands, run on loopback.


def omhooks_executable() -> list[str]:
    """Return the command that runs this environment's ``omhooks``."""
    script = Path(sys.executable).with_name("omhooks")
    return [str(script)] if script.exists() else [sys.executable, "-m", "omhooks"]


def unit_arguments(unit: Path, **replaced_options: str) -> list[str]:
    """Return the arguments of a unit's ExecStart after ``omhooks``, some option values replaced."""
    argv = shlex.split(unit_value(unit, "Service", "ExecStart"))
    assert Path(argv[0]).name == "omhooks", argv
    arguments = argv[1:]
    for option, value in replaced_options.items():
        index = arguments.index("--" + option.replace("_", "-"))
        arguments[index + 1] = value
    return arguments


def process_tree(pid: int) -> list[int]:
    """Return a process and all its descendants, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    tree = [pid]
    for member in tree:
        tree.extend(children.get(member, []))
    return tree


def peak_resident_bytes(pid: int) -> int:
    """Return the most resident memory a process has used (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")


@dataclass
class RunningUnits:
    """The receiver and the worker started from the systemd units, with their Redis."""

    receiver_url: str
    sandbox_url: str
    redis_url: str
    namespace: str
    secret: str
    processes: dict[str, subprocess.Popen[bytes]]
    log_folder: Path

    def log_text(self, name: str) -> str:
        return (self.log_folder / f"{name}.log").read_text(errors="replace")

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise AssertionError(
                    f"the {name} exited with status {process.returncode}:\n{self.log_text(name)}"
                )


def start_process(
    name: str, argv: list[str], environment: dict[str, str], folder: Path
) -> subprocess.Popen[bytes]:
    with (folder / f"{name}.log").open("ab") as log:
        return subprocess.Popen(
            argv,
            env=environment,
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Send SIGTERM to the main process only, as KillMode=mixed does; SIGKILL after 30 s."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_for_url(units: RunningUnits, url: str) -> None:
    if wait_until_ok(url, check_alive=units.check_alive, timeout=START_TIMEOUT_SECONDS):
        return
    raise AssertionError(f"{url} did not answer 200 within {START_TIMEOUT_SECONDS:.0f} s")


@pytest.fixture(scope="module")
def running_units(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningUnits]:
    """The systemd units' ExecStart commands with env.example and a Redis of their own.

    Only what points at this machine's test services is replaced: the Redis URL, the secret,
    the API (the sandbox), the receiver's port and the workers' metrics address.
    """
    folder = tmp_path_factory.mktemp("units")
    receiver_port = free_port()
    namespace = f"omhooks-deploy-{uuid.uuid4().hex[:8]}"
    with LocalRedis() as redis_server:
        inherited = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("OMHOOKS_") and name != "REDIS_URL"
        }
        sandbox_port = free_port()
        environment = {
            **inherited,
            **read_env_file(SYSTEMD / "env.example"),
            "OMHOOKS_REDIS_URL": redis_server.url,
            "OMHOOKS_NAMESPACE": namespace,
            "OMHOOKS_WEBHOOK_SECRETS": FIXTURE_SECRET,
            "OMHOOKS_API_BASE_URL": f"http://127.0.0.1:{sandbox_port}/v1",
            "OMHOOKS_API_CLIENT_ID": "sandbox",
            "OMHOOKS_API_CLIENT_SECRET": "sandbox-secret",
            "OMHOOKS_RECONCILE_INTERVAL_SECONDS": "0",
            "OMHOOKS_WORKER_METRICS_HOST": "127.0.0.1",
            "OMHOOKS_WORKER_METRICS_PORT": str(free_port()),
        }
        receiver_arguments = unit_arguments(RECEIVER_UNIT, port=str(receiver_port))
        # The receiver must listen on loopback only: never start it on another address.
        assert serve_arguments(["omhooks", *receiver_arguments]).host == "127.0.0.1"
        receiver_argv = [*omhooks_executable(), *receiver_arguments]
        worker_argv = [*omhooks_executable(), *unit_arguments(WORKER_UNIT)]
        sandbox_argv = [*omhooks_executable(), "sandbox", "--port", str(sandbox_port)]
        sandbox_environment = {**environment, "OMHOOKS_SANDBOX_CLIENT_SECRET": "sandbox-secret"}

        processes = {
            "sandbox": start_process("sandbox", sandbox_argv, sandbox_environment, folder),
            "receiver": start_process("receiver", receiver_argv, environment, folder),
            "worker": start_process("worker", worker_argv, environment, folder),
        }
        units = RunningUnits(
            receiver_url=f"http://127.0.0.1:{receiver_port}",
            sandbox_url=f"http://127.0.0.1:{sandbox_port}",
            redis_url=redis_server.url,
            namespace=namespace,
            secret=FIXTURE_SECRET,
            processes=processes,
            log_folder=folder,
        )
        try:
            wait_for_url(units, f"{units.sandbox_url}/_sandbox/effects")
            wait_for_url(units, f"{units.receiver_url}/healthz")
            yield units
        finally:
            for process in processes.values():
                stop_process(process)


def deliver_hold_event(units: RunningUnits, event_id: str) -> httpx.Response:
    """Deliver a signed order.customer_care_hold event, which note_on_hold handles."""
    lifecycle = load_lifecycle()
    event = next(item for item in lifecycle["events"] if item["id"] == "evt_0009")
    event = {**event, "id": event_id}
    with httpx.Client(timeout=15.0) as client:
        apply_snapshot(client, units.sandbox_url, event)
        body = json.dumps(event).encode()
        return client.post(
            f"{units.receiver_url}/webhooks/ordermesh",
            content=body,
            headers=signed_headers([units.secret], event_id, body),
        )


def wait_for_outcome(units: RunningUnits, journal: Journal, event_id: str) -> dict[str, str]:
    """Wait until every handler of an event has a final outcome in the journal."""
    deadline = time.monotonic() + PROCESSING_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        units.check_alive()
        entry = journal.entry(event_id)
        if entry is not None and entry.outcomes and entry.is_final:
            return entry.outcomes
        time.sleep(0.05)
    raise AssertionError(f"event {event_id} was not processed:\n{units.log_text('worker')}")


@pytest.fixture
def units_journal(running_units: RunningUnits) -> Iterator[tuple[Redis, Journal]]:
    """A client of the units' Redis and their journal."""
    redis = Redis.from_url(running_units.redis_url, decode_responses=True)
    yield redis, Journal(redis, namespace=running_units.namespace, ttl_seconds=60)
    redis.close()


def test_units_receiver_is_ready(running_units: RunningUnits) -> None:
    response = httpx.get(f"{running_units.receiver_url}/readyz", timeout=5.0)

    assert response.status_code == 200


def test_units_process_signed_delivery(
    running_units: RunningUnits, units_journal: tuple[Redis, Journal]
) -> None:
    redis, journal = units_journal

    response = deliver_hold_event(running_units, "evt_deploy_1")
    outcomes = wait_for_outcome(running_units, journal, "evt_deploy_1")

    notes = httpx.get(f"{running_units.sandbox_url}/_sandbox/effects").json()["notes"]
    assert response.status_code == 202
    assert outcomes == {"note_on_hold": "succeeded"}
    assert pending_messages(redis, running_units.namespace) == 0
    assert [note["resourceId"] for note in notes].count("ord_5001") >= 1


def test_units_stay_within_memory_targets(
    running_units: RunningUnits, units_journal: tuple[Redis, Journal]
) -> None:
    _, journal = units_journal
    event_ids = [f"evt_deploy_load_{index}" for index in range(100)]

    statuses = [deliver_hold_event(running_units, event_id).status_code for event_id in event_ids]
    wait_for_outcome(running_units, journal, event_ids[-1])
    receiver_peak = peak_resident_bytes(running_units.processes["receiver"].pid)
    worker_peaks = [
        peak_resident_bytes(pid) for pid in process_tree(running_units.processes["worker"].pid)
    ]

    assert statuses == [202] * len(event_ids)
    assert receiver_peak < RECEIVER_RSS_LIMIT_BYTES
    assert len(worker_peaks) >= 3  # omhooks worker, Dramatiq's main process, a worker process
    assert max(worker_peaks) < WORKER_PROCESS_RSS_LIMIT_BYTES
