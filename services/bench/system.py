"""A running tokenbus (llmsim, inference workers, gateway) as real processes: e2e tests, bench."""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from services.procs import ServiceProcess, free_port


@dataclass
class System:
    """Processes of one isolated tokenbus: own topic prefix and ports on a shared broker."""

    bootstrap: str
    prefix: str
    logs: Path
    llmsim_env: dict[str, str] = field(default_factory=dict)
    worker_env: dict[str, str] = field(default_factory=dict)
    tiers: Callable[[str], dict[str, Any]] | None = None  # llmsim URL -> tiers file content
    llmsim: ServiceProcess | None = None
    gateway_env: dict[str, str] = field(default_factory=dict)
    gateways: list[ServiceProcess] = field(default_factory=list)
    workers: list[ServiceProcess] = field(default_factory=list)
    analytics: list[ServiceProcess] = field(default_factory=list)  # stopped by their owner
    llmsim_port: int = 0  # 0 = any free port

    def _env(self) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "TOKENBUS_TOPIC_PREFIX": self.prefix,
            "TOKENBUS_MODELS": self._models(),
            "TOKENBUS_LOG_FORMAT": "json",
            # No keys, no limits (tenant "dev"); tests of keys and limits set "keys".
            "TOKENBUS_AUTH_MODE": "open",
            # One delta per token, so tests can count frames; coalescing has its own tests.
            "TOKENBUS_COALESCE_MS": "0",
            "TOKENBUS_LLMSIM_URL": f"{self.llmsim_url}/v1" if self.llmsim else "",
            # The gateways' shared SQL (the Responses index) stays out of the source tree.
            "TOKENBUS_DATABASE_URL": f"sqlite+aiosqlite:///{self.logs / self.prefix}db.sqlite",
        }

    def _models(self) -> str:
        if self.tiers is None or self.llmsim is None:
            return "sim"
        path = self.logs / f"{self.prefix}tiers.yaml"
        path.write_text(yaml.safe_dump(self.tiers(f"{self.llmsim_url}/v1")))
        return str(path)

    @property
    def llmsim_url(self) -> str:
        assert self.llmsim is not None
        return self.llmsim.url

    @property
    def gateway(self) -> ServiceProcess | None:
        return self.gateways[0] if self.gateways else None

    @property
    def gateway_url(self) -> str:
        assert self.gateway is not None
        return self.gateway.url

    def start_llmsim(self) -> ServiceProcess:
        port = self.llmsim_port or free_port()
        self.llmsim = ServiceProcess(
            "llmsim",
            ["llmsim", "--port", str(port)],
            port,
            self.llmsim_env,
            self.logs / f"{self.prefix}llmsim.log",
        )
        return self.llmsim.start()

    def start_worker(self, **env: str) -> ServiceProcess:
        port = free_port()
        name = f"inference-{len(self.workers)}"
        worker = ServiceProcess(
            name,
            ["inference", "--port", str(port)],
            port,
            {**self._env(), **self.worker_env, **env},
            self.logs / f"{self.prefix}{name}.log",
        )
        self.workers.append(worker.start())
        return worker

    def restart_workers(self, **env: str) -> None:
        """Stop every worker, then start as many again with `env` added to `worker_env`."""
        count = len(self.workers)
        for worker in self.workers:
            worker.stop()
        self.workers.clear()
        self.worker_env = {**self.worker_env, **env}
        for _ in range(count):
            self.start_worker()
        for worker in self.workers:
            worker.wait_ready(timeout=90)

    def start_gateway(self, partitions: str = "0") -> ServiceProcess:
        port = free_port()
        name = f"gateway-{len(self.gateways)}"
        gateway = ServiceProcess(
            name,
            ["gateway", "--port", str(port), "--partitions", partitions],
            port,
            {**self._env(), **self.gateway_env},
            self.logs / f"{self.prefix}{name}.log",
        )
        self.gateways.append(gateway.start())
        return gateway

    def start_analytics(self, database_url: str, **env: str) -> ServiceProcess:
        """An analytics process (its own consumer group) on `database_url`, once /readyz says
        ready. Not in `processes()`: whoever starts it stops it."""
        port = free_port()
        name = f"analytics-{len(self.analytics)}"
        proc = ServiceProcess(
            name,
            ["analytics", "--port", str(port)],
            port,
            {
                **self._env(),
                "TOKENBUS_DATABASE_URL": database_url,
                "TOKENBUS_GROUP_ID": f"{self.prefix}{name}",
                **env,
            },
            self.logs / f"{self.prefix}{name}.log",
        )
        self.analytics.append(proc.start())
        try:
            proc.wait_ready(timeout=60)
        except BaseException:
            proc.stop()
            raise
        return proc

    def start(self, workers: int = 1, gateways: int = 1) -> "System":
        """Node k of n gateways reads reply partitions k, k+n, ... of the 4."""
        self.start_llmsim()
        for _ in range(workers):
            self.start_worker()
        for k in range(gateways):
            self.start_gateway(",".join(str(p) for p in range(k, 4, gateways)))
        try:
            for proc in self.processes():
                proc.wait_ready(timeout=90)
        except BaseException:
            self.stop()
            raise
        return self

    def processes(self) -> list[ServiceProcess]:
        return [p for p in (self.llmsim, *self.workers, *self.gateways) if p is not None]

    def stop(self) -> None:
        for proc in reversed(self.processes()):
            proc.stop()
