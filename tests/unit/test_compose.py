"""compose.yaml, the Dockerfile and the Prometheus/Grafana/nginx config, checked against the code.

No Docker daemon is needed: these tests read the files and compare them with the typer app,
the Settings classes, the topic registry, the Kafka pin in infra/kafka/pom.xml and the metrics
the apps expose, so a renamed setting, a changed port or a new service fails here instead of
in a container.
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
from sqlalchemy.engine import make_url

from contracts import TOPICS
from services.analytics.settings import AnalyticsSettings
from services.cli import app as cli_app
from services.common.settings import KafkaSettings
from services.gateway.settings import GatewaySettings
from services.inference.settings import InferenceSettings
from services.llmsim.settings import LlmsimSettings
from services.localmodel.settings import LocalModelSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
IMAGE = "tokenbus:dev"
NGINX_CONF = ROOT / "infra/nginx/nginx.conf"
EDGE = "edge"  # the load balancer in front of the gateway nodes

# `tokenbus <command>` -> the Settings class that command builds (see services/cli.py).
SETTINGS: dict[str, type[BaseSettings]] = {
    "analytics": AnalyticsSettings,
    "gateway": GatewaySettings,
    "inference": InferenceSettings,
    "llmsim": LlmsimSettings,
    "localmodel": LocalModelSettings,
    "topics": KafkaSettings,
}
# Subcommands that are not a long-running container, and why.
NOT_SERVICES = {
    "topics": "one-shot job",
    "dev": "runs everything as local processes",
    "route-eval": "offline report on a labelled file",
    "usage": "a report client of the analytics API",
    "bench": "a benchmark that starts its own system",
    "keys": "API key administration",
    "tenants": "tenant administration",
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


def _services_by_command() -> dict[str, list[tuple[str, dict[str, Any]]]]:
    by_command: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name, svc in sorted(_tokenbus_services().items()):
        by_command.setdefault(_command(svc), []).append((name, svc))
    return by_command


def _service(command: str) -> tuple[str, dict[str, Any]]:
    """The one service running `tokenbus <command>` (all but gateway run exactly once)."""
    [only] = _services_by_command()[command]
    return only


def _gateways() -> dict[str, dict[str, Any]]:
    """The gateway nodes: every service running `tokenbus gateway`, by name."""
    return dict(_services_by_command()["gateway"])


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


def _reply_partitions(name: str, svc: dict[str, Any]) -> list[int]:
    """The partitions of the tokens topic a gateway node reads, as its compose env sets them."""
    raw = [
        value
        for var, value in _environment(svc).items()
        if _field_for(GatewaySettings, var) == "reply_partitions"
    ]
    assert len(raw) == 1, f"{name}: must set its reply partitions (the default is shared)"
    return json.loads(raw[0])


TOKENBUS_SERVICES = sorted(_tokenbus_services())
HTTP_SERVICES = [
    name for name in TOKENBUS_SERVICES if "port" in SETTINGS[_command(SERVICES[name])].model_fields
]


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
        assert by_command.get(command), f"`tokenbus {command}` has no service in compose.yaml"
    assert set(NOT_SERVICES) <= _cli_commands(), "NOT_SERVICES names a command that is gone"


def test_only_the_known_commands_run_in_compose() -> None:
    # A new service needs its Settings class registered above (and here checked).
    assert set(_services_by_command()) <= set(SETTINGS)


def test_topics_is_a_one_shot_job_after_kafka_is_healthy() -> None:
    _, svc = _service("topics")
    assert str(svc.get("restart")) == "no"
    assert svc["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_services_wait_for_topics_and_llmsim() -> None:
    llmsim_name, _ = _service("llmsim")
    topics_name, _ = _service("topics")
    for command in ("gateway", "inference"):
        for name, svc in _services_by_command()[command]:
            depends = svc["depends_on"]
            assert depends[topics_name]["condition"] == "service_completed_successfully", name
    _, inference = _service("inference")
    assert inference["depends_on"][llmsim_name]["condition"] == "service_healthy"


# --- environment ------------------------------------------------------------------------


@pytest.mark.parametrize("name", TOKENBUS_SERVICES)
def test_every_env_var_is_read_by_the_service(name: str) -> None:
    svc = SERVICES[name]
    cls = SETTINGS[_command(svc)]
    for var in _environment(svc):
        if var in READ_DIRECTLY:
            continue
        assert _field_for(cls, var), (
            f"{name}: {var} is not read by {cls.__name__} "
            f"(env_prefix {cls.model_config.get('env_prefix')!r}; aliases count too)"
        )


@pytest.mark.parametrize("name", TOKENBUS_SERVICES)
def test_compose_env_validates_in_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = SERVICES[name]
    command = _command(svc)
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
        assert settings.instance == name, "nodes are told apart by instance"  # type: ignore[attr-defined]
        assert settings.reply_partitions == _reply_partitions(name, svc)  # type: ignore[attr-defined]


def test_kafka_clients_use_the_advertised_listener() -> None:
    advertised = _environment(SERVICES["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    plaintext = next(e for e in advertised.split(",") if e.startswith("PLAINTEXT://"))
    address = plaintext.removeprefix("PLAINTEXT://")
    for command in ("analytics", "gateway", "inference", "topics"):
        for name, svc in _services_by_command()[command]:
            assert _environment(svc).get("KAFKA_BOOTSTRAP_SERVERS") == address, name


# --- analytics and postgres -------------------------------------------------------------


def _postgres() -> tuple[str, dict[str, Any]]:
    [(name, svc)] = [
        (n, s) for n, s in SERVICES.items() if s.get("image", "").startswith("postgres:")
    ]
    return name, svc


def test_postgres_is_16_alpine_and_healthy_by_pg_isready() -> None:
    _, svc = _postgres()
    assert svc["image"] == "postgres:16-alpine"
    assert " ".join(svc["healthcheck"]["test"]).count("pg_isready") == 1


def test_analytics_waits_for_topics_and_a_healthy_postgres() -> None:
    name, svc = _service("analytics")
    postgres, _ = _postgres()
    topics_name, _ = _service("topics")
    assert svc["depends_on"][postgres]["condition"] == "service_healthy", name
    assert svc["depends_on"][topics_name]["condition"] == "service_completed_successfully"


def test_analytics_reads_the_postgres_database_from_database_url() -> None:
    _, svc = _service("analytics")
    env = _environment(svc)
    assert _field_for(AnalyticsSettings, "DATABASE_URL") == "database_url"
    url = make_url(env["DATABASE_URL"])
    postgres, pg = _postgres()
    pg_env = _environment(pg)
    assert url.drivername == "postgresql+asyncpg", "the async driver analytics ships with"
    assert (url.host, url.port or 5432) == (postgres, 5432)
    assert (url.username, url.password, url.database) == (
        pg_env["POSTGRES_USER"],
        pg_env["POSTGRES_PASSWORD"],
        pg_env["POSTGRES_DB"],
    )


def test_analytics_publishes_its_api_port() -> None:
    _, svc = _service("analytics")
    port = _default_port("analytics")
    assert [str(p) for p in svc["ports"]] == [f"{port}:{port}"]


def test_gateway_nodes_split_the_reply_partitions() -> None:
    nodes = _gateways()
    assert len(nodes) >= 2, f"compose runs several gateway nodes behind {EDGE}"
    owned = {name: _reply_partitions(name, svc) for name, svc in nodes.items()}
    every = [p for partitions in owned.values() for p in partitions]
    assert len(every) == len(set(every)), f"gateway nodes share a reply partition: {owned}"
    tokens = TOPICS.tokens
    assert set(every) == set(range(tokens.partitions)), (
        f"{owned} must cover the {tokens.partitions} partitions of {tokens.name}"
    )


# --- ports ------------------------------------------------------------------------------


def test_edge_publishes_the_gateway_settings_port() -> None:
    port = _default_port("gateway")
    published = [str(p) for p in SERVICES[EDGE]["ports"]]
    assert published == [f"{port}:{port}"]
    assert _nginx_directives("listen") == [str(port)], "nginx listens on the published port"


def test_no_gateway_node_publishes_a_host_port() -> None:
    for name, svc in _gateways().items():
        assert "ports" not in svc, f"{name}: clients reach the gateway nodes through {EDGE}"


@pytest.mark.parametrize("name", HTTP_SERVICES)
def test_healthcheck_port_is_the_settings_port(name: str) -> None:
    svc = SERVICES[name]
    assert _healthcheck_port(svc) == _default_port(_command(svc)), name


def test_every_long_running_service_has_a_healthcheck_and_drains() -> None:
    for command in _long_running():
        for name, svc in _services_by_command()[command]:
            assert "/readyz" in " ".join(svc["healthcheck"]["test"]), name
            assert svc["stop_grace_period"] == "40s", name  # > inference's 30 s drain


def test_inference_can_scale() -> None:
    name, svc = _service("inference")
    assert "container_name" not in svc, f"{name}: a fixed container_name prevents --scale"
    assert "ports" not in svc, f"{name}: a host port prevents --scale"


# --- edge (nginx) -----------------------------------------------------------------------


def _nginx() -> str:
    """infra/nginx/nginx.conf without its comments."""
    return re.sub(r"#[^\n]*", "", NGINX_CONF.read_text())


def _nginx_directives(directive: str) -> list[str]:
    """The arguments of every `directive ...;` in the nginx config, in order."""
    return [a.strip() for a in re.findall(rf"(?m)^\s*{directive}\s+([^;]*);", _nginx())]


def _nginx_headers() -> dict[str, str]:
    """proxy_set_header name (lower case) -> value."""
    pairs = (d.split(None, 1) for d in _nginx_directives("proxy_set_header"))
    return {header.lower(): value for header, value in pairs}


def _nginx_seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value)
    assert match, f"not an nginx time: {value}"
    unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2] or "s"]
    return int(match[1]) * unit


def test_edge_runs_nginx_with_the_repo_config() -> None:
    edge = SERVICES[EDGE]
    assert edge["image"].startswith("nginx:")
    mounts = [v.split(":") for v in edge["volumes"]]
    assert ["./infra/nginx/nginx.conf", "/etc/nginx/nginx.conf", "ro"] in mounts
    assert NGINX_CONF.is_file()


def test_edge_waits_for_every_gateway_node_and_checks_healthz() -> None:
    edge = SERVICES[EDGE]
    depends = {name: dep["condition"] for name, dep in edge["depends_on"].items()}
    assert depends == dict.fromkeys(_gateways(), "service_healthy")
    port = _default_port("gateway")
    assert f"http://127.0.0.1:{port}/healthz" in " ".join(edge["healthcheck"]["test"])


def test_nginx_upstream_is_every_gateway_node() -> None:
    upstreams = dict(re.findall(r"upstream\s+(\w+)\s*\{([^}]*)\}", _nginx()))
    [(upstream, body)] = upstreams.items()
    servers = {(host, int(port)) for host, port in re.findall(r"server\s+([\w.-]+):(\d+)", body)}
    assert servers == {(name, _default_port("gateway")) for name in _gateways()}
    assert set(_nginx_directives("proxy_pass")) == {f"http://{upstream}"}


def test_nginx_streams_sse_unbuffered() -> None:
    assert _nginx_directives("proxy_http_version") == ["1.1"]
    assert _nginx_directives("proxy_buffering") == ["off"]
    assert _nginx_directives("proxy_cache") == ["off"]
    assert "X-Accel-Buffering" in _nginx_directives("proxy_pass_header")
    # Outlast any silence the gateway allows before it ends a stream itself.
    [read_timeout] = _nginx_directives("proxy_read_timeout")
    fields = GatewaySettings.model_fields
    quiet = max(fields["idle_timeout_s"].default, fields["first_event_timeout_s"].default)
    assert _nginx_seconds(read_timeout) > quiet
    # Authorization and Last-Event-ID (resume) reach the gateway as the client sent them.
    assert not {"authorization", "last-event-id"} & set(_nginx_headers())
    assert "off" not in _nginx_directives("proxy_pass_request_headers")


def test_nginx_upgrades_websockets() -> None:
    nginx = _nginx()
    upgrade_map = re.search(r"map\s+\$http_upgrade\s+\$connection_upgrade\s*\{([^}]*)\}", nginx)
    assert upgrade_map, "no `map $http_upgrade $connection_upgrade` for /v1/ws"
    assert re.search(r"default\s+upgrade\s*;", upgrade_map[1])
    headers = _nginx_headers()
    assert headers["upgrade"] == "$http_upgrade"
    assert headers["connection"] == "$connection_upgrade"
    # A location with its own proxy_set_header would drop these server-level ones.
    for body in re.findall(r"location\s+[^{]*\{([^}]*)\}", nginx):
        assert "proxy_set_header" not in body


def test_nginx_limits_the_request_body() -> None:
    [limit] = _nginx_directives("client_max_body_size")
    assert re.fullmatch(r"\d+[km]", limit), limit
    assert f"larger than {limit}" in NGINX_CONF.read_text(), "the 413 body names the limit"


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
    services = {name: _command(svc) for name, svc in _tokenbus_services().items()}
    targets = _scrape_targets()
    for host, port in targets:
        assert host in services, f"scrape target {host} is not a tokenbus service"
        assert port == _default_port(services[host]), f"{host}:{port}"
    scraped = {host for host, _ in targets}
    assert {services[host] for host in scraped} == set(_long_running())
    assert set(_gateways()) <= scraped, "every gateway node is scraped, not one via the edge"


def test_prometheus_discovers_every_inference_replica() -> None:
    config = yaml.safe_load((ROOT / "infra/prometheus/prometheus.yml").read_text())
    name, _ = _service("inference")
    dns = [d for job in config["scrape_configs"] for d in job.get("dns_sd_configs", [])]
    assert any(d["names"] == [name] and d["type"] == "A" for d in dns)


def _dashboard() -> dict[str, Any]:
    return json.loads((ROOT / "infra/grafana/dashboards/tokenbus.json").read_text())


def _dashboard_metrics() -> set[str]:
    exprs = [t["expr"] for p in _dashboard()["panels"] for t in p["targets"]]
    # Label names are not metrics: drop selectors {...} and grouping clauses by (...) first.
    grouping = r"\b(by|without|ignoring|on|group_left|group_right)\s*\([^)]*\)"
    exprs = [re.sub(grouping, " ", re.sub(r"\{[^}]*\}", " ", e)) for e in exprs]
    words = {w for e in exprs for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e)}
    return {w for w in words if w.startswith(("tokenbus_", "llmsim_", "faststream_", "gen_ai_"))}


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
        # A labelled metric with no sample yet shows only its TYPE line: add the sample names
        # Prometheus will scrape once it has one.
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split()
                names |= {"counter": {f"{name}_total"},
                          "histogram": {f"{name}_bucket", f"{name}_sum", f"{name}_count"}}.get(
                    kind, set()
                )  # fmt: skip
        names |= {re.split(r"[{ ]", line)[0] for line in text.splitlines() if line[:1].isalpha()}
    return names


async def test_dashboard_queries_metrics_the_services_expose() -> None:
    wanted = _dashboard_metrics()
    assert {
        "tokenbus_gateway_watched_requests",
        "tokenbus_inference_active_generations",
        "llmsim_tokens_total",
        "faststream_received_messages_total",
        "gen_ai_server_time_to_first_token_seconds_bucket",
        "gen_ai_client_token_usage_sum",
        "tokenbus_inference_cost_usd_total",
        "tokenbus_inference_fallbacks_total",
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
