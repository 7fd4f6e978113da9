"""The results as text: a progress line per scenario, and markdown tables for the README."""

import math
from typing import Any

Row = dict[str, Any]
PATHS = ("direct", "tokenbus", "compare")


def _ms(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.1f}"


def _signed(v: float | None) -> str:
    return "–" if v is None or v != v else f"{v:+.1f}"


def _rate(v: float) -> str:
    return f"{v:.1f}" if v < 100 else f"{v:,.0f}"


def progress_line(c: int, name: str, row: Row) -> str:
    ttft, itl = row["ttft_ms"], row["itl_ms"]
    parts = [
        f"c={c:<5} {name:<9} {row['requests_per_s']:7.1f} req/s",
        f"TTFT p50 {_ms(ttft['p50'])} p99 {_ms(ttft['p99'])} ms",
        f"ITL p50 {_ms(itl['p50'])} p99 {_ms(itl['p99'])} ms",
    ]
    if "added_ms" in row:
        added = row["added_ms"]
        parts.append(f"added p50 {_signed(added['ttft_p50'])} p99 {_signed(added['ttft_p99'])} ms")
    if "tokenbus_cpu_ms_per_request" in row:
        parts.append(f"{_ms(row['tokenbus_cpu_ms_per_request'])} CPU-ms/req")
    if "broker_records_per_s" in row:
        parts.append(f"{row['broker_records_per_s']:.0f} msg/s")
    parts.append(f"errors {row['errors']} mismatches {row['mismatches']}")
    parts.append(f"(other load {row['other_cpu_pct']}%)")
    if row["error_reasons"]:
        parts.append(str(row["error_reasons"]))
    return ", ".join(parts)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def scenarios_table(result: Row) -> str:
    header = [
        "streams", "path", "TTFT p50 / p95 / p99 ms", "added TTFT p50 / p99 ms",
        "ITL p50 / p99 ms", "req/s", "tokens/s", "errors", "CPU-ms/req",
    ]  # fmt: skip
    rows = []
    for s in result["scenarios"]:
        for name in PATHS:
            if name not in s:
                continue
            r = s[name]
            t, itl, add = r["ttft_ms"], r["itl_ms"], r.get("added_ms")
            cpu = r.get("tokenbus_cpu_ms_per_request", r.get("compare_cpu_ms_per_request"))
            rows.append([
                f"{s['concurrency']:,}",
                name,
                f"{_ms(t['p50'])} / {_ms(t['p95'])} / {_ms(t['p99'])}",
                f"{_signed(add['ttft_p50'])} / {_signed(add['ttft_p99'])}" if add else "",
                f"{_ms(itl['p50'])} / {_ms(itl['p99'])}",
                _rate(r["requests_per_s"]),
                f"{r['tokens_per_s']:,.0f}",
                f"{r['errors']} + {r['mismatches']} wrong" if r["mismatches"] else str(r["errors"]),
                _ms(cpu) if cpu is not None else "",
            ])  # fmt: skip
    return _table(header, rows)


def window_label(point: Row) -> str:
    """`10` for a fixed window, `10-50 (adaptive)` for one that grows with the load."""
    busy = point.get("coalesce_busy_ms", point["coalesce_ms"])
    alone = point["coalesce_ms"]
    return f"{alone:g}" if busy <= alone or alone <= 0 else f"{alone:g}-{busy:g} (adaptive)"


def sweep_table(result: Row) -> str:
    sweep = result["coalescing_sweep"]
    header = [
        "coalesce ms", "broker msg/s", "msg/req", "added TTFT p50 / p99 ms",
        "added token latency p50 / p99 ms", "ITL p50 / p99 ms", "req/s", "CPU-ms/req", "errors",
    ]  # fmt: skip
    rows = [
        [
            window_label(p),
            f"{p['broker_messages_per_s']:,.0f}" if p["broker_messages_per_s"] is not None else "–",
            _ms(p.get("broker_messages_per_request")),
            f"{_signed(p['added_ms']['ttft_p50'])} / {_signed(p['added_ms']['ttft_p99'])}",
            f"{_signed(p['added_ms'].get('token_p50'))} / "
            f"{_signed(p['added_ms'].get('token_p99'))}",
            f"{_ms(p['itl_ms']['p50'])} / {_ms(p['itl_ms']['p99'])}",
            _rate(p["requests_per_s"]),
            _ms(p["tokenbus_cpu_ms_per_request"]),
            str(p["errors"] + p["mismatches"]),
        ]
        for p in sweep["points"]
    ]
    return f"Coalescing sweep at {sweep['concurrency']} streams:\n\n" + _table(header, rows)


def targets_table(result: Row) -> str:
    verdict = {True: "pass", False: "**miss**", None: "not measured"}

    def measured(t: Row) -> str:
        v = t["measured"]  # a share (limit below 1) needs two decimals to be judged by eye
        return f"{v:.2f}" if v is not None and float(t["target"].split()[-1]) < 1 else _ms(v)

    rows = [
        [t["what"], t["target"], measured(t), t["at"], verdict[t["pass"]]]
        for t in result["targets"].values()
    ]
    return _table(["target", "limit", "measured", "at", ""], rows)


def _other_load(result: Row) -> int:
    loads = [s[n]["other_cpu_pct"] for s in result["scenarios"] for n in PATHS if n in s]
    return round(sum(loads) / len(loads)) if loads else 0


def _floor(result: Row) -> str:
    hop = result.get("kafka_hop_ms")
    if not hop:
        return ""
    return (
        f"One Kafka hop (produce, then the fetch that returns it) took p50 {hop['p50']:.1f} / "
        f"p99 {hop['p99']:.1f} ms on this machine; a first token takes two. "
    )


def markdown(result: Row) -> str:
    c = result["config"]
    setup = (
        f"{c['cpus']} CPUs, everything local (Kafka broker, {c['workers']} workers, one "
        f"gateway, llmsim, the load generator); llmsim TTFT {c['ttft_ms']:g} ms, "
        f"{c['tokens_per_second']:g} tokens/s, {c['max_tokens']}-token answers; workers "
        f"coalesce {c['coalesce_ms']:g} ms alone, up to {c.get('coalesce_busy_ms', 0):g} ms under "
        f"load. {_floor(result)}Closed loop: N clients stream back to back for "
        f"{c['duration_s']:g} s ({c['idle_duration_s']:g} s at 1 stream) after "
        f"{c['warmup_s']:g} s of warm-up. Added = tokenbus minus direct under the same load; "
        "ITL = gap between text frames; errors include answers that differ from llmsim's. "
        f"Other processes on the machine used {_other_load(result)} % of its CPU meanwhile."
    )
    return "\n\n".join(
        [setup, scenarios_table(result), sweep_table(result), "Targets:", targets_table(result)]
    )
