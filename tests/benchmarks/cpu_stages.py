"""CPU-ms per request by process and stage, for docs/performance.md.

    python -m services.bench --concurrency 50 --duration 40 --sweep-ms "" --json run.json &
    # while its tokenbus scenario runs (after "c=50 direct" is printed):
    py-spy record -p <gateway pid> -d 15 -r 200 -f raw -o gw.txt --nonblocking
    py-spy record -p <a worker pid> -d 15 -r 200 -f raw -o wk.txt --nonblocking
    python -m tests.benchmarks.cpu_stages run.json 50 wk.txt gw.txt

The profiles behind docs/performance.md are in docs/bench/profiles/ (gzipped; read as is).

Each py-spy sample is given to the innermost frame that names a stage, and the shares are
scaled by the process's CPU-ms per request from the benchmark JSON. Samples of idle threads
and of the event loop waiting (uvloop waits in C under `Runner.run`) are left out, so the
shares are of busy time. Approximate by nature: sampling, and a stage's keys are frame names.

Not a test: pytest does not collect this file (no `test_` prefix, no test functions).
"""

import collections
import gzip
import json
import sys
from typing import Any

WORKER = [
    ("log lines (structlog)", ["StreamHandler.emit", "structlog", "_make_log", "log_problems"]),
    ("offset commit", ["commit_offsets", "Worker._finish"]),
    ("usage record + publish (FastStream)", ["publish_usage", "_usage_record"]),
    (
        "produce events (aiokafka)",
        [
            "Sender.",
            "AIOKafkaProducer.send",
            "ReplyStream",
            "_send_value",
            "create_app.<locals>.send",
        ],
    ),
    ("pieces + coalescing", ["Generation._on_chunk", "Coalescer", "pieces (", "_emit_delta"]),
    (
        "read the backend's stream (HTTP + SSE parse)",
        ["_chunks", "Generation._rest", "_until_first_text"],
    ),
    (
        "backend call set-up (openai SDK)",
        ["AsyncCompletions.create", "with_streaming_response", "Generation._stream"],
    ),
    (
        "take the request (fetch, FastStream, validate, route)",
        [
            "Fetcher",
            "_run_consume_loop",
            "Worker.accept",
            "route_request",
            "Worker._generate",
            "Worker._serve",
            "Generation",
        ],
    ),
]
GATEWAY = [
    ("log lines (structlog)", ["StreamHandler.emit", "structlog"]),
    (
        "publish the request (FastStream + aiokafka)",
        ["_publish (", "Sender.", "DefaultPublisher.publish"],
    ),
    ("fetch + decode replies (aiokafka, pydantic)", ["ReplyReader", "Fetcher"]),
    ("hub + ordering", ["Hub.", "Subscription.", "Sequencer"]),
    (
        "SSE render + write (sse-starlette, uvicorn)",
        [
            "sse_frames",
            "EventSourceResponse",
            "RequestResponseCycle.send",
            "FrameRenderer",
            "ChunkFormatter",
        ],
    ),
    ("submit: limits, id, admission", ["submit (", "submit_chat", "admit", "new_request_id"]),
    (
        "HTTP in: uvicorn, FastAPI routing, validation",
        ["FastAPI.__call__", "httptools_impl", "RequestResponseCycle"],
    ),
]
IDLE = ["Condition.wait", "Queue.get (queue.py", "Event.wait (threading"]


def stages(path: str, table: list[tuple[str, list[str]]]) -> dict[str, float]:
    c: collections.Counter[str] = collections.Counter()
    tot = 0
    opener = gzip.open if path.endswith(".gz") else open
    for line in opener(path, "rt"):
        s, _, n = line.rstrip().rpartition(" ")
        n = int(n)
        if any(k in s for k in IDLE):
            continue
        frames = s.split(";")
        if frames[-1].startswith("Runner.run") or frames[-1].startswith("run_until_complete"):
            continue  # idle in the event loop (uvloop waits in C under this frame)
        tot += n
        name = "event loop, timers, other"
        for f in reversed(frames):
            hit = next((st for st, keys in table if any(k in f for k in keys)), None)
            if hit:
                name = hit
                break
        c[name] += n
    return {k: v / tot for k, v in c.items()}


def breakdown(bench_json: str, concurrency: int, worker: str, gateway: str) -> dict[str, Any]:
    with open(bench_json) as f:
        result = json.load(f)
    row = next(s for s in result["scenarios"] if s["concurrency"] == concurrency)["tokenbus"]
    n, procs = row["completed"], row["processes"]
    wk = sum(v["cpu_s"] for k, v in procs.items() if k.startswith("inference")) * 1000 / n
    gw = procs["gateway"]["cpu_s"] * 1000 / n

    def scaled(shares: dict[str, float], total: float) -> dict[str, float]:
        return {k: round(v * total, 2) for k, v in sorted(shares.items(), key=lambda kv: -kv[1])}

    return {
        "concurrency": concurrency,
        "worker_ms": round(wk, 2),
        "gateway_ms": round(gw, 2),
        "broker_ms": round(procs["kafka-broker"]["cpu_s"] * 1000 / n, 2),
        "worker": scaled(stages(worker, WORKER), wk),
        "gateway": scaled(stages(gateway, GATEWAY), gw),
    }


if __name__ == "__main__":
    print(json.dumps(breakdown(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]), indent=1))
