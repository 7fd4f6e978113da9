"""A running tokenbus as real processes for e2e tests: `services.bench.system.System`, and
`running_system`, the one way an e2e fixture starts one."""

import contextlib
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from services.bench.system import System

__all__ = ["System", "running_system"]


@contextlib.contextmanager
def running_system(
    bootstrap: str,
    logs_dir: Path,
    *,
    tag: str = "s",
    workers: int = 1,
    gateways: int = 1,
    alongside: Callable[[System], object] | None = None,
    **options: Any,
) -> Iterator[System]:
    """A started `System` on `bootstrap` with a topic prefix of its own: `tag` (which tells its
    logs in `logs_dir` apart) and a random part. `options` are `System`'s own (`llmsim_env`,
    `worker_env`, `gateway_env`, `tiers`, ...); `workers` and `gateways` go to `System.start`.

    `alongside(system)`, if given, runs in a thread while the system starts (processes that need
    only the broker, such as analytics). On exit every process is stopped, analytics too, however
    the start or the tests went."""
    system = System(bootstrap, f"{tag}{uuid.uuid4().hex[:8]}.", logs_dir, **options)
    try:
        if alongside is None:
            system.start(workers=workers, gateways=gateways)
        else:
            with ThreadPoolExecutor(max_workers=1) as pool:
                side = pool.submit(alongside, system)
                system.start(workers=workers, gateways=gateways)
                side.result()
        yield system
    finally:
        for proc in system.analytics:
            proc.stop()
        system.stop()
