"""infra/k8s, rendered with kustomize and checked against the code; no cluster needed.

Every kustomization under infra/k8s (the base and each overlay) is rendered, and every object
must pass the Kubernetes JSON schemas (kubernetes-validate, offline, strict). KEDA's
ScaledObject is a CRD without a shipped schema, so it gets a focused check instead. Then the
manifests are held against the project: each container's command, port, probes and
environment against its service's Settings class (the helpers of test_compose.py), the
gateways' reply partitions against the topic registry (by running the gateway's start script
for every ordinal), the termination grace against the drain timeouts, and the memory requests
against the peaks the benchmark measured.

Rendering uses kubectl's built-in kustomize, else a kustomize binary (PATH or .tools/bin),
else it installs the pinned one with `make kustomize` (needs Go). When none of that works the
tests skip, except in CI (CI=true), where they fail.
"""

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from contracts import TOPICS
from services.common.health import health_router
from services.gateway.settings import GatewaySettings
from services.inference.settings import InferenceSettings
from tests.unit.test_compose import (
    IMAGE,
    READ_DIRECTLY,
    SETTINGS,
    _cli_commands,
    _dockerfile,
    _field_for,
)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra/k8s"
LOCAL_KUSTOMIZE = ROOT / ".tools/bin/kustomize"
KUSTOMIZATIONS = sorted(str(p.parent.relative_to(K8S)) for p in K8S.rglob("kustomization.yaml"))
LOCAL = "overlays/local"
# Schemas to validate against: the oldest Kubernetes docs/kubernetes.md supports, the newest
# kubernetes-validate ships.
K8S_VERSIONS = sorted({"1.31", kubernetes_validate.latest_version()})
KEDA_API = "keda.sh/v1alpha1"
WORKLOADS = ("Deployment", "StatefulSet")
# Services that must run in every kustomization; the overlays may add more (local: llmsim).
CORE = {"gateway", "inference", "analytics"}
# `tokenbus <command>` -> its process names in docs/bench/latest.json (prefixes).
BENCH_PROCESS = {"gateway": "gateway", "inference": "inference-", "llmsim": "llmsim"}
# Where `tokenbus <command>` may read a value that is a credential: only from a Secret.
CREDENTIAL_FIELDS = {"database_url"}


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@functools.cache
def _renderer() -> tuple[str, ...]:
    """kubectl kustomize, else kustomize build (PATH, then .tools/bin, then `make kustomize`)."""
    if kubectl := shutil.which("kubectl"):
        return (kubectl, "kustomize")
    for binary in (shutil.which("kustomize"), str(LOCAL_KUSTOMIZE)):
        if binary and Path(binary).is_file():
            return (binary, "build")
    problem = "no make on PATH"
    if make := shutil.which("make"):
        done = subprocess.run(
            [make, "-C", str(ROOT), "kustomize"], capture_output=True, text=True, timeout=280
        )
        if done.returncode == 0 and LOCAL_KUSTOMIZE.is_file():
            return (str(LOCAL_KUSTOMIZE), "build")
        problem = f"`make kustomize` failed: {(done.stdout + done.stderr)[-2000:]}"
    message = f"cannot render infra/k8s: no kubectl, no kustomize, and {problem}"
    if _in_ci():
        pytest.fail(message)
    pytest.skip(message)


