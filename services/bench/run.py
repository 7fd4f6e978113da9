"""The benchmark run: broker, llmsim, workers and a gateway; every scenario; the results."""

import asyncio
import json
import os
import tempfile
import time
import uuid
from collections.abc import Coroutine
from dataclasses import asdict
from pathlib import Path
from typing import Any

from contracts.topics import TOPICS
from infra.kafka.find import session_broker
from services.bench.hop import kafka_hop_ms
from services.bench.kafka import OffsetCounter, wait_group_stable
from services.bench.load import Load, Target
from services.bench.measure import log_problems, raise_nofile
from services.bench.options import BenchOptions
from services.bench.report import progress_line
from services.bench.scenario import Probe, measure
from services.bench.stats import added, baseline, evaluate_targets
from services.bench.system import System

Row = dict[str, Any]


def run_bench(options: BenchOptions) -> Row:
    """Run every scenario and the coalescing sweep; write the JSON and plot if asked."""
    started = time.monotonic()
    nofile = raise_nofile()  # before the services start: they inherit it
    tmp = Path(tempfile.mkdtemp(prefix="tokenbus-bench-"))
    logs = options.logs or tmp / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:8]
    prefix = f"b{run_id}."
    with session_broker(tmp / "broker") as bootstrap:
        print(
            f"broker {bootstrap} ({time.monotonic() - started:.0f} s); logs in {logs}", flush=True
        )
        system = System(
            bootstrap,
            prefix,
            logs,
            llmsim_env={
                "TOKENBUS_LLMSIM_TTFT_MS": f"{options.ttft_ms:g}",
                "TOKENBUS_LLMSIM_TOKENS_PER_SECOND": f"{options.tokens_per_second:g}",
            },
            worker_env={
                "TOKENBUS_MAX_CONCURRENCY": str(options.max_concurrency),
                "TOKENBUS_GROUP_ID": f"{prefix}inference",  # no rebalances with other systems
                "TOKENBUS_COALESCE_MS": f"{options.coalesce_ms:g}",
                "TOKENBUS_COALESCE_BUSY_MS": f"{options.coalesce_busy_ms:g}",
            },
            llmsim_port=options.llmsim_port,
        )
        try:
            system.start(workers=options.workers)
            print(f"llmsim at {system.llmsim_url}/v1 (point --compare-url's gateway at it); "
                  f"tokenbus at {system.gateway_url}/v1", flush=True)  # fmt: skip
            result = _event_loop(_scenarios(system, options, run_id))
        finally:
            system.stop()
    result["config"] = {
        **{k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "cpus": os.cpu_count(),
        "rlimit_nofile": list(nofile),
        "topic_prefix": prefix,
        "logs": str(logs),
        "run_id": run_id,
    }
    result["log_problems"] = {k: v for k, v in log_problems(logs, prefix).items() if v}
    result["wall_s"] = round(time.monotonic() - started, 1)
    if options.json_path:
        options.json_path.parent.mkdir(parents=True, exist_ok=True)
        options.json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    if options.plot_path:
        from services.bench.plot import plot  # matplotlib is only needed here

        plot(result, options.plot_path)
    return result


def _event_loop(main: Coroutine[Any, Any, Row]) -> Row:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _targets(system: System, options: BenchOptions) -> dict[str, Target]:
    targets = {
        "direct": Target("direct", f"{system.llmsim_url}/v1", "llmsim-small"),
        "tokenbus": Target("tokenbus", f"{system.gateway_url}/v1", options.model),
    }
    if options.compare_url:
        key = {"Authorization": f"Bearer {options.compare_key}"} if options.compare_key else {}
        url = options.compare_url.rstrip("/")
        targets["compare"] = Target("compare", url, options.compare_model, key)
    return targets


async def _scenarios(system: System, options: BenchOptions, run_id: str) -> Row:
    topics = TOPICS.with_prefix(system.prefix)
    targets = _targets(system, options)
    extra = {f"compare-{pid}": pid for pid in options.compare_pids}
    async with OffsetCounter(system.bootstrap, topics.tokens.name, topics.tokens.partitions) as rec:
        probe = Probe(system, rec, extra)
        await _workers_ready(system, options.workers)
        hop = await kafka_hop_ms(system.bootstrap, system.prefix)
        print(f"kafka floor: one hop p50 {hop['p50']:.2f} p99 {hop['p99']:.2f} ms "
              f"(an answer's first token takes two)", flush=True)  # fmt: skip
        scenarios: list[Row] = []
        bases: dict[int, list[float]] = {}
        for c in options.concurrency:
            duration = options.idle_duration_s if c == 1 else options.duration_s
            load = Load(c, duration, options.warmup_s, options.max_tokens, f"{run_id}c{c}",
                        options.timeout_s)  # fmt: skip
            scenario: Row = {"concurrency": c, "duration_s": duration}
            for name, target in targets.items():
                row, arrivals = await measure(probe, target, load, bases.get(c))
                if name == "direct":
                    bases[c] = baseline(arrivals)
                else:
                    row["added_ms"] = added(row, scenario["direct"])
                row["path"] = name
                scenario[name] = row
                print(progress_line(c, name, row), flush=True)
            scenario["added_ms"] = {n: scenario[n]["added_ms"] for n in targets if n != "direct"}
            scenarios.append(scenario)
        sweep = await _sweep(system, options, probe, targets, scenarios, bases, run_id)
    return {
        "kafka_hop_ms": hop,
        "scenarios": scenarios,
        "coalescing_sweep": sweep,
        "targets": evaluate_targets(scenarios),
    }


async def _sweep(
    system: System,
    options: BenchOptions,
    probe: Probe,
    targets: dict[str, Target],
    scenarios: list[Row],
    bases: dict[int, list[float]],
    run_id: str,
) -> Row:
    """Added latency against broker messages/s for each coalescing window, at one
    concurrency; only the workers restart between points."""
    c = options.sweep_concurrency
    load = Load(c, options.duration_s, options.warmup_s, options.max_tokens, f"{run_id}s{c}",
                options.timeout_s)  # fmt: skip
    main = next((s for s in scenarios if s["concurrency"] == c), None)
    direct = main["direct"] if main else None
    if direct is None:
        direct, arrivals = await measure(probe, targets["direct"], load)
        bases[c] = baseline(arrivals)
        print(progress_line(c, "direct", direct), flush=True)
    points = []
    # The product's adaptive window first (the workers as they run), then each fixed window
    # (the same alone and busy), restarting only the workers between points.
    windows: list[float | None] = [None, *sorted(options.sweep_ms)]
    for ms in windows:
        if ms is None and main is not None:
            row = main["tokenbus"]
        else:
            if ms is not None:
                await asyncio.to_thread(
                    system.restart_workers,
                    TOKENBUS_COALESCE_MS=f"{ms:g}",
                    TOKENBUS_COALESCE_BUSY_MS=f"{ms:g}",
                )
                await _workers_ready(system, options.workers)
            row, _ = await measure(probe, targets["tokenbus"], load, bases[c])
            row["added_ms"] = added(row, direct)
            row["path"] = "tokenbus"
            label = "adaptive" if ms is None else f"{ms:g} ms"
            print(progress_line(c, f"tokenbus coalesce {label}", row), flush=True)
        points.append({
            "coalesce_ms": options.coalesce_ms if ms is None else ms,
            "coalesce_busy_ms": options.coalesce_busy_ms if ms is None else ms,
            "broker_messages_per_s": row.get("broker_records_per_s"),
            "broker_messages_per_request": _per(row.get("broker_records_per_s"), row),
            "added_ms": row["added_ms"],
            "itl_ms": row["itl_ms"],
            "requests_per_s": row["requests_per_s"],
            "tokenbus_cpu_ms_per_request": row.get("tokenbus_cpu_ms_per_request"),
            "errors": row["errors"],
            "mismatches": row["mismatches"],
        })  # fmt: skip
    return {"concurrency": c, "direct": direct, "points": points}


def _per(rate: float | None, row: Row) -> float | None:
    rps = row["requests_per_s"]
    return round(rate / rps, 1) if rate is not None and rps else None


async def _workers_ready(system: System, workers: int) -> None:
    """Wait until every worker holds partitions, so no rebalance lands inside a window."""
    if not await wait_group_stable(system.bootstrap, f"{system.prefix}inference", workers):
        print("warning: the workers' group is not stable after 60 s", flush=True)
