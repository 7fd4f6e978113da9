"""Fan-out benchmark: hold N concurrent SSE streams on ONE gateway node and measure it.

    python -m tests.benchmarks.fanout_streams --streams 1000 --workers 2 --ramp 5

Starts (or reuses, via KAFKA_BOOTSTRAP_SERVERS) a Kafka broker, then llmsim, the inference
workers and one gateway as real processes (services.bench.system.System), and opens `--streams`
streaming chat completions, spread over `--ramp` seconds. It reports:

- errors: streams that did not end with `data: [DONE]` and exactly llmsim's deterministic text;
- gateway memory per connection: gateway RSS at peak concurrency minus RSS before the load;
- delivery lag p50/p95/p99: client receive time of each delta frame minus the Kafka record
  timestamp (producer CreateTime) of that event on the tokens topic;
- time to first token, streams/s completed, CPU seconds of every process during the load;
- where the time went per stream (from Kafka record timestamps): client send -> ChatRequested
  record -> worker's `started` -> first delta -> last delta -> `completed`; and how busy the
  whole machine was (other processes on it skew every number).

Kafka timestamps are read after the load (the run's topics are fresh, so reading them from
the beginning sees exactly this run's events), so the measuring consumer does not compete
for CPU with the system under test; the timestamps are the same ones a live consumer sees.

The client is cheap on purpose: raw `httpx` streams whose chunks are only timestamped and kept;
SSE parsing and checks happen after the load. Streams are sharded over several AsyncClients
(`--clients`), since one httpcore pool holding ~1000 connections costs O(connections x
requests) per request start/end and stalls the client's own event loop for seconds.

Not a test: pytest does not collect this file (no `test_` prefix, no test functions).
"""

import argparse
import asyncio
import json
import math
import os
import resource
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts.topics import TOPICS
from infra.kafka.find import session_broker
from services.bench.client import (
    STREAMS_PER_CLIENT,
    Stream,
    StreamCounters,
    chat_body,
    chunk_content,
    failure,
    http_clients,
    parse_frames,
    run_stream,
    unfinished_reason,
)
from services.bench.measure import (
    cpu_seconds,
    log_problems,
    machine_busy_seconds,
    raise_nofile,
    service_processes,
)
from services.bench.stats import quantile
from services.bench.system import System
from services.llmsim.text import answer_tokens

LLMSIM_DEFAULT_MAX_TOKENS = 64  # llmsim's default_max_tokens; only used when max_tokens is unset
WARMUP_STREAMS = 4
BUDGET_S = 280.0  # the whole run (broker, services, load, analysis) stays under 5 minutes


def llmsim_env(args: argparse.Namespace) -> dict[str, str]:
    return {
        "TOKENBUS_LLMSIM_TTFT_MS": f"{args.ttft_ms:g}",
        "TOKENBUS_LLMSIM_TOKENS_PER_SECOND": f"{args.tps:g}",
    }


# --------------------------------------------------------------------------- client side


@dataclass
class LoadState(StreamCounters):
    """Counters the sampler reads while the load runs."""

    peak_inflight: int = 0
    t_peak: float = 0.0
    rss_at_peak: int = 0
    rss_max: int = 0
    timeline: list[tuple[float, int, int, int]] = field(default_factory=list)
    loop_lags: list[float] = field(default_factory=list)  # sampler wake-up delay (client load)
    cpu_timeline: list[dict[str, float]] = field(default_factory=list)  # % of one core, per 1 s


def prompt(run_id: str, i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"bench {run_id} stream {i}: say something about {i}"}]


async def ramped(
    delay: float,
    client: httpx.AsyncClient,
    s: Stream,
    model: str,
    max_tokens: int,
    state: LoadState,
) -> None:
    """Start the stream after `delay` (the coroutine is created only then)."""
    await asyncio.sleep(delay)
    await run_stream(client, s, chat_body(s.messages, model, max_tokens), state)


