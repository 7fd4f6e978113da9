"""compose.yaml, the Dockerfile and the Prometheus/Grafana config, checked against the code.

No Docker daemon is needed: these tests read the files and compare them with the typer app,
the Settings classes, the Kafka pin in infra/kafka/pom.xml and the metrics the apps expose,
so a renamed setting, a changed port or a new service fails here instead of in a container.
"""

import json
import os
import re
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
import yaml
from pydantic import AliasChoices
from pydantic_core import to_jsonable_python
from pydantic_settings import BaseSettings

from services.cli import app as cli_app
from services.common.settings import KafkaSettings
from services.gateway.settings import GatewaySettings
from services.inference.settings import InferenceSettings
from services.llmsim.settings import LlmsimSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
IMAGE = "tokenbus:dev"

# `tokenbus <command>` -> the Settings class that command builds (see services/cli.py).
SETTINGS: dict[str, type[BaseSettings]] = {
    "gateway": GatewaySettings,
    "inference": InferenceSettings,
    "llmsim": LlmsimSettings,
    "topics": KafkaSettings,
}
# Subcommands that are not a long-running container, and why.
NOT_SERVICES = {
    "topics": "one-shot job",
    "dev": "runs everything as local processes",
    "route-eval": "offline report on a labelled file",
}
# Read straight from os.environ by the code rather than through a Settings class.
READ_DIRECTLY = {"OPENAI_API_KEY": "services/common/models.py"}
INTERPOLATION = re.compile(r"^\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}$")


def _cli_commands() -> set[str]:
    group = typer.main.get_command(cli_app)
    return set(group.commands)  # type: ignore[attr-defined]


def _tokenbus_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in SERVICES.items() if svc.get("image") == IMAGE}


def _command(svc: dict[str, Any]) -> str:
    command = svc["command"]
    return (command.split() if isinstance(command, str) else command)[0]


def _services_by_command() -> dict[str, tuple[str, dict[str, Any]]]:
    return {_command(svc): (name, svc) for name, svc in _tokenbus_services().items()}


def _environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def _resolve(value: str) -> str:
    """What compose passes when the interpolated variable is unset: its default, else ''."""
    match = INTERPOLATION.match(value)
    return (match["default"] or "") if match else value


def _env_to_field(cls: type[BaseSettings]) -> dict[str, str]:
    """Every environment variable name `cls` reads (upper case) -> the field it fills."""
    prefix = cls.model_config.get("env_prefix", "")
    names: dict[str, str] = {}
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias
        if alias is None:
            names[(prefix + field_name).upper()] = field_name
        elif isinstance(alias, str):
            names[alias.upper()] = field_name
        elif isinstance(alias, AliasChoices):
            names.update({c.upper(): field_name for c in alias.choices if isinstance(c, str)})
    return names


def _field_for(cls: type[BaseSettings], env_var: str) -> str | None:
    names = _env_to_field(cls)
    key = env_var.upper()
    if key in names:
        return names[key]
    head, sep, _ = key.partition(cls.model_config.get("env_nested_delimiter") or "\0")
    return names.get(head) if sep else None  # TOKENBUS_API_KEYS__sk-1=t1 fills api_keys


def _healthcheck_port(svc: dict[str, Any]) -> int:
    test = " ".join(svc["healthcheck"]["test"])
    match = re.search(r"http://127\.0\.0\.1:(\d+)/readyz", test)
    assert match, f"healthcheck does not GET /readyz on 127.0.0.1: {test}"
    return int(match[1])


def _default_port(command: str) -> int:
    return SETTINGS[command].model_fields["port"].default


def _long_running() -> list[str]:
    return sorted(_cli_commands() - set(NOT_SERVICES))


# --- commands ---------------------------------------------------------------------------


def test_every_tokenbus_service_runs_a_real_subcommand() -> None:
    commands = _cli_commands()
    assert _tokenbus_services(), "no service uses the tokenbus image"
    for name, svc in _tokenbus_services().items():
        assert _command(svc) in commands, f"{name}: `tokenbus {_command(svc)}` does not exist"
        assert "build" in svc, f"{name}: must build the image from the repo"


def test_every_long_running_subcommand_has_a_service() -> None:
    by_command = _services_by_command()
    for command in _long_running():
        assert command in by_command, f"`tokenbus {command}` has no service in compose.yaml"
    assert set(NOT_SERVICES) <= _cli_commands(), "NOT_SERVICES names a command that is gone"


def test_only_the_known_commands_run_in_compose() -> None:
    # A new service needs its Settings class registered above (and here checked).
    assert set(_services_by_command()) <= set(SETTINGS)