@functools.cache
def _render(kustomization: str) -> tuple[dict[str, Any], ...]:
    done = subprocess.run(
        [*_renderer(), str(K8S / kustomization)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{kustomization} does not render:\n{done.stderr}"
    return tuple(obj for obj in yaml.safe_load_all(done.stdout) if obj)


def _of_kind(objs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objs if obj["kind"] == kind]


def _named(objs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    [obj] = [o for o in _of_kind(objs, kind) if o["metadata"]["name"] == name]
    return obj


# --- containers and how they start --------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    """One tokenbus container of a workload, as a pod of it would run it."""

    workload: dict[str, Any]
    container: dict[str, Any]
    command: str  # the `tokenbus <command>` it runs

    @property
    def spec(self) -> dict[str, Any]:
        return self.workload["spec"]["template"]["spec"]

    @property
    def labels(self) -> dict[str, str]:
        return self.workload["spec"]["template"]["metadata"]["labels"]

    @property
    def name(self) -> str:
        return self.workload["metadata"]["name"]

    def pod_name(self, ordinal: int = 0) -> str:
        suffix = str(ordinal) if self.workload["kind"] == "StatefulSet" else "7c9f5d8b4-x2x7q"
        return f"{self.name}-{suffix}"

    @property
    def settings_class(self) -> type[BaseSettings]:
        return SETTINGS[self.command]

    def port(self, name_or_number: str | int) -> int:
        if isinstance(name_or_number, int):
            return name_or_number
        ports = {p.get("name"): p["containerPort"] for p in self.container.get("ports", [])}
        assert name_or_number in ports, f"{self.name}: no container port named {name_or_number}"
        return ports[name_or_number]


def _entrypoint() -> list[str]:
    [entrypoint] = [
        json.loads(line.split(None, 1)[1])
        for line in _dockerfile()
        if line.startswith("ENTRYPOINT")
    ]
    return entrypoint


@functools.cache
def _start(kustomization: str, workload: str, container: str, pod_name: str) -> dict[str, Any]:
    """Run the container's command and args as its pod would, up to `tokenbus`, which is a
    stand-in printing the arguments and the environment variables the command added."""
    [pod] = [
        p
        for p in _pods(kustomization, started=False)
        if p.name == workload and p.container["name"] == container
    ]
    entrypoint = _entrypoint()
    argv = [*(pod.container.get("command") or entrypoint), *pod.container.get("args", [])]
    with tempfile.TemporaryDirectory() as tmp:
        fake = Path(tmp) / entrypoint[0]
        fake.write_text(
            f"#!{sys.executable}\nimport json, os, sys\n"
            'json.dump({"argv": sys.argv[1:], "env": dict(os.environ)}, sys.stdout)\n'
        )
        fake.chmod(0o755)
        given = {
            "PATH": f"{tmp}{os.pathsep}{os.environ['PATH']}",
            "HOSTNAME": pod_name,
            "PYTHONCOERCECLOCALE": "0",  # else the stand-in itself would add LC_CTYPE
        }
        done = subprocess.run(argv, env=given, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        return {"returncode": done.returncode, "stderr": done.stderr}
    seen = json.loads(done.stdout)
    shell = {"PWD", "OLDPWD", "SHLVL", "_"}
    added = {k: v for k, v in seen["env"].items() if k not in given and k not in shell}
    return {"returncode": 0, "argv": seen["argv"], "env": added}


@functools.cache
def _pods(kustomization: str, started: bool = True) -> tuple[Pod, ...]:
    pods: list[Pod] = []
    objs = _render(kustomization)
    for workload in (o for o in objs if o["kind"] in WORKLOADS):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            command = ""
            if started:
                run = _start(kustomization, workload["metadata"]["name"], container["name"], "x-0")
                assert run["returncode"] == 0, f"{workload['metadata']['name']}: {run}"
                command = run["argv"][0]
            pods.append(Pod(workload, container, command))
    return tuple(pods)


def _pod(kustomization: str, command: str) -> Pod:
    [pod] = [p for p in _pods(kustomization) if p.command == command]
    return pod


# --- environment ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Env:
    value: str | None  # what the pod sees; None when it comes from a Secret
    secret: bool = False
    optional: bool = False


def _env(kustomization: str, pod: Pod, pod_name: str) -> dict[str, Env]:
    """Every environment variable the manifests give the container, resolved where they can."""
    objs = _render(kustomization)
    config_maps = {c["metadata"]["name"]: c.get("data", {}) for c in _of_kind(objs, "ConfigMap")}
    env: dict[str, Env] = {}
    for source in pod.container.get("envFrom", []):
        assert "secretRef" not in source, f"{pod.name}: name each Secret key (env, secretKeyRef)"
        data = config_maps[source["configMapRef"]["name"]]
        env.update({key: Env(value) for key, value in data.items()})
    for var in pod.container.get("env", []):
        ref = var.get("valueFrom", {})
        if "value" in var:
            env[var["name"]] = Env(var["value"])
        elif "secretKeyRef" in ref:
            optional = ref["secretKeyRef"].get("optional", False)
            env[var["name"]] = Env(None, secret=True, optional=optional)
        elif "configMapKeyRef" in ref:
            key_ref = ref["configMapKeyRef"]
            data = config_maps.get(key_ref["name"])
            assert data is not None, f"{pod.name}: no ConfigMap {key_ref['name']} is rendered"
            assert key_ref["key"] in data, f"{pod.name}: ConfigMap has no {key_ref['key']}"
            env[var["name"]] = Env(data[key_ref["key"]])
        elif ref.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[var["name"]] = Env(pod_name)
        else:
            pytest.fail(f"{pod.name}: {var['name']} has a source this test cannot resolve")
    return env


def _settings(cls: type[BaseSettings], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """`cls` built from `env` alone (not from the shell running the tests)."""
    with monkeypatch.context() as patch:
        for var in list(os.environ):
            if var.startswith("TOKENBUS_") or _field_for(cls, var) or var in READ_DIRECTLY:
                patch.delenv(var)
        for var, value in env.items():
            patch.setenv(var, value)
        return cls()


def _pod_settings(
    kustomization: str, pod: Pod, monkeypatch: pytest.MonkeyPatch, ordinal: int = 0
) -> Any:
    """The Settings a pod runs with: its env (Secrets left out) plus what its command adds."""
    pod_name = pod.pod_name(ordinal)
    env = {k: e.value for k, e in _env(kustomization, pod, pod_name).items() if e.value is not None}
    run = _start(kustomization, pod.name, pod.container["name"], pod_name)
    assert run["returncode"] == 0, f"{pod_name} does not start: {run['stderr']}"
    return _settings(pod.settings_class, {**env, **run["env"]}, monkeypatch)


# --- rendering and schemas -----------------------------------------------------------------


def test_there_is_a_base_and_a_local_overlay() -> None:
    assert {"base", LOCAL} <= set(KUSTOMIZATIONS)


def test_make_kustomize_installs_where_the_tests_look() -> None:
    makefile = (ROOT / "Makefile").read_text()
    variables = dict(re.findall(r"(?m)^(KUSTOMIZE\w*) := (.*)$", makefile))
    assert variables["KUSTOMIZE"] == str(LOCAL_KUSTOMIZE.relative_to(ROOT))
    assert re.fullmatch(r"v\d+\.\d+\.\d+", variables["KUSTOMIZE_VERSION"]), "a pinned version"
    assert re.search(r"(?m)^kustomize: \$\(KUSTOMIZE\)", makefile)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_renders_the_core_services(kustomization: str) -> None:
    objs = _render(kustomization)
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objs]
    assert len(keys) == len(set(keys)), f"{kustomization}: an object is there twice"
    assert CORE <= {p.command for p in _pods(kustomization)}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_objects_pass_the_kubernetes_schemas(kustomization: str) -> None:
    checked = 0
    for obj in _render(kustomization):
        if obj["apiVersion"] == KEDA_API:
            continue  # a CRD: test_scaled_object_scales_workers_on_the_requests_lag
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = f"{obj['kind']}/{obj['metadata']['name']} for Kubernetes {version}"
                pytest.fail(f"{kustomization}: {where}: {exc.message} at {list(exc.path)}")
        checked += 1
    assert checked >= len(CORE) * 2


# --- KEDA ----------------------------------------------------------------------------------

SCALED_OBJECT_FIELDS = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
KAFKA_TRIGGER_FIELDS = {
    "bootstrapServers",
    "bootstrapServersFromEnv",
    "consumerGroup",
    "consumerGroupFromEnv",
    "topic",
    "topicFromEnv",
    "lagThreshold",
    "activationLagThreshold",
    "offsetResetPolicy",
    "allowIdleConsumers",
    "scaleToZeroOnInvalidOffset",
    "excludePersistentLag",
    "limitToPartitionsWithLag",
    "partitionLimitation",
    "version",
}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_scaled_object_scales_workers_on_the_requests_lag(
    kustomization: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objs = _render(kustomization)
    [scaled] = [o for o in objs if o["apiVersion"] == KEDA_API]
    assert scaled["kind"] == "ScaledObject"
    spec = scaled["spec"]
    assert set(spec) <= SCALED_OBJECT_FIELDS, f"unknown fields: {set(spec) - SCALED_OBJECT_FIELDS}"
    workers = _pod(kustomization, "inference")
    target = spec["scaleTargetRef"]
    assert target.get("kind", "Deployment") == workers.workload["kind"] == "Deployment"
    assert target.get("apiVersion", "apps/v1") == "apps/v1"
    assert target["name"] == workers.name
    assert scaled["metadata"].get("namespace") == workers.workload["metadata"].get("namespace")
    assert (
        target.get("envSourceContainerName", workers.container["name"])
        == (workers.container["name"])
    )
    assert "replicas" not in workers.workload["spec"], "KEDA owns the workers' replicas"
    requests = TOPICS.requests
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= requests.partitions

    [trigger] = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert set(meta) <= KAFKA_TRIGGER_FIELDS, f"unknown fields: {set(meta) - KAFKA_TRIGGER_FIELDS}"
    settings = _pod_settings(kustomization, workers, monkeypatch)
    assert settings.group_id == InferenceSettings().group_id == meta["consumerGroup"]
    assert meta["topic"] == settings.topics.requests.name == requests.name
    assert re.fullmatch(r"[1-9]\d*", meta["lagThreshold"]), "lagThreshold: a positive integer"
    # The broker address: the workers' own (one ConfigMap value for both).
    if "bootstrapServersFromEnv" in meta:
        var = meta["bootstrapServersFromEnv"]
        env = _env(kustomization, workers, workers.pod_name())
        assert var in env and _field_for(InferenceSettings, var) == "bootstrap_servers"
    else:
        assert meta["bootstrapServers"] == settings.bootstrap_servers

    # The HPA behaviour KEDA passes on must be a valid HorizontalPodAutoscaler's.
    behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {})
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": scaled["metadata"]["name"]},
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": target["name"],
            },
            "minReplicas": spec["minReplicaCount"],
            "maxReplicas": spec["maxReplicaCount"],
            **({"behavior": behavior["behavior"]} if "behavior" in behavior else {}),
        },
    }
    kubernetes_validate.validate(hpa, K8S_VERSIONS[-1], strict=True)


# --- commands, images, ports and probes ----------------------------------------------------


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_containers_run_tokenbus_commands_from_the_compose_image(kustomization: str) -> None:
    commands = _cli_commands() & set(SETTINGS)
    uid = re.search(r"useradd\b.*--uid (\d+)", " ".join(_dockerfile()))
    assert uid, "the Dockerfile creates its user with a fixed --uid"
    for pod in _pods(kustomization):
        assert pod.container["image"] == IMAGE, f"{pod.name}: compose.yaml's image"
        assert pod.command in commands, f"{pod.name}: `tokenbus {pod.command}` has no Settings"
        security = pod.spec["securityContext"]
        # runAsNonRoot alone cannot check the image's non-numeric USER: name its uid.
        assert security["runAsNonRoot"] is True
        assert security["runAsUser"] == int(uid[1]), pod.name


def _health_paths() -> set[str]:
    async def ready() -> dict[str, bool]:
        return {}

    return {
        getattr(route, "path", "") for route in health_router(CollectorRegistry(), ready).routes
    }


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_ports_and_probes_are_the_settings(
    kustomization: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _health_paths()
    assert {"/healthz", "/readyz"} <= paths
    for pod in _pods(kustomization):
        default = pod.settings_class.model_fields["port"].default
        settings = _pod_settings(kustomization, pod, monkeypatch)
        assert settings.port == default, f"{pod.name}: TOKENBUS_PORT differs from the default"
        assert settings.host == "0.0.0.0", f"{pod.name} must listen on all interfaces"
        assert settings.log_format == "json", f"{pod.name} must log JSON"
        assert pod.port("http") == default, f"{pod.name}: container port != settings port"
        probes = {
            kind: pod.container[f"{kind}Probe"]["httpGet"]
            for kind in ("startup", "liveness", "readiness")
            if f"{kind}Probe" in pod.container
        }
        assert probes["readiness"]["path"] == "/readyz", pod.name
        assert probes["liveness"]["path"] == "/healthz", pod.name
        for kind, probe in probes.items():
            assert probe["path"] in paths, f"{pod.name}: {kind} probe GETs {probe['path']}"
            assert pod.port(probe["port"]) == default, f"{pod.name}: {kind} probe port"
        annotations = pod.workload["spec"]["template"]["metadata"].get("annotations", {})
        if "prometheus.io/port" in annotations:
            assert int(annotations["prometheus.io/port"]) == default, pod.name
            assert annotations.get("prometheus.io/path", "/metrics") in paths


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_services_route_to_the_http_port(kustomization: str) -> None:
    objs = _render(kustomization)
    for service in _of_kind(objs, "Service"):
        name = service["metadata"]["name"]
        pods = [p for p in _pods(kustomization) if _selects(service["spec"]["selector"], p.labels)]
        assert len(pods) == 1, f"Service {name} selects {len(pods)} workloads' pods"
        [pod] = pods
        for port in service["spec"]["ports"]:
            container_port = pod.port(port.get("targetPort", port["port"]))
            assert container_port == pod.port("http") == port["port"], name
    for sts in _of_kind(objs, "StatefulSet"):
        headless = _named(objs, "Service", sts["spec"]["serviceName"])
        assert headless["spec"].get("clusterIP") == "None", "a StatefulSet's Service is headless"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_urls_to_rendered_services_use_their_ports(kustomization: str) -> None:
    objs = _render(kustomization)
    services_ = {s["metadata"]["name"]: s for s in _of_kind(objs, "Service")}
    for pod in _pods(kustomization):
        for var, env in _env(kustomization, pod, pod.pod_name()).items():
            url = urlsplit(env.value or "")
            if url.scheme in ("http", "https") and url.hostname in services_:
                ports = {p["port"] for p in services_[url.hostname]["spec"]["ports"]}
                assert url.port in ports, f"{pod.name}: {var}={env.value}"


# --- environment ---------------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_env_var_is_read_by_the_service(kustomization: str) -> None:
    for pod in _pods(kustomization):
        cls = pod.settings_class
        for ordinal in range(pod.workload["spec"].get("replicas") or 1):
            pod_name = pod.pod_name(ordinal)
            added = _start(kustomization, pod.name, pod.container["name"], pod_name)["env"]
            for var in [*_env(kustomization, pod, pod_name), *added]:
                assert var in READ_DIRECTLY or _field_for(cls, var), (
                    f"{pod.name}: {var} is not read by {cls.__name__}"
                )


def _is_credential(cls: type[BaseSettings], var: str) -> bool:
    field = _field_for(cls, var)
    if var in READ_DIRECTLY:
        return True
    if field is None:
        return False
    annotation = cls.model_fields[field].annotation
    return field in CREDENTIAL_FIELDS or SecretStr in (get_args(annotation) or (annotation,))


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_credentials_come_only_from_secrets(kustomization: str) -> None:
    objs = _render(kustomization)
    assert not _of_kind(objs, "Secret"), "no Secret in the repo: create it (docs/kubernetes.md)"
    for pod in _pods(kustomization):
        env = _env(kustomization, pod, pod.pod_name())
        for var, source in env.items():
            if _is_credential(pod.settings_class, var):
                assert source.secret, f"{pod.name}: {var} must come from a secretKeyRef"
            else:
                assert not source.secret, f"{pod.name}: {var} is no secret: ConfigMap or value"
    gateway = _env(kustomization, _pod(kustomization, "gateway"), "x")
    for var in ("DATABASE_URL", "TOKENBUS_KEY_PEPPER", "TOKENBUS_ID_SECRET"):
        assert not gateway[var].optional, f"the gateway cannot run without {var}"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_env_validates_in_settings(kustomization: str, monkeypatch: pytest.MonkeyPatch) -> None:
    objs = _render(kustomization)
    [config] = _of_kind(objs, "ConfigMap")
    for pod in _pods(kustomization):
        settings = _pod_settings(kustomization, pod, monkeypatch)
        if hasattr(settings, "bootstrap_servers"):
            assert settings.bootstrap_servers == config["data"]["KAFKA_BOOTSTRAP_SERVERS"]
        if hasattr(settings, "models"):
            assert settings.models == config["data"]["TOKENBUS_MODELS"], pod.name
        if pod.command in CORE:
            assert settings.instance == pod.pod_name(), "nodes are told apart by instance"


# --- the gateway nodes and their reply partitions ------------------------------------------


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_gateway_nodes_split_the_reply_partitions(
    kustomization: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = _pod(kustomization, "gateway")
    assert gateway.workload["kind"] == "StatefulSet", "the pod ordinal picks the partitions"
    replicas = gateway.workload["spec"].get("replicas", 1)
    owned: dict[str, list[int]] = {}
    for ordinal in range(replicas):
        settings = _pod_settings(kustomization, gateway, monkeypatch, ordinal)
        assert isinstance(settings, GatewaySettings)
        owned[gateway.pod_name(ordinal)] = settings.reply_partitions
    every = [p for partitions in owned.values() for p in partitions]
    assert len(every) == len(set(every)), f"gateway nodes share a reply partition: {owned}"
    tokens = TOPICS.tokens
    assert set(every) == set(range(tokens.partitions)), (
        f"{owned} must cover the {tokens.partitions} partitions of {tokens.name}"
    )
    # One node more than spec.replicas would own nothing: its pod must refuse to start.
    beyond = _start(kustomization, gateway.name, "gateway", gateway.pod_name(replicas))
    assert beyond["returncode"] != 0


def test_gateway_script_refuses_a_pod_name_without_an_ordinal() -> None:
    gateway = _pod("base", "gateway")
    run = _start("base", gateway.name, "gateway", "gateway")
    assert run["returncode"] != 0 and "ordinal" in run["stderr"]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_commands_survive_kubernetes_variable_expansion(kustomization: str) -> None:
    # Kubernetes replaces $(VAR) in command and args with the container's env, and $$ with $.
    for pod in _pods(kustomization):
        names = set(_env(kustomization, pod, pod.pod_name()))
        for arg in [*pod.container.get("command", []), *pod.container.get("args", [])]:
            assert "$$" not in arg, pod.name
            assert not set(re.findall(r"\$\(([^)]*)\)", arg)) & names, pod.name


# --- shutdown, disruption and resources ----------------------------------------------------


# Runs `tokenbus <command>` in a child process up to the point where it builds uvicorn, and
# prints the graceful-shutdown timeout it asked for; no server ever starts. A child, because
# the commands configure logging and other process-wide state.
_GRACE_PROBE = """
import json, os, sys
import uvicorn
import services.cli as cli

class Built(Exception):
    pass

def record(*args, **kwargs):
    raise Built(kwargs.get("timeout_graceful_shutdown"))

uvicorn.Config = uvicorn.run = record  # whichever way services/cli.py starts uvicorn
uvicorn.Server.run = record
cli.configure_logging = lambda *args, **kwargs: None
out = []
for job in json.load(sys.stdin):
    os.environ.clear()
    os.environ.update(job["env"])
    try:
        cli.app(job["argv"], standalone_mode=False)
        out.append("no uvicorn")
    except Built as built:
        out.append(built.args[0])
print(json.dumps(out))
"""


@functools.cache
def _uvicorn_grace_s() -> dict[tuple[str, str], float]:
    """(kustomization, workload) -> how long uvicorn lets open connections finish after
    SIGTERM, as the command asks for it (services/cli.py) with the pod's settings."""
    pods = [(k, pod) for k in KUSTOMIZATIONS for pod in _pods(k)]
    jobs = []
    for kustomization, pod in pods:
        env = _env(kustomization, pod, pod.pod_name())
        run = _start(kustomization, pod.name, pod.container["name"], pod.pod_name())
        plain = {k: e.value for k, e in env.items() if e.value is not None}
        # A key read straight from the environment must be there (the openai SDK checks).
        keys = {k: "placeholder" for k, e in env.items() if e.secret and k in READ_DIRECTLY}
        given = {"PATH": os.environ["PATH"], **plain, **keys, **run["env"]}
        jobs.append({"argv": run["argv"], "env": given})
    done = subprocess.run(
        [sys.executable, "-c", _GRACE_PROBE],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    graces = json.loads(done.stdout.splitlines()[-1])
    for (_, pod), grace in zip(pods, graces, strict=True):
        assert isinstance(grace, int | float), f"{pod.name}: uvicorn's graceful timeout: {grace}"
    return {(k, pod.name): float(g) for (k, pod), g in zip(pods, graces, strict=True)}


def _pre_stop_s(container: dict[str, Any]) -> float:
    pre_stop = container.get("lifecycle", {}).get("preStop")
    if pre_stop is None:
        return 0.0
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep", f"a preStop this test cannot time: {command}"
    return float(command[1])


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_termination_grace_outlasts_the_drain(
    kustomization: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    uvicorn_s = _uvicorn_grace_s()
    for pod in _pods(kustomization):
        settings = _pod_settings(kustomization, pod, monkeypatch)
        # On top of uvicorn's wait: a worker drains after it, in its lifespan, and a
        # gateway before it (services/cli.py).
        drain_s = getattr(settings, "drain_timeout_s", 0.0)
        needed = _pre_stop_s(pod.container) + uvicorn_s[kustomization, pod.name] + drain_s
        grace = pod.spec.get("terminationGracePeriodSeconds", 30)
        assert grace >= needed, f"{pod.name}: {grace} s grace, but stopping takes up to {needed}"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_disruption_budgets_cover_gateway_and_workers(kustomization: str) -> None:
    budgets = _of_kind(_render(kustomization), "PodDisruptionBudget")
    for command in ("gateway", "inference"):
        pod = _pod(kustomization, command)
        matching = [
            b for b in budgets if _selects(b["spec"]["selector"]["matchLabels"], pod.labels)
        ]
        assert len(matching) == 1, f"{pod.name}: {len(matching)} PodDisruptionBudgets select it"
        [budget] = matching
        # One pod at a time, so a node drain never blocks, nor takes every one at once.
        assert budget["spec"].get("maxUnavailable") == 1, budget["metadata"]["name"]


_UNITS = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}


def _bytes(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)([KMG]i|[kMG])?", quantity)
    assert match, f"not a memory quantity this test reads: {quantity}"
    return int(match[1]) * _UNITS[match[2] or ""]


def _millicores(quantity: str) -> float:
    return float(quantity[:-1]) if quantity.endswith("m") else float(quantity) * 1000


def _peak_rss_bytes(command: str) -> int:
    """The largest peak RSS of `tokenbus <command>`'s processes in the benchmark's run."""
    bench = json.loads((ROOT / "docs/bench/latest.json").read_text())
    prefix = BENCH_PROCESS[command]
    peaks = [
        stats["peak_rss_mb"]
        for scenario in bench["scenarios"]
        for run in scenario.values()
        if isinstance(run, dict)
        for name, stats in run.get("processes", {}).items()
        if name.startswith(prefix)
    ]
    assert peaks, f"no {prefix}* process in docs/bench/latest.json"
    return int(max(peaks) * 2**20)  # the benchmark's MB are MiB (services/bench/measure.py)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_resources_are_set_and_cover_the_measured_peaks(kustomization: str) -> None:
    for pod in _pods(kustomization):
        resources = pod.container["resources"]
        requests, limits = resources["requests"], resources["limits"]
        assert _millicores(requests["cpu"]) <= _millicores(limits["cpu"]), pod.name
        assert _bytes(requests["memory"]) <= _bytes(limits["memory"]), pod.name
        if pod.command in BENCH_PROCESS:
            peak = _peak_rss_bytes(pod.command)
            assert _bytes(requests["memory"]) >= peak, f"{pod.name}: below the measured peak"


# --- the local overlay ---------------------------------------------------------------------


def test_local_overlay_is_one_gateway_in_namespace_tokenbus_on_kafka_9092() -> None:
    objs = _render(LOCAL)
    assert _named(objs, "Namespace", "tokenbus")
    for obj in objs:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "tokenbus", obj["metadata"]["name"]
    assert _pod(LOCAL, "gateway").workload["spec"]["replicas"] == 1
    [config] = _of_kind(objs, "ConfigMap")
    assert config["data"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