async def sampler(state: LoadState, procs: dict[str, psutil.Process], stop: asyncio.Event) -> None:
    """Every 100 ms: gateway RSS (and its value when client concurrency peaks); every 1 s the
    CPU use of each process; and how late the sampler wakes (the client's own event-loop lag)."""
    gateway = procs["gateway"]
    t_start = last_cpu_t = time.time()
    last_cpu = {name: cpu_seconds(p) for name, p in procs.items()}
    expected_wake = t_start
    while not stop.is_set():
        now = time.time()
        state.loop_lags.append(max(0.0, now - expected_wake))
        if now - last_cpu_t >= 1.0:
            cpu = {name: cpu_seconds(p) for name, p in procs.items()}
            row = {n: round((cpu[n] - last_cpu[n]) / (now - last_cpu_t) * 100) for n in cpu}
            state.cpu_timeline.append({"t": round(now - t_start, 1), **row})
            last_cpu, last_cpu_t = cpu, now
        try:
            rss = gateway.memory_info().rss
        except psutil.Error:
            return
        state.rss_max = max(state.rss_max, rss)
        if state.inflight > state.peak_inflight:
            state.peak_inflight, state.t_peak, state.rss_at_peak = state.inflight, time.time(), rss
        elif state.inflight == state.peak_inflight and rss > state.rss_at_peak:
            state.rss_at_peak = rss
        state.timeline.append((time.time(), state.inflight, state.open, rss))
        expected_wake = time.time() + 0.1
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except TimeoutError:
            pass


# --------------------------------------------------------------------------- processes


# --------------------------------------------------------------------------- Kafka timestamps


