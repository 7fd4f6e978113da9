"""`tokenbus dev`: the whole local system as processes; waits for /readyz; starts again a
service that crashes (services/supervise.py); clean Ctrl-C."""

import os
import signal
import sys
import threading
from pathlib import Path

from services.common.models import load_models
from services.common.settings import KafkaSettings, ModelsSettings
from services.localmodel.settings import LocalModelSettings
from services.procs import ServiceFailed, ServiceProcess
from services.supervise import Supervisor
from services.tenants.dev import DEV_ENV, ensure_dev_key

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run"
SIM_PACE = '{"llmsim-large": {"ttft_ms": 150, "tokens_per_second": 80}}'


def _plan(bootstrap: str, gateway_nodes: int) -> list[ServiceProcess]:
    # Keys mode with development's placeholder secrets; analytics and the gateways share
    # one database (keys, limits, usage).
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, **DEV_ENV}
    models = ModelsSettings()
    profile = load_models(models.models, models.llmsim_url).profile
    # The sim profile's tiers differ the way real ones do: large starts later and runs slower.
    pace = {"TOKENBUS_LLMSIM_PROFILES": os.environ.get("TOKENBUS_LLMSIM_PROFILES", SIM_PACE)}
    plan = [ServiceProcess("llmsim", ["llmsim"], 8090, pace)] if profile == "sim" else []
    if profile == "local":  # only the model servers the profile needs
        plan.append(ServiceProcess("localmodel", ["localmodel"], LocalModelSettings().port))
    plan.append(ServiceProcess("inference", ["inference"], 8070, env))
    plan.append(ServiceProcess("analytics", ["analytics"], 8081, {**env, **_database_env()}))
    for k in range(gateway_nodes):
        plan.append(
            ServiceProcess(
                f"gateway-{k}",
                ["gateway", "--partitions", str(k)],
                8080 + 100 * k,
                {**env, **_database_env(), "TOKENBUS_PORT": str(8080 + 100 * k)},
            )
        )
    return plan


def _database_env() -> dict[str, str]:
    """SQLite under .run/ (whatever the working directory), unless a database URL is set."""
    if os.environ.get("DATABASE_URL") or os.environ.get("TOKENBUS_DATABASE_URL"):
        return {}
    return {"TOKENBUS_DATABASE_URL": f"sqlite+aiosqlite:///{RUN_DIR / 'analytics.db'}"}


def run_dev(start_kafka: bool = True) -> int:
    from infra.kafka.local import LocalBroker, broker_answers

    RUN_DIR.mkdir(exist_ok=True)
    broker = LocalBroker(RUN_DIR / "kafka", log_file=RUN_DIR / "kafka.log") if start_kafka else None
    if broker and broker_answers(broker.bootstrap):
        print(f"using the broker already answering on {broker.bootstrap}", flush=True)
        broker = None
    bootstrap = broker.bootstrap if broker else KafkaSettings().bootstrap_servers
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    procs: list[ServiceProcess] = []
    try:
        if broker:
            print(f"starting Kafka on {bootstrap} (log: {RUN_DIR / 'kafka.log'})", flush=True)
            broker.start()
        for proc in _plan(bootstrap, int(os.environ.get("GATEWAY_NODES", "1"))):
            proc.log_path = RUN_DIR / f"{proc.name}.log"
            procs.append(proc.start())
        for proc in procs:
            proc.wait_ready(timeout=120)
        _banner(procs)
        ensure_dev_key(_database_env().get("TOKENBUS_DATABASE_URL"))
        print(flush=True)
        Supervisor(procs, say=lambda line: print(line, flush=True)).run(stop)
        return 0
    except ServiceFailed as exc:
        print(f"tokenbus dev: {exc}", file=sys.stderr)
        return 1
    finally:
        print("\nstopping...", flush=True)
        for proc in reversed(procs):
            proc.stop()
        if broker:
            broker.stop()


def _banner(procs: list[ServiceProcess]) -> None:
    lines = ["", "tokenbus is up:"]
    for proc in procs:
        lines.append(f"  {proc.name:<12} {proc.url}   (log: .run/{proc.name}.log)")
    gateway = next(p for p in procs if p.name.startswith("gateway"))
    lines += ["", f"  Web chat:        {gateway.url}/", f"  OpenAI base URL: {gateway.url}/v1"]
    analytics = next((p for p in procs if p.name == "analytics"), None)
    if analytics:
        lines.append(f"  Usage API:       {analytics.url}/v1/usage   (or: tokenbus usage)")
    lines += ["  A service that crashes is started again.", "  Ctrl-C stops everything."]
    print("\n".join(lines), flush=True)
