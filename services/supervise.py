"""Keeps `tokenbus dev`'s processes up: one that exits on its own is started again after a
pause that doubles while it keeps failing (1 s, 2 s, 4 s ... 30 s), and resets once it has
stayed up for a while. Every exit and restart is logged, and the status line says so."""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.procs import ServiceProcess

FIRST_PAUSE_S = 1.0
LONGEST_PAUSE_S = 30.0
STABLE_S = 30.0  # up this long: the next crash starts again from the first pause


@dataclass
class _Watched:
    proc: ServiceProcess
    started: float
    restarts: int = 0
    crashes_in_a_row: int = 0
    restart_at: float | None = None  # set while it waits to be started again


class Supervisor:
    def __init__(
        self,
        procs: list[ServiceProcess],
        *,
        say: Callable[[str], None] = print,
        poll_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        now = clock()
        self._watched = [_Watched(p, now) for p in procs]
        self._say, self._poll_s, self._clock = say, poll_s, clock

    def run(self, stop: threading.Event) -> None:
        """Check every `poll_s` until `stop` is set."""
        while not stop.wait(self._poll_s):
            self.check()

    def check(self) -> None:
        now = self._clock()
        for watched in self._watched:
            process = watched.proc.proc
            if watched.restart_at is not None:
                if now >= watched.restart_at:
                    self._restart(watched, now)
            elif process is not None and process.poll() is not None:
                self._crashed(watched, process.returncode, now)

    def status(self) -> str:
        parts = []
        for watched in self._watched:
            state = "restarting" if watched.restart_at is not None else "up"
            if watched.restarts:
                state += f" ({watched.restarts} restart{'s' if watched.restarts > 1 else ''})"
            parts.append(f"{watched.proc.name} {state}")
        return "status: " + ", ".join(parts)

    def _crashed(self, watched: _Watched, code: int, now: float) -> None:
        stable = now - watched.started >= STABLE_S
        watched.crashes_in_a_row = 1 if stable else watched.crashes_in_a_row + 1
        pause = min(LONGEST_PAUSE_S, FIRST_PAUSE_S * 2 ** (watched.crashes_in_a_row - 1))
        watched.restart_at = now + pause
        name = watched.proc.name
        self._say(f"tokenbus dev: {name} exited with {code}; starting it again in {pause:g} s")
        self._say(self.status())

    def _restart(self, watched: _Watched, now: float) -> None:
        watched.restart_at = None
        watched.restarts += 1
        watched.started = now
        watched.proc.start()
        self._say(f"tokenbus dev: {watched.proc.name} started again (log: {watched.proc.log_path})")
        self._say(self.status())
