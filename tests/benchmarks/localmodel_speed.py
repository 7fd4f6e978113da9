"""How fast the bundled local LLM really is on this machine: time to first token and tokens/s.

    python -m tests.benchmarks.localmodel_speed                      # starts its own server
    python -m tests.benchmarks.localmodel_speed --concurrency 1,2,4 --threads 1
    python -m tests.benchmarks.localmodel_speed --url http://127.0.0.1:8080 --model small

Without `--url` it starts `python -m services.localmodel` on a free port with as many slots as
the highest concurrency (and `--threads`, `--ctx-size` if given) and measures it directly.
`--url` points it at any OpenAI-compatible server instead: a running localmodel, or a tokenbus
gateway (then `--model` is a tier or `auto`, and the numbers include tokenbus's path).

For each concurrency C it runs `--rounds` rounds of C streams started together, each a
different prompt (unique per run, so no prompt cache helps), each generating exactly
`--max-tokens` tokens (`ignore_eos`, a llama.cpp parameter that tokenbus passes through;
`--no-ignore-eos` lets the model stop early). Per stream: time to first token (request sent ->
first content chunk) and decode speed (tokens after the first / time from first to last
token); per round: all tokens / round wall time.
The load average before and after is printed: other work on the machine slows a CPU model down.

Not a test: pytest does not collect this file (no `test_` prefix, no test functions).
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from services.procs import ServiceProcess, free_port

TOPICS = [
    "the history of Rome",
    "how bread is made",
    "why the sky is blue",
    "the life of bees",
    "how trains work",
    "the water cycle",
    "volcanoes",
    "the moon landing",
]


@dataclass
class StreamResult:
    ttft: float  # seconds from sending the request to the first content chunk
    tokens: int
    decode_seconds: float  # first to last content chunk

    @property
    def decode_tps(self) -> float:
        return (self.tokens - 1) / self.decode_seconds if self.decode_seconds > 0 else 0.0


RUN = uuid.uuid4().hex[:6]  # in every prompt: no llama.cpp prompt cache hits across runs


def _body(i: int, args: argparse.Namespace) -> dict[str, object]:
    topic = TOPICS[i % len(TOPICS)]
    content = f"[{RUN}-{i}] Write a short essay about {topic}."
    body: dict[str, object] = {
        "model": args.model,
        "messages": [{"role": "user", "content": content}],
        "stream": True,
        "max_tokens": args.max_tokens,
        "stream_options": {"include_usage": True},
        "temperature": 0.7,
        "seed": i,
    }
    if args.ignore_eos:
        body["ignore_eos"] = True
    return body


async def one_stream(client: httpx.AsyncClient, url: str, body: dict[str, object]) -> StreamResult:
    t0 = time.perf_counter()
    first = last = 0.0
    chunks = 0
    usage_tokens = None
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"{resp.status_code}: {(await resp.aread()).decode()[:300]}")
        async for line in resp.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage_tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    last = time.perf_counter()
                    first = first or last
                    chunks += 1
    if not chunks:
        raise RuntimeError("no content in the stream")
    return StreamResult(first - t0, usage_tokens or chunks, last - first)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(url: str, args: argparse.Namespace) -> list[dict[str, float]]:
    rows = []
    timeout = httpx.Timeout(10.0, read=600.0)
    async with httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=64)) as c:
        await one_stream(c, url, {**_body(0, args), "max_tokens": 8})  # warm-up
        for concurrency in args.concurrency:
            results: list[StreamResult] = []
            round_tps = []
            for r in range(args.rounds):
                start = time.perf_counter()
                batch = await asyncio.gather(
                    *(
                        one_stream(c, url, _body(r * concurrency + i + 1, args))
                        for i in range(concurrency)
                    )
                )
                wall = time.perf_counter() - start
                results += batch
                round_tps.append(sum(s.tokens for s in batch) / wall)
            ttfts = [s.ttft * 1000 for s in results]
            rows.append(
                {
                    "concurrency": concurrency,
                    "streams": len(results),
                    "ttft_p50_ms": statistics.median(ttfts),
                    "ttft_p95_ms": _pct(ttfts, 0.95),
                    "tps_per_stream": statistics.median(s.decode_tps for s in results),
                    "tps_total": statistics.median(round_tps),
                    "tokens": statistics.median(s.tokens for s in results),
                }
            )
    return rows


def table(rows: list[dict[str, float]]) -> str:
    lines = [
        "| streams at once | streams | tokens each | TTFT p50 | TTFT p95 "
        "| tokens/s per stream | tokens/s total |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['concurrency']:.0f} | {r['streams']:.0f} | {r['tokens']:.0f} "
            f"| {r['ttft_p50_ms']:.0f} ms | {r['ttft_p95_ms']:.0f} ms "
            f"| {r['tps_per_stream']:.1f} | {r['tps_total']:.1f} |"
        )
    return "\n".join(lines)


def start_server(args: argparse.Namespace, logs: Path) -> ServiceProcess:
    port = free_port()
    env = {"TOKENBUS_LOCALMODEL_PARALLEL": str(max(args.concurrency))}
    if args.threads:
        env["TOKENBUS_LOCALMODEL_THREADS"] = str(args.threads)
    if args.ctx_size:
        env["TOKENBUS_LOCALMODEL_CTX_SIZE"] = str(args.ctx_size)
    proc = ServiceProcess(
        "localmodel", ["--port", str(port)], port, env, logs, module="services.localmodel"
    )
    proc.start()
    try:
        proc.wait_ready(timeout=120)
    except BaseException:
        proc.stop()
        raise
    return proc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="An OpenAI-compatible server (default: start localmodel)")
    parser.add_argument("--model", default="smollm2-135m", help="Model, tier or `auto`")
    parser.add_argument(
        "--concurrency",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 4],
        help="Comma-separated streams at once, e.g. 1,4",
    )
    parser.add_argument("--rounds", type=int, default=4, help="Rounds per concurrency")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--ignore-eos", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--threads", type=int, help="Server threads (own server only)")
    parser.add_argument("--ctx-size", type=int, help="Server context (own server only)")
    args = parser.parse_args(argv)

    server = None
    logs = Path(tempfile.mkdtemp(prefix="localmodel-bench-")) / "localmodel.log"
    if args.url is None:
        server = start_server(args, logs)
    url = (args.url or server.url).rstrip("/").removesuffix("/v1")  # type: ignore[union-attr]
    load_before = os.getloadavg()
    try:
        rows = asyncio.run(measure(url, args))
    finally:
        if server is not None:
            server.stop()
    load_after = os.getloadavg()
    print(
        f"\n{url} model={args.model}, {args.max_tokens} tokens per stream"
        f"{' (EOS ignored)' if args.ignore_eos else ''}, {args.rounds} rounds per level, "
        f"{os.cpu_count()} CPUs, 1-min load average {load_before[0]:.1f} -> {load_after[0]:.1f}"
        + (f", server threads {args.threads}" if args.threads else "")
        + "\n"
    )
    print(table(rows))
    if server is not None:
        print(f"\nserver log: {logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
