"""`make soak`: the mixed load at a steady rate for a long time, on a system of two gateway
nodes, two workers, llmsim and analytics. It reports requests, outcomes by kind, text and
resume mismatches (must be 0), usage in the database against what the clients were told (must
be equal, each request stored once), and every process's RSS and open file descriptors over
time with their slopes, as JSON and a plot.

The rate defaults to half the benchmark's measured maximum (docs/bench/latest.json)."""

import argparse
import asyncio
import itertools
import json
import tempfile
import time
import uuid
from collections import Counter
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import select

from infra.kafka.find import session_broker
from services.analytics.store import usage
from services.bench.measure import raise_nofile, service_processes
from services.bench.mixed import KINDS, OK, Done, Nodes, run_one
from services.bench.system import System
from services.common.database import make_engine

BENCH_RESULT = Path(__file__).resolve().parents[2] / "docs" / "bench" / "latest.json"
# Of every 10 requests: what apps mostly send, and the rarer paths often enough to count.
MIX: tuple[str, ...] = ("chat_stream",) * 3 + ("chat", "responses", "websocket") * 2
MIX += ("resume", "cancel")


@dataclass
class SoakOptions:
    duration_s: float = 600.0
    rate: float | None = None  # requests/s; None: half the benchmark's maximum
    sample_s: float = 5.0
    max_tokens: int = 24
    tokens_per_second: float = 100.0
    json_path: Path | None = None
    plot_path: Path | None = None
    logs: Path | None = None
    bootstrap: str | None = None  # a running broker (else one of its own)


Sample = tuple[float, float, int, int, int]  # s since start, RSS MiB, fds, clients', Kafka's


@dataclass
class Samples:
    """Per process: RSS and open fds, and of those fds the TCP connections clients hold to
    its port (a client's keep-alive pool, not the process's doing) and those to the broker."""

    ports: dict[str, int]  # the port each service listens on
    broker_port: int
    series: dict[str, list[Sample]] = field(default_factory=dict)

    def take(self, procs: dict[str, psutil.Process], t: float) -> None:
        for name, proc in procs.items():
            try:
                rss, fds = proc.memory_info().rss / 2**20, proc.num_fds()
                conns = proc.net_connections(kind="tcp")
            except psutil.Error:
                continue
            port = self.ports.get(name)
            inbound = sum(1 for c in conns if c.raddr and c.laddr.port == port)
            kafka = sum(1 for c in conns if c.raddr and c.raddr.port == self.broker_port)
            sample = (round(t, 1), round(rss, 1), fds, inbound, kafka)
            self.series.setdefault(name, []).append(sample)


