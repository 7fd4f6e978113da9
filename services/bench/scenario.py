"""One measured scenario: a closed-loop load on one target, with CPU, memory and broker load."""

import asyncio
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psutil

from services.bench.kafka import OffsetCounter
from services.bench.load import (
    MISMATCH,
    Load,
    LoadRun,
    Outcome,
    Target,
    check,
    closed_loop,
    expected_tokens,
)
from services.bench.measure import ProcessMeter, service_processes
from services.bench.stats import added_token_latency, dist_ms
from services.bench.system import System

Row = dict[str, Any]


@dataclass
class Probe:
    """What is measured besides the client: the system's processes, extra processes (e.g. a
    gateway to compare with) by pid, and the tokens topic's end offsets."""

    system: System
    records: OffsetCounter | None = None
    extra_pids: dict[str, int] = field(default_factory=dict)

    def processes(self) -> dict[str, psutil.Process]:
        procs = service_processes(self.system)
        for name, pid in self.extra_pids.items():
            procs[name] = psutil.Process(pid)
        return procs


async def measure(
    probe: Probe, target: Target, load: Load, base: list[float] | None = None
) -> tuple[Row, list[list[float]]]:
    """Run `load` against `target`; the row of results and the token arrivals of the requests
    sent in the window. `base` (the direct path's median token arrivals) adds token latency."""
    meter = ProcessMeter(probe.processes())
    stop = asyncio.Event()
    records: list[int] = []
    sampling: list[asyncio.Task[None]] = []
    counter = probe.records if target.name == "tokenbus" else None

    async def on_t0() -> None:
        if counter is not None:
            records.append(await counter.total())
        meter.start()
        sampling.append(asyncio.create_task(meter.sample_until(stop)))

    async def on_t1() -> None:
        meter.stop()
        stop.set()
        if counter is not None:
            records.append(await counter.total())

    run = await closed_loop(target, load, on_t0, on_t1)
    await asyncio.gather(*sampling)
    outcomes = [check(s, expected_tokens(s, load.max_tokens)) for s in run.streams]
    row = summarise(run, outcomes, load.max_tokens)
    row["processes"] = meter.report()
    row["other_cpu_pct"] = round(
        meter.other_cpu_s() / load.duration_s / (os.cpu_count() or 1) * 100
    )
    completed = row["completed"]
    if target.name == "tokenbus":
        row["tokenbus_cpu_ms_per_request"] = _per_request(meter.cpu_sum(), completed)
        if len(records) == 2:
            row["broker_records_per_s"] = round((records[1] - records[0]) / load.duration_s, 1)
    elif target.name == "compare" and probe.extra_pids:
        row["compare_cpu_ms_per_request"] = _per_request(meter.cpu_sum(("compare",)), completed)
    arrivals = [o.arrivals for o in outcomes if o.ok and run.t0 <= o.t_send < run.t1]
    if base is not None:
        row["token_added_ms"] = dist_ms(added_token_latency(arrivals, base))
    return row, arrivals


def _per_request(cpu_s: float, requests: int) -> float:
    return round(cpu_s * 1000 / requests, 3) if requests else math.nan


def summarise(run: LoadRun, outcomes: list[Outcome], max_tokens: int) -> Row:
    """Counts over every request of the scenario (warm-up and drain too); latencies over the
    requests sent in the window; throughput over the requests completed in it."""
    duration = run.t1 - run.t0
    timed = [o for o in outcomes if o.ok and run.t0 <= o.t_send < run.t1]
    done = sum(1 for o in outcomes if o.ok and run.t0 <= o.t_end < run.t1)
    reasons = Counter(o.reason for o in outcomes if not o.ok)
    return {
        "requests": len(outcomes),
        "ok": sum(1 for o in outcomes if o.ok),
        "errors": sum(n for why, n in reasons.items() if why != MISMATCH),
        "mismatches": reasons[MISMATCH],
        "error_reasons": dict(reasons.most_common(8)),
        "ttft_ms": dist_ms(o.ttft for o in timed if o.ttft is not None),
        "itl_ms": dist_ms(gap for o in timed for gap in o.gaps),
        "duration_ms": dist_ms(o.t_end - o.t_send for o in timed),
        "completed": done,
        "requests_per_s": round(done / duration, 2),
        "tokens_per_s": round(done * max_tokens / duration, 1),
        "peak_streams": run.peak_inflight,
    }