async def read_records(
    bootstrap: str, topic: str, partitions: int, timeout_s: float
) -> list[tuple[bytes | None, bytes | None, int, int]]:
    """Every record of `topic` from the beginning: (key, value, timestamp ms, timestamp type)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    out: list[tuple[bytes | None, bytes | None, int, int]] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while True:
            positions = {tp: await consumer.position(tp) for tp in tps}
            if all(positions[tp] >= end[tp] for tp in tps):
                break
            if time.monotonic() > deadline:
                print(f"warning: {topic} read stopped at {positions} of {end}", file=sys.stderr)
                break
            batches = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            for records in batches.values():
                out.extend((r.key, r.value, r.timestamp, r.timestamp_type) for r in records)
    finally:
        await consumer.stop()
    return out


async def read_timestamps(
    bootstrap: str, prefix: str, timeout_s: float
) -> tuple[dict[tuple[str, int], tuple[int, str]], dict[str, int], Counter[int]]:
    """Tokens topic: (request_id, seq) -> (record timestamp ms, event type); requests topic:
    request_id -> record timestamp ms; and the count of each timestamp type seen."""
    topics = TOPICS.with_prefix(prefix)
    stamps: dict[tuple[str, int], tuple[int, str]] = {}
    ts_types: Counter[int] = Counter()
    for key, value, ts, ts_type in await read_records(
        bootstrap, topics.tokens.name, topics.tokens.partitions, timeout_s
    ):
        if key is None or value is None:
            continue
        event = json.loads(value)
        ts_types[ts_type] += 1
        stamps.setdefault((key.decode(), event["seq"]), (ts, event["type"]))
    requested: dict[str, int] = {}
    for key, _, ts, _ in await read_records(
        bootstrap, topics.requests.name, topics.requests.partitions, timeout_s
    ):
        if key is not None:
            requested.setdefault(key.decode(), ts)
    return stamps, requested, ts_types


# --------------------------------------------------------------------------- analysis


@dataclass
class Verdict:
    ok: bool
    reason: str
    ttft: float | None
    lags: list[float]
    missing_stamps: int


def judge(s: Stream, expected: str, stamps: dict[tuple[str, int], tuple[int, str]]) -> Verdict:
    """ok = HTTP 200, ends with [DONE], one request id throughout, and exactly `expected`."""
    if why := failure(s):
        return Verdict(False, why, None, [], 0)
    frames, rest = parse_frames(s.chunks)
    if not frames or frames[-1][2] != b"[DONE]":
        return Verdict(False, unfinished_reason(frames, rest), None, [], 0)
    parts: list[str] = []
    ttft: float | None = None
    lags: list[float] = []
    missing = 0
    rid = s.request_id
    for t, seq, data in frames[:-1]:
        chunk_id, content = chunk_content(data)
        rid = rid or chunk_id
        if chunk_id != rid:
            return Verdict(False, "chunk id differs from x-request-id", None, [], 0)
        if not content:
            continue
        parts.append(content)
        if ttft is None:
            ttft = t - s.t_send
        stamp = stamps.get((rid, seq)) if seq is not None and rid else None
        if stamp is None or stamp[1] != "delta":
            missing += 1
        else:
            lags.append(t - stamp[0] / 1000)
    if "".join(parts) != expected:
        return Verdict(False, "text differs from llmsim's answer", ttft, lags, missing)
    return Verdict(True, "ok", ttft, lags, missing)


def phase_breakdown(
    streams: list[Stream],
    stamps: dict[tuple[str, int], tuple[int, str]],
    requested: dict[str, int],
) -> dict[str, dict[str, float]]:
    """Where each stream's time went, from its Kafka record timestamps (p50/p99, seconds):
    client send -> gateway produces ChatRequested; -> worker's `started`; `started` -> first
    delta (backend TTFT); first -> last delta (generation pace); last delta -> `completed`."""
    phases: dict[str, list[float]] = {
        "send_to_request_record": [],
        "request_record_to_started": [],
        "started_to_first_delta": [],
        "first_to_last_delta": [],
        "last_delta_to_completed": [],
    }
    for s in streams:
        if not s.request_id or (s.request_id, 0) not in stamps:
            continue
        events = []
        seq = 0
        while (stamp := stamps.get((s.request_id, seq))) is not None:
            events.append((stamp[0] / 1000, stamp[1]))
            seq += 1
        deltas = [t for t, kind in events if kind == "delta"]
        started = next((t for t, kind in events if kind == "started"), None)
        done = next((t for t, kind in events if kind in ("completed", "failed")), None)
        if started is None or not deltas:
            continue
        if (req := requested.get(s.request_id)) is not None:
            phases["send_to_request_record"].append(req / 1000 - s.t_send)
            phases["request_record_to_started"].append(started - req / 1000)
        phases["started_to_first_delta"].append(deltas[0] - started)
        phases["first_to_last_delta"].append(deltas[-1] - deltas[0])
        if done is not None:
            phases["last_delta_to_completed"].append(done - deltas[-1])
    out = {}
    for name, values in phases.items():
        values.sort()
        out[name] = {"p50": quantile(values, 0.5), "p99": quantile(values, 0.99), "n": len(values)}
    return out


# --------------------------------------------------------------------------- the run


async def load(
    system: System, args: argparse.Namespace, run_id: str, deadline: float
) -> dict[str, Any]:
    """Warm up, run the ramped load, read Kafka timestamps, and compute the results."""
    n = args.streams
    procs = service_processes(system)
    gateway = procs["gateway"]
    n_clients = args.clients or max(1, math.ceil(n / STREAMS_PER_CLIENT))
    async with http_clients(system.gateway_url, n, args.timeout, n_clients) as clients:
        client = clients[0]
        # Warm-up (not measured): imports, Kafka metadata, first connections.
        warm_state = LoadState()
        warm = [Stream(-1 - i, prompt(run_id + "-warmup", i)) for i in range(WARMUP_STREAMS)]
        await asyncio.wait_for(
            asyncio.gather(
                *(
                    run_stream(
                        client, s, chat_body(s.messages, args.model, args.tokens), warm_state
                    )
                    for s in warm
                )
            ),
            60,
        )
        warm_errors = [s.error or s.status for s in warm if s.error or s.status != 200]
        if warm_errors:
            raise RuntimeError(f"warm-up failed: {warm_errors}")
        await asyncio.sleep(1.0)

        rss_before = gateway.memory_info().rss
        cpu_before = {name: cpu_seconds(p) for name, p in procs.items()}
        busy_before = machine_busy_seconds()
        streams = [Stream(i, prompt(run_id, i)) for i in range(n)]
        state = LoadState()
        stop = asyncio.Event()
        sampling = asyncio.create_task(sampler(state, procs, stop))
        t0 = time.time()
        step = args.ramp / n if n else 0.0
        tasks = [
            asyncio.create_task(
                ramped(i * step, clients[i % n_clients], s, args.model, args.tokens, state)
            )
            for i, s in enumerate(streams)
        ]
        # Bounded: never past the run's budget (minus time to analyse and stop everything).
        budget_left = deadline - time.monotonic() - 45
        _, pending = await asyncio.wait(
            tasks, timeout=max(args.ramp + 5, min(args.ramp + args.timeout, budget_left))
        )
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=10)
        t1 = time.time()
        stop.set()
        await sampling
        cpu_after = {name: cpu_seconds(p) for name, p in procs.items()}
        busy_after = machine_busy_seconds()
        rss_after = gateway.memory_info().rss

    stamps, requested, ts_types = await read_timestamps(
        system.bootstrap, system.prefix, timeout_s=30
    )

    reasons: Counter[str] = Counter()
    examples: dict[str, str] = {}
    ttfts: list[float] = []
    lags: list[float] = []
    missing = 0
    ok_ends: list[float] = []
    for s in streams:
        expected = "".join(answer_tokens(s.messages, args.tokens, LLMSIM_DEFAULT_MAX_TOKENS))
        v = judge(s, expected, stamps)
        reasons[v.reason] += 1
        if not v.ok:
            examples.setdefault(v.reason, f"stream {s.index} rid={s.request_id} {s.error or ''}")
        else:
            ok_ends.append(s.t_end)
        if v.ttft is not None:
            ttfts.append(v.ttft)
        lags.extend(v.lags)
        missing += v.missing_stamps
    ttfts.sort()
    lags.sort()
    phases = phase_breakdown(streams, stamps, requested)
    errors = n - reasons.get("ok", 0)
    ok = reasons.get("ok", 0)
    span = (max(ok_ends) - t0) if ok_ends else math.nan
    durations = sorted(s.t_end - s.t_send for s in streams if s.t_end and s.t_send)
    to_headers = sorted(s.t_headers - s.t_send for s in streams if s.t_headers)
    loop_lags = sorted(state.loop_lags)
    peak = state.peak_inflight
    cpu = {name: cpu_after[name] - cpu_before[name] for name in procs}
    return {
        "config": {
            "streams": n,
            "workers": args.workers,
            "ramp_s": args.ramp,
            "max_tokens": args.tokens,
            "model": args.model,
            "http_clients": n_clients,
            "timeout_s": args.timeout,
            "llmsim_env": llmsim_env(args),
            "worker_env": {"TOKENBUS_MAX_CONCURRENCY": str(args.max_concurrency)},
            "cpus": os.cpu_count(),
            "rlimit_nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
            "topic_prefix": system.prefix,
            "logs": str(system.logs),
        },
        "errors": errors,
        "ok": ok,
        "outcomes": dict(reasons.most_common()),
        "error_examples": examples,
        "load_wall_s": t1 - t0,
        "completed_span_s": span,
        "streams_per_s": ok / span if ok and span == span else 0.0,
        "stream_duration_s": {
            "p50": quantile(durations, 0.5),
            "p99": quantile(durations, 0.99),
            "max": durations[-1] if durations else math.nan,
        },
        "time_to_headers_s": {
            "p50": quantile(to_headers, 0.5),
            "p99": quantile(to_headers, 0.99),
        },
        "client_loop_lag_ms": {
            "p50": quantile(loop_lags, 0.5) * 1000,
            "p99": quantile(loop_lags, 0.99) * 1000,
            "max": loop_lags[-1] * 1000 if loop_lags else math.nan,
        },
        "phases_s": phases,
        "peak_concurrent_streams": peak,
        "peak_at_s": state.t_peak - t0 if state.t_peak else math.nan,
        "gateway_rss_before_mb": rss_before / 2**20,
        "gateway_rss_at_peak_mb": state.rss_at_peak / 2**20,
        "gateway_rss_max_mb": state.rss_max / 2**20,
        "gateway_rss_after_mb": rss_after / 2**20,
        "gateway_kib_per_connection": (
            (state.rss_at_peak - rss_before) / peak / 1024 if peak else math.nan
        ),
        "gateway_kib_per_stream_max_rss_over_n": (state.rss_max - rss_before) / n / 1024,
        "ttft_s": {"p50": quantile(ttfts, 0.5), "p99": quantile(ttfts, 0.99), "n": len(ttfts)},
        "lag_ms": {
            "p50": quantile(lags, 0.5) * 1000,
            "p95": quantile(lags, 0.95) * 1000,
            "p99": quantile(lags, 0.99) * 1000,
            "max": lags[-1] * 1000 if lags else math.nan,
            "min": lags[0] * 1000 if lags else math.nan,
            "n": len(lags),
            "delta_frames_without_kafka_stamp": missing,
            "kafka_timestamp_types": {
                ("CreateTime" if k == 0 else "LogAppendTime" if k == 1 else str(k)): v
                for k, v in ts_types.items()
            },
        },
        "cpu_s": cpu,
        "cpu_s_total_services": sum(
            v for k, v in cpu.items() if k not in ("bench-client",) and v == v
        ),
        "machine_busy_pct": (busy_after - busy_before) / ((t1 - t0) * (os.cpu_count() or 1)) * 100,
        "cpu_s_outside_benchmark": (busy_after - busy_before)
        - sum(v for v in cpu.values() if v == v),
        "cpu_utilisation_of_machine": (
            sum(v for v in cpu.values() if v == v) / ((t1 - t0) * (os.cpu_count() or 1))
        ),
        "timeline": [
            {"t": round(t - t0, 2), "inflight": a, "open": o, "rss_mb": round(r / 2**20, 1)}
            for t, a, o, r in state.timeline[:: max(1, len(state.timeline) // 200)]
        ],
        "cpu_timeline_pct": state.cpu_timeline,
        "log_problems": log_problems(system.logs, system.prefix),
    }


def table(r: dict[str, Any]) -> str:
    c = r["config"]
    lag = r["lag_ms"]
    rows = [
        (
            "streams / workers / ramp / clients",
            f"{c['streams']} / {c['workers']} / {c['ramp_s']} s / {c['http_clients']} httpx",
        ),
        (
            "max_tokens, llmsim pace",
            f"{c['max_tokens']}, TTFT {c['llmsim_env']['TOKENBUS_LLMSIM_TTFT_MS']} ms, "
            f"{c['llmsim_env']['TOKENBUS_LLMSIM_TOKENS_PER_SECOND']} tok/s",
        ),
        ("errors (not [DONE] + exact text)", f"{r['errors']}  {r['outcomes']}"),
        ("peak concurrent streams", f"{r['peak_concurrent_streams']} at t={r['peak_at_s']:.1f} s"),
        (
            "gateway RSS before / at peak / max",
            f"{r['gateway_rss_before_mb']:.1f} / {r['gateway_rss_at_peak_mb']:.1f} / "
            f"{r['gateway_rss_max_mb']:.1f} MiB",
        ),
        ("gateway memory per connection", f"{r['gateway_kib_per_connection']:.1f} KiB"),
        (
            "delivery lag p50 / p95 / p99",
            f"{lag['p50']:.1f} / {lag['p95']:.1f} / {lag['p99']:.1f} ms "
            f"(max {lag['max']:.0f}, n={lag['n']})",
        ),
        (
            "TTFT p50 / p99",
            f"{r['ttft_s']['p50'] * 1000:.0f} / {r['ttft_s']['p99'] * 1000:.0f} ms",
        ),
        (
            "time to response headers p50 / p99",
            f"{r['time_to_headers_s']['p50'] * 1000:.0f} / "
            f"{r['time_to_headers_s']['p99'] * 1000:.0f} ms",
        ),
        (
            "client event-loop lag p50 / p99 / max",
            f"{r['client_loop_lag_ms']['p50']:.0f} / {r['client_loop_lag_ms']['p99']:.0f} / "
            f"{r['client_loop_lag_ms']['max']:.0f} ms",
        ),
        (
            "stream duration p50 / p99",
            f"{r['stream_duration_s']['p50']:.2f} / {r['stream_duration_s']['p99']:.2f} s",
        ),
        *(
            (f"phase {name} p50 / p99", f"{v['p50']:.2f} / {v['p99']:.2f} s")
            for name, v in r["phases_s"].items()
        ),
        ("streams/s completed", f"{r['streams_per_s']:.1f} (over {r['completed_span_s']:.1f} s)"),
    ]
    for name, secs in r["cpu_s"].items():
        rows.append((f"CPU s: {name}", f"{secs:.2f}"))
    rows.append(
        (
            "machine busy: all / this benchmark",
            f"{r['machine_busy_pct']:.0f} % / {r['cpu_utilisation_of_machine'] * 100:.0f} % "
            f"({r['cpu_s_outside_benchmark']:.1f} CPU s by other processes)",
        )
    )
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    if r.get("cpu_timeline_pct"):
        names = [k for k in r["cpu_timeline_pct"][0] if k != "t"]
        lines.append("CPU % of one core per second: " + " | ".join(["t", *names]))
        for row in r["cpu_timeline_pct"][:: max(1, len(r["cpu_timeline_pct"]) // 15)]:
            lines.append("  " + " | ".join(str(row[k]) for k in ["t", *names]))
    problems = {k: v for k, v in r["log_problems"].items() if v}
    if problems:
        lines.append("service log warnings/errors:")
        for svc, counts in problems.items():
            for what, count in counts.items():
                lines.append(f"  {svc}: {count} x {what}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.fanout_streams", description=__doc__.split("\n")[0]
    )
    p.add_argument("--streams", type=int, default=1000, help="concurrent SSE streams")
    p.add_argument("--workers", type=int, default=2, choices=(1, 2), help="inference workers")
    p.add_argument("--ramp", type=float, default=5.0, help="seconds over which streams start")
    p.add_argument("--tokens", type=int, default=64, help="max_tokens of each request")
    p.add_argument("--tps", type=float, default=20.0, help="llmsim tokens/s per stream")
    p.add_argument("--ttft-ms", type=float, default=200.0, help="llmsim time to first token")
    p.add_argument("--model", default="small", help="model of each request")
    p.add_argument(
        "--timeout",
        type=float,
        default=150.0,
        help="load deadline after the ramp (capped "
        f"so the whole run stays within {BUDGET_S:.0f} s)",
    )
    p.add_argument(
        "--clients",
        type=int,
        default=0,
        help=f"httpx AsyncClients to shard streams over (0 = one per {STREAMS_PER_CLIENT})",
    )
    p.add_argument("--max-concurrency", type=int, default=1200, help="TOKENBUS_MAX_CONCURRENCY")
    p.add_argument("--logs", type=Path, default=None, help="service logs folder (default: tmp)")
    p.add_argument("--json", type=Path, default=Path("docs/bench/fanout.json"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    nofile = raise_nofile()  # before the services start: they inherit it
    print(f"RLIMIT_NOFILE {nofile}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="tokenbus-bench-"))
    logs = args.logs or tmp / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:8]
    started = time.monotonic()
    deadline = started + BUDGET_S
    with session_broker(tmp / "broker") as bootstrap:
        print(
            f"broker {bootstrap} ({time.monotonic() - started:.1f} s); logs in {logs}", flush=True
        )
        system = System(
            bootstrap,
            f"b{run_id}.",
            logs,
            llmsim_env=llmsim_env(args),
            worker_env={"TOKENBUS_MAX_CONCURRENCY": str(args.max_concurrency)},
        )
        try:
            system.start(workers=args.workers)
            print(
                f"system ready ({time.monotonic() - started:.1f} s); "
                f"{args.streams} streams over {args.ramp} s",
                flush=True,
            )
            try:
                import uvloop

                runner = uvloop.run
            except ImportError:
                runner = asyncio.run
            result = runner(load(system, args, run_id, deadline))
        finally:
            system.stop()
    result["total_wall_s"] = time.monotonic() - started
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(table(result))
    print(f"total {result['total_wall_s']:.0f} s; results in {args.json}")
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