def half_the_benchmark(path: Path = BENCH_RESULT) -> float:
    """Half the highest requests/s tokenbus sustained, error-free, in the last benchmark."""
    scenarios = json.loads(path.read_text())["scenarios"]
    best = max(
        s["tokenbus"]["requests_per_s"]
        for s in scenarios
        if "tokenbus" in s and not s["tokenbus"]["errors"] + s["tokenbus"]["mismatches"]
    )
    return round(best / 2, 1)


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value), per minute (0 with fewer than 3 points)."""
    if len(points) < 3:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    return 0.0 if var == 0 else 60 * sum((t - mx) * (v - my) for t, v in points) / var


def growth(series: list[Sample]) -> dict[str, float]:
    """Slopes over the whole run and over its second half (where growth must have levelled);
    `own_fds` are the fds less the connections clients hold to the process."""
    half = series[len(series) // 2 :]

    def slope(points: list[Sample], value: int) -> float:
        return round(slope_per_min([(p[0], p[value]) for p in points]), 3)

    own = [(t, 0.0, f - inbound, 0, 0) for t, _, f, inbound, _ in series]
    return {
        "rss_mib_first": series[0][1],
        "rss_mib_last": series[-1][1],
        "rss_mib_per_min": slope(series, 1),
        "rss_mib_per_min_2nd_half": slope(half, 1),
        "fds_first": series[0][2],
        "fds_last": series[-1][2],
        "fds_per_min": slope(series, 2),
        "fds_per_min_2nd_half": slope(half, 2),
        "client_sockets_last": series[-1][3],
        "kafka_connections_first": series[0][4],
        "kafka_connections_last": series[-1][4],
        "own_fds_first": own[0][2],
        "own_fds_last": own[-1][2],
        "own_fds_per_min_2nd_half": slope(own[len(own) // 2 :], 2),
    }


async def _drive(nodes: Nodes, rate: float, duration_s: float) -> list[Done]:
    """Open loop: a request every 1/rate s, whatever the earlier ones are doing."""
    kinds = itertools.cycle(MIX)
    tasks: list[asyncio.Task[Done]] = []
    start = time.monotonic()
    for n in itertools.count():
        due = start + n / rate
        if due - start >= duration_s:
            break
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        tasks.append(asyncio.create_task(run_one(next(kinds), nodes, n)))
    return list(await asyncio.gather(*tasks))


async def _sample(
    procs: dict[str, psutil.Process], samples: Samples, every_s: float, stop: asyncio.Event
) -> None:
    start = time.monotonic()
    while not stop.is_set():
        samples.take(procs, time.monotonic() - start)
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except TimeoutError:
            pass
    samples.take(procs, time.monotonic() - start)


async def _stored(database_url: str) -> list[Any]:
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            query = select(usage.c.request_id, usage.c.total_tokens, usage.c.status)
            return list(await conn.execute(query))
    finally:
        await engine.dispose()


async def reconcile(done: list[Done], database_url: str, within_s: float = 60) -> dict[str, Any]:
    """Wait for analytics to hold every answered request, then compare with the clients."""
    ids = {d.request_id for d in done if d.request_id and d.outcome == OK}
    deadline = time.monotonic() + within_s
    while True:
        rows = await _stored(database_url)
        stored = {row.request_id for row in rows}
        if ids <= stored or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    per_request = Counter(row.request_id for row in rows)
    by_id = {row.request_id: row for row in rows}
    told = {d.request_id: d.total_tokens for d in done if d.request_id in ids and d.total_tokens}
    missing = ids - stored
    return {
        "requests_answered": len(ids),
        "missing": len(missing),
        "missing_by_kind": dict(Counter(d.kind for d in done if d.request_id in missing)),
        "missing_examples": sorted(missing)[:5],
        "stored_twice": sum(1 for n in per_request.values() if n > 1),
        "status_differs": sum(
            1
            for d in done
            if d.request_id in by_id and d.outcome == OK and by_id[d.request_id].status != d.status
        ),
        "tokens_told_to_clients": sum(told.values()),
        "tokens_in_database": sum(by_id[r].total_tokens for r in told if r in by_id),
    }


def summarize(done: list[Done], wall_s: float) -> dict[str, Any]:
    outcomes: dict[str, Counter[str]] = {kind: Counter() for kind in KINDS}
    for d in done:
        outcomes[d.kind][d.outcome] += 1
    errors = Counter(d.outcome for d in done if d.outcome not in (OK, "mismatch"))
    errors.pop("resume_mismatch", None)
    return {
        "requests": len(done),
        "requests_per_s": round(len(done) / wall_s, 2),
        "ok": sum(1 for d in done if d.outcome == OK),
        "mismatches": sum(1 for d in done if d.outcome == "mismatch"),
        "resume_mismatches": sum(1 for d in done if d.outcome == "resume_mismatch"),
        "errors_by_kind": dict(errors),
        "cancelled": sum(1 for d in done if d.outcome == OK and d.status == "cancelled"),
        "by_kind": {kind: dict(c) for kind, c in outcomes.items()},
    }


def run_soak(options: SoakOptions) -> dict[str, Any]:
    raise_nofile()
    rate = options.rate or half_the_benchmark()
    tmp = Path(tempfile.mkdtemp(prefix="tokenbus-soak-"))
    logs = options.logs or tmp / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    prefix = f"soak{uuid.uuid4().hex[:8]}."
    database_url = f"sqlite+aiosqlite:///{logs / prefix}analytics.db"
    given = options.bootstrap
    with session_broker(tmp / "broker") if given is None else nullcontext(given) as bootstrap:
        system = System(
            bootstrap,
            prefix,
            logs,
            llmsim_env={
                "TOKENBUS_LLMSIM_TTFT_MS": "50",
                "TOKENBUS_LLMSIM_TOKENS_PER_SECOND": f"{options.tokens_per_second:g}",
            },
            worker_env={"TOKENBUS_GROUP_ID": f"{prefix}inference"},
            gateway_env={"TOKENBUS_DISCONNECT_GRACE_S": "30"},
        )
        try:
            system.start(workers=2, gateways=2)
            system.start_analytics(database_url)
            procs = service_processes(system)
            ports = {
                "gateway" if p is system.gateway else p.name: p.port for p in system.processes()
            }
            for proc in system.analytics:
                assert proc.proc is not None
                procs[proc.name] = psutil.Process(proc.proc.pid)
                ports[proc.name] = proc.port
            broker_port = int(bootstrap.split(",")[0].rsplit(":", 1)[1])
            nodes = Nodes(
                system.gateways[0].url, system.gateways[1].url, max_tokens=options.max_tokens
            )  # its clients are opened in the soak's own event loop
            print(f"soak: {rate:g} requests/s for {options.duration_s:g} s; logs in {logs}")
            result = asyncio.run(
                _soak(nodes, rate, options, procs, ports, broker_port, database_url)
            )
        finally:
            for proc in system.analytics:
                proc.stop()
            system.stop()
    result["config"] = {
        **{k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "rate": rate,
        "prefix": prefix,
        "logs": str(logs),
    }
    if options.json_path:
        options.json_path.parent.mkdir(parents=True, exist_ok=True)
        options.json_path.write_text(json.dumps(result, indent=2) + "\n")
    if options.plot_path:
        from services.bench.plot import plot_soak  # matplotlib is only needed here

        plot_soak(result, options.plot_path)
    return result


async def _soak(
    nodes: Nodes,
    rate: float,
    options: SoakOptions,
    procs: dict[str, psutil.Process],
    ports: dict[str, int],
    broker_port: int,
    database_url: str,
) -> dict[str, Any]:
    samples, stop = Samples(ports, broker_port), asyncio.Event()
    sampling = asyncio.create_task(_sample(procs, samples, options.sample_s, stop))
    started = time.monotonic()
    async with nodes:
        done = await _drive(nodes, rate, options.duration_s)
    drained_s = time.monotonic() - started - options.duration_s
    stop.set()
    await sampling
    result = summarize(done, options.duration_s)
    result["last_answers_after_s"] = round(drained_s, 1)  # the tail once sending stopped
    result["usage"] = await reconcile(done, database_url)
    result["processes"] = {name: growth(s) for name, s in samples.series.items() if s}
    result["samples"] = samples.series
    return result


def clean(result: dict[str, Any]) -> bool:
    """No mismatch, no error, usage exact."""
    u = result["usage"]
    return (
        result["mismatches"] == result["resume_mismatches"] == 0
        and not result["errors_by_kind"]
        and u["missing"] == u["stored_twice"] == u["status_differs"] == 0
        and u["tokens_told_to_clients"] == u["tokens_in_database"]
    )


def table(result: dict[str, Any]) -> str:
    u = result["usage"]
    lines = [
        "| measure | value |",
        "|---|---|",
        f"| requests | {result['requests']} ({result['requests_per_s']}/s) |",
        f"| ok | {result['ok']} (of which cancelled on purpose: {result['cancelled']}) |",
        f"| errors by kind | {result['errors_by_kind'] or 0} |",
        f"| text mismatches | {result['mismatches']} |",
        f"| resumes not joined exactly | {result['resume_mismatches']} |",
        f"| usage rows missing / stored twice | {u['missing']} / {u['stored_twice']} |",
        f"| usage status unlike the client's (ok / cancelled) | {u['status_differs']} |",
        f"| tokens: clients / database | {u['tokens_told_to_clients']} / "
        f"{u['tokens_in_database']} |",
        "",
        "| process | RSS MiB first → last | MiB/min (2nd half) | fds first → last "
        "| of which clients' sockets, at the end | Kafka connections | own fds first → last "
        "| own fds/min (2nd half) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, g in sorted(result["processes"].items()):
        lines.append(
            f"| {name} | {g['rss_mib_first']} → {g['rss_mib_last']} | "
            f"{g['rss_mib_per_min']} ({g['rss_mib_per_min_2nd_half']}) | "
            f"{g['fds_first']} → {g['fds_last']} | {g['client_sockets_last']} | "
            f"{g['kafka_connections_first']} → {g['kafka_connections_last']} | "
            f"{g['own_fds_first']} → {g['own_fds_last']} | {g['own_fds_per_min_2nd_half']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m services.bench.soak", description=__doc__)
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load (600)")
    p.add_argument("--rate", type=float, help="requests/s (half the benchmark's maximum)")
    p.add_argument("--sample", type=float, default=5.0, help="seconds between samples (5)")
    p.add_argument("--json", type=Path, help="write the result here")
    p.add_argument("--plot", type=Path, help="write a PNG plot here")
    p.add_argument("--logs", type=Path, help="service logs folder (default: a temporary one)")
    args = p.parse_args(argv)
    options = SoakOptions(
        duration_s=args.duration,
        rate=args.rate,
        sample_s=args.sample,
        json_path=args.json,
        plot_path=args.plot,
        logs=args.logs,
    )
    result = run_soak(options)
    print(table(result))
    return 0 if clean(result) else 1


if __name__ == "__main__":
    raise SystemExit(main())
