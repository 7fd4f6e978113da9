"""`tokenbus dev`'s supervisor on a real system: a worker SIGKILLed is started again within
seconds and answers again; a service that keeps crashing waits longer each time."""

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.supervise import Supervisor
from tests.e2e.helpers import complete, eventually
from tests.system import System, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, logs_dir: Path) -> Iterator[System]:
    with running_system(kafka_bootstrap, logs_dir, tag="sup") as sys_:
        yield sys_


async def test_a_killed_worker_is_started_again_within_seconds(system: System) -> None:
    worker = system.workers[0]
    said: list[str] = []
    supervisor = Supervisor([worker], say=said.append, poll_s=0.1)
    stop = threading.Event()
    watching = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
    watching.start()
    try:
        assert worker.proc is not None
        killed = worker.proc.pid
        worker.kill()

        async def back() -> bool:
            return worker.proc is not None and worker.proc.pid != killed

        await eventually(back, within=5)  # the first pause is 1 s
        assert said[0] == f"tokenbus dev: {worker.name} exited with -9; starting it again in 1 s"
        assert said[-1] == f"status: {worker.name} up (1 restart)"
        worker.wait_ready(timeout=60)
        answer = await complete(
            system.gateway_url, [{"role": "user", "content": "still there?"}], model="small"
        )
        assert answer.choices[0].message.content  # the new worker answers
    finally:
        stop.set()
        watching.join(5)


def test_a_service_that_keeps_crashing_waits_longer_each_time(tmp_path: Path) -> None:
    from services.procs import ServiceProcess

    now = [0.0]
    crash = ServiceProcess("crasher", ["no-such-command"], 0, log_path=tmp_path / "c.log")
    said: list[str] = []
    supervisor = Supervisor([crash], say=said.append, clock=lambda: now[0])
    crash.start()
    assert crash.proc is not None
    crash.proc.wait(30)
    pauses = []
    for _ in range(6):
        supervisor.check()  # notices the exit
        pauses.append(float(said[-2].rsplit("in ", 1)[1].removesuffix(" s")))
        now[0] += pauses[-1]
        supervisor.check()  # starts it again
        assert crash.proc is not None
        crash.proc.wait(30)
    assert pauses == [1, 2, 4, 8, 16, 30]
    assert supervisor.status() == "status: crasher up (6 restarts)"
