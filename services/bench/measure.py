"""CPU seconds and peak memory of each service process (psutil), and how busy the machine is."""

import asyncio
import contextlib
import json
import math
import resource
from collections import Counter
from pathlib import Path

import psutil

from services.bench.system import System

TOKENBUS_PROCESSES = ("gateway", "inference")  # name prefixes of tokenbus's own processes


def cpu_seconds(proc: psutil.Process) -> float:
    try:
        t = proc.cpu_times()
    except psutil.Error:
        return math.nan
    return t.user + t.system


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores, every process), since boot."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def raise_nofile() -> tuple[int, int]:
    """Raise the open-files limit to its hard limit (children started after this inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def service_processes(system: System) -> dict[str, psutil.Process]:
    """The system's processes by name ("gateway" for the first gateway), a local broker this
    process started (a java child) as "kafka-broker", and this process as "bench-client"."""
    procs: dict[str, psutil.Process] = {}
    for sp in system.processes():
        assert sp.proc is not None
        procs["gateway" if sp is system.gateway else sp.name] = psutil.Process(sp.proc.pid)
    ours = {p.pid for p in procs.values()}
    me = psutil.Process()
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.pid not in ours and "java" in child.name():
                procs["kafka-broker"] = child
    procs["bench-client"] = me
    return procs


class ProcessMeter:
    """CPU seconds of each process between `start()` and `stop()`, and its peak RSS meanwhile
    (sampled every `interval_s` by `sample_until`), plus CPU used by everything else."""

    def __init__(self, procs: dict[str, psutil.Process], interval_s: float = 0.25) -> None:
        self.procs = procs
        self.interval_s = interval_s
        self._cpu0: dict[str, float] = {}
        self._cpu1: dict[str, float] = {}
        self._busy = (0.0, 0.0)
        self.peak_rss: dict[str, int] = dict.fromkeys(procs, 0)

    def start(self) -> None:
        self._cpu0 = {name: cpu_seconds(p) for name, p in self.procs.items()}
        self._busy = (machine_busy_seconds(), 0.0)
        self.sample()

    def stop(self) -> None:
        self._cpu1 = {name: cpu_seconds(p) for name, p in self.procs.items()}
        self._busy = (self._busy[0], machine_busy_seconds())

    def sample(self) -> None:
        for name, proc in self.procs.items():
            with contextlib.suppress(psutil.Error):
                self.peak_rss[name] = max(self.peak_rss[name], proc.memory_info().rss)

    async def sample_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)

    def cpu_s(self) -> dict[str, float]:
        return {name: self._cpu1[name] - self._cpu0[name] for name in self.procs}

    def cpu_sum(self, prefixes: tuple[str, ...] = TOKENBUS_PROCESSES) -> float:
        """CPU seconds of the processes whose names start with `prefixes` (default: the
        gateway and the inference workers)."""
        return sum(v for name, v in self.cpu_s().items() if name.startswith(prefixes) and v == v)

    def other_cpu_s(self) -> float:
        """CPU seconds the rest of the machine spent (other engineers' runs skew every number)."""
        ours = sum(v for v in self.cpu_s().values() if v == v)
        return self._busy[1] - self._busy[0] - ours

    def report(self) -> dict[str, dict[str, float]]:
        cpu = self.cpu_s()
        return {
            name: {
                "cpu_s": round(cpu[name], 3),
                "peak_rss_mb": round(self.peak_rss[name] / 2**20, 1),
            }
            for name in self.procs
        }


def log_problems(logs: Path, prefix: str) -> dict[str, dict[str, int]]:
    """Per service log: counts of warning/error events (and non-JSON lines, e.g. tracebacks)."""
    found: dict[str, dict[str, int]] = {}
    for path in sorted(logs.glob(f"{prefix}*.log")):
        counts: Counter[str] = Counter()
        for line in path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                if line.strip():
                    counts["<non-json line>"] += 1
                continue
            level = str(rec.get("level", "")).lower()
            if level in ("warning", "error", "critical", "exception"):
                counts[f"{level}: {str(rec.get('event'))[:80]}"] += 1
        found[path.name.removeprefix(prefix)] = dict(counts.most_common(12))
    return found