def test_topics_is_a_one_shot_job_after_kafka_is_healthy() -> None:
    _, svc = _services_by_command()["topics"]
    assert str(svc.get("restart")) == "no"
    assert svc["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_services_wait_for_topics_and_llmsim() -> None:
    llmsim_name, _ = _services_by_command()["llmsim"]
    topics_name, _ = _services_by_command()["topics"]
    for command in ("gateway", "inference"):
        name, svc = _services_by_command()[command]
        depends = svc["depends_on"]
        assert depends[topics_name]["condition"] == "service_completed_successfully", name
    _, inference = _services_by_command()["inference"]
    assert inference["depends_on"][llmsim_name]["condition"] == "service_healthy"


# --- environment ------------------------------------------------------------------------


@pytest.mark.parametrize("command", sorted(SETTINGS))
def test_every_env_var_is_read_by_the_service(command: str) -> None:
    name, svc = _services_by_command()[command]
    cls = SETTINGS[command]
    for var in _environment(svc):
        if var in READ_DIRECTLY:
            continue
        assert _field_for(cls, var), (
            f"{name}: {var} is not read by {cls.__name__} "
            f"(env_prefix {cls.model_config.get('env_prefix')!r}; aliases count too)"
        )


@pytest.mark.parametrize("command", sorted(SETTINGS))
def test_compose_env_validates_in_settings(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    name, svc = _services_by_command()[command]
    cls = SETTINGS[command]
    env = _environment(svc)
    for var in list(os.environ):  # only compose's values, not the developer's shell
        if var.startswith("TOKENBUS_") or _field_for(cls, var) or var in READ_DIRECTLY:
            monkeypatch.delenv(var)
    for var, value in env.items():
        monkeypatch.setenv(var, _resolve(value))

    settings = cls()

    for var, raw in env.items():
        field = _field_for(cls, var)
        if field is None or INTERPOLATION.match(raw) or "__" in var:
            continue
        actual = to_jsonable_python(getattr(settings, field))
        expected = raw if isinstance(actual, str) else json.loads(raw)
        assert actual == expected, f"{name}: {var}={raw!r} gave {field}={actual!r}"
    if command != "topics":
        assert settings.host == "0.0.0.0", f"{name} must listen on all interfaces"  # type: ignore[attr-defined]
        assert settings.log_format == "json", f"{name} must log JSON"  # type: ignore[attr-defined]
        assert settings.port == _default_port(command)  # type: ignore[attr-defined]
    if command == "gateway":
        assert settings.reply_partitions == [0]  # type: ignore[attr-defined]


def test_kafka_clients_use_the_advertised_listener() -> None:
    advertised = _environment(SERVICES["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    plaintext = next(e for e in advertised.split(",") if e.startswith("PLAINTEXT://"))
    address = plaintext.removeprefix("PLAINTEXT://")
    for command in ("gateway", "inference", "topics"):
        name, svc = _services_by_command()[command]
        assert _environment(svc).get("KAFKA_BOOTSTRAP_SERVERS") == address, name


# --- ports ------------------------------------------------------------------------------


def test_gateway_publishes_its_settings_port() -> None:
    _, svc = _services_by_command()["gateway"]
    port = _default_port("gateway")
    published = [str(p) for p in svc["ports"]]
    assert published == [f"{port}:{port}"]


@pytest.mark.parametrize("command", ["gateway", "inference", "llmsim"])
def test_healthcheck_port_is_the_settings_port(command: str) -> None:
    name, svc = _services_by_command()[command]
    assert _healthcheck_port(svc) == _default_port(command), name


def test_every_long_running_service_has_a_healthcheck_and_drains() -> None:
    for command in _long_running():
        name, svc = _services_by_command()[command]
        assert "/readyz" in " ".join(svc["healthcheck"]["test"]), name
        assert svc["stop_grace_period"] == "40s", name  # > inference's 30 s drain


def test_inference_can_scale() -> None:
    name, svc = _services_by_command()["inference"]
    assert "container_name" not in svc, f"{name}: a fixed container_name prevents --scale"
    assert "ports" not in svc, f"{name}: a host port prevents --scale"


# --- kafka ------------------------------------------------------------------------------


def test_kafka_image_matches_the_local_broker_pin() -> None:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    pom = ET.parse(ROOT / "infra/kafka/pom.xml").getroot()
    version = pom.findtext("m:properties/m:kafka.version", namespaces=ns)
    assert version
    assert SERVICES["kafka"]["image"] == f"apache/kafka:{version}"


def test_kafka_does_not_auto_create_topics() -> None:
    env = _environment(SERVICES["kafka"])
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "kafka-broker-api-versions.sh" in " ".join(SERVICES["kafka"]["healthcheck"]["test"])


# --- prometheus and grafana -------------------------------------------------------------


def _scrape_targets() -> list[tuple[str, int]]:
    config = yaml.safe_load((ROOT / "infra/prometheus/prometheus.yml").read_text())
    targets: list[tuple[str, int]] = []
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                targets.append((host, int(port)))
        for dns in job.get("dns_sd_configs", []):
            targets.extend((host, int(dns["port"])) for host in dns["names"])
    return targets


def test_prometheus_scrapes_each_service_on_its_port() -> None:
    services = {name: command for command, (name, _) in _services_by_command().items()}
    targets = _scrape_targets()
    for host, port in targets:
        assert host in services, f"scrape target {host} is not a tokenbus service"
        assert port == _default_port(services[host]), f"{host}:{port}"
    scraped = {services[host] for host, _ in targets}
    assert scraped == set(_long_running())


def test_prometheus_discovers_every_inference_replica() -> None:
    config = yaml.safe_load((ROOT / "infra/prometheus/prometheus.yml").read_text())
    name, _ = _services_by_command()["inference"]
    dns = [d for job in config["scrape_configs"] for d in job.get("dns_sd_configs", [])]
    assert any(d["names"] == [name] and d["type"] == "A" for d in dns)


def _dashboard() -> dict[str, Any]:
    return json.loads((ROOT / "infra/grafana/dashboards/tokenbus.json").read_text())


def _dashboard_metrics() -> set[str]:
    exprs = [t["expr"] for p in _dashboard()["panels"] for t in p["targets"]]
    words = {w for e in exprs for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e)}
    return {w for w in words if w.startswith(("tokenbus_", "llmsim_", "faststream_"))}


async def _exposed_metrics() -> set[str]:
    """Metric names on /metrics of freshly built apps (no lifespan, so no Kafka needed)."""
    from services.gateway.app import create_app as gateway_app
    from services.inference.app import create_app as inference_app
    from services.llmsim.app import create_app as llmsim_app

    names: set[str] = set()
    for asgi in (
        gateway_app(GatewaySettings()),
        inference_app(InferenceSettings()),
        llmsim_app(LlmsimSettings()),
    ):
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            text = (await client.get("/metrics")).text
        names |= {line.split()[2] for line in text.splitlines() if line.startswith("# ")}
        names |= {re.split(r"[{ ]", line)[0] for line in text.splitlines() if line[:1].isalpha()}
    return names


async def test_dashboard_queries_metrics_the_services_expose() -> None:
    wanted = _dashboard_metrics()
    assert {
        "tokenbus_gateway_watched_requests",
        "tokenbus_inference_active_generations",
        "llmsim_tokens_total",
        "faststream_received_messages_total",
    } <= wanted
    missing = wanted - await _exposed_metrics()
    assert not missing, f"dashboard queries metrics nobody exposes: {sorted(missing)}"


def test_grafana_provisioning_matches_compose() -> None:
    provisioning = ROOT / "infra/grafana/provisioning"
    datasource = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())
    [prometheus] = datasource["datasources"]
    assert prometheus["url"] == "http://prometheus:9090"
    assert "9090:9090" in SERVICES["prometheus"]["ports"]
    uids = {t["datasource"]["uid"] for p in _dashboard()["panels"] for t in p["targets"]}
    assert uids == {prometheus["uid"]}
    provider = yaml.safe_load((provisioning / "dashboards/tokenbus.yml").read_text())
    mounts = {v.split(":")[1] for v in SERVICES["grafana"]["volumes"]}
    assert {p["options"]["path"] for p in provider["providers"]} <= mounts


# --- Dockerfile -------------------------------------------------------------------------


def _dockerfile() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def test_dockerfile_entrypoint_is_tokenbus() -> None:
    lines = _dockerfile()
    [entrypoint] = [
        json.loads(line.split(None, 1)[1]) for line in lines if line.startswith("ENTRYPOINT")
    ]
    assert entrypoint == ["tokenbus"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "tokenbus" in pyproject["project"]["scripts"]
    users = [line.split()[1] for line in lines if line.startswith("USER")]
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"


def test_dockerfile_installs_from_the_lockfile() -> None:
    syncs = [line for line in _dockerfile() if line.startswith("RUN") and "uv sync" in line]
    assert syncs, "the image must install with uv sync"
    assert all("--frozen" in line and "--no-dev" in line for line in syncs)
    assert any("--no-install-project" in line for line in syncs), "deps layer for caching"


def test_dockerfile_copies_every_packaged_directory() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    copied = {
        p.rstrip("/")
        for line in _dockerfile()
        if line.startswith("COPY")
        for p in line.split()[1:-1]
    }
    assert set(packages) <= copied
    assert {"pyproject.toml", "uv.lock", pyproject["project"]["readme"]} <= copied
