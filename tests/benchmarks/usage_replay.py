"""Usage replay benchmark: 100,000 usage events from the topic into an empty database.

    python -m tests.benchmarks.usage_replay --events 100000 --backends sqlite,postgresql

Publishes `--events` generated UsageRecorded events to a fresh usage topic (a broker from
KAFKA_BOOTSTRAP_SERVERS, else one started here), then, per backend, runs the analytics app
in this process (its real lifespan: migrations, FastStream batch consumer) on an empty
database and times it until every row is stored. SQLite is a file in a temporary folder;
PostgreSQL is TEST_POSTGRES_URL/DATABASE_URL or a local server with its default durability
(fsync on), so both numbers include real commits. Writes docs/bench/usage_replay.json.

Not a test: pytest does not collect this file (no `test_` prefix, no test functions).
"""

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from contracts import TOPICS
from services.analytics.app import create_app
from services.analytics.settings import AnalyticsSettings
from services.common.kafka import ensure_topics
from tests.kafka_broker import session_broker
from tests.postgres import asyncpg_url, fresh_database, local_postgres
from tests.usage_events import usage_events


async def publish(bootstrap: str, topic: str, count: int) -> dict[str, float]:
    """Publish `count` events (serialised beforehand, so only Kafka is timed)."""
    payloads = [(e.tenant_id.encode(), e.model_dump_json().encode()) for e in usage_events(count)]
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024, acks="all"
    )
    await producer.start()
    t0 = time.perf_counter()
    try:
        pending = [await producer.send(topic, value, key=key) for key, value in payloads]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    seconds = time.perf_counter() - t0
    size = sum(len(v) for _, v in payloads)
    return {"seconds": seconds, "events_per_s": count / seconds, "mean_bytes": size / count}


async def replay(
    bootstrap: str, prefix: str, database_url: str, count: int, batch_max: int
) -> dict[str, Any]:
    """Run analytics on an empty database until `count` rows are stored; time it."""
    settings = AnalyticsSettings(
        bootstrap_servers=bootstrap,
        topic_prefix=prefix,
        group_id=f"{prefix}bench-{uuid.uuid4().hex[:6]}",
        database_url=database_url,
        batch_max=batch_max,
        auth_mode="open",  # no usage API calls here: no keys needed
    )
    app = create_app(settings)
    cpu0, t0 = _cpu(), time.perf_counter()
    async with app.router.lifespan_context(app):
        started = time.perf_counter()
        stored = await _until_stored(app.state.store, count)
        done = time.perf_counter()
        cpu = _cpu() - cpu0
    replay_s = done - started
    return {
        "database": database_url.split(":", 1)[0],
        "rows": stored,
        "startup_s": round(started - t0, 3),
        "replay_s": round(replay_s, 3),
        "events_per_s": round(count / replay_s),
        "cpu_s": round(cpu, 2),
        "cpu_ms_per_1k_events": round(cpu / count * 1e6, 1),
        "batch_max": batch_max,
    }


async def _until_stored(store: Any, count: int) -> int:
    """Poll the row count every 0.1 s (cheap next to the inserts) until it reaches `count`."""
    while True:
        stored = await store.count()
        if stored >= count:
            return int(stored)
        await asyncio.sleep(0.1)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    if url := os.environ.get("TEST_POSTGRES_URL") or os.environ.get("DATABASE_URL"):
        yield asyncpg_url(url)
        return
    with local_postgres(durable=True) as url:
        yield url


async def run(args: argparse.Namespace, bootstrap: str, tmp: Path) -> dict[str, Any]:
    prefix = f"ub{uuid.uuid4().hex[:8]}."
    topics = TOPICS.with_prefix(prefix)
    await ensure_topics(bootstrap, topics)
    result: dict[str, Any] = {
        "config": {
            "events": args.events,
            "partitions": topics.usage.partitions,
            "cpus": os.cpu_count(),
            "topic_prefix": prefix,
        },
        "publish": await publish(bootstrap, topics.usage.name, args.events),
        "replays": [],
    }
    for backend in args.backends.split(","):
        for batch_max in args.batch_max:
            if backend == "sqlite":
                url = f"sqlite+aiosqlite:///{tmp / f'replay-{batch_max}.db'}"
                timing = await replay(bootstrap, prefix, url, args.events, batch_max)
            else:
                with postgres_server() as server:
                    url = await fresh_database(server)
                    timing = await replay(bootstrap, prefix, url, args.events, batch_max)
            result["replays"].append(timing)
            print(json.dumps(result["replays"][-1]), file=sys.stderr, flush=True)
    result["load_average_after"] = os.getloadavg()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--backends", default="sqlite,postgresql")
    p.add_argument("--batch-max", type=int, nargs="+", default=[500])
    p.add_argument("--json", type=Path, default=Path("docs/bench/usage_replay.json"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="tokenbus-bench-") as tmp:
        with session_broker(Path(tmp)) as bootstrap:
            result = asyncio.run(run(args, bootstrap, Path(tmp)))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
