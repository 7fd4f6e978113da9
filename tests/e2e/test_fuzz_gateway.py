"""Schemathesis over the gateway's own OpenAPI document, against real processes: two gateway
nodes in open mode, the real broker, a worker and llmsim (no time to first token, short
answers). Every generated request must get an answer below 500, within the time limit.

`TOKENBUS_FUZZ_EXAMPLES` sets the examples per operation and generation mode. The default, 200,
makes about 1,000 requests (`GET /v1/models` has one possible request, and a string in a path
cannot be made invalid, so `DELETE /v1/streams/{id}` has no negative cases) in under a minute.
"""

import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.system import System, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

EXAMPLES = int(os.environ.get("TOKENBUS_FUZZ_EXAMPLES", "200"))
TIMEOUT_S = 10.0  # per request: longer is a hang
MAX_OUTPUT_TOKENS = 16  # answers stay short; larger max_tokens are refused with a 400


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, logs_dir: Path) -> Iterator[System]:
    with running_system(
        kafka_bootstrap,
        logs_dir,
        tag="z",
        gateways=2,
        llmsim_env={
            "TOKENBUS_LLMSIM_TTFT_MS": "0",
            "TOKENBUS_LLMSIM_TOKENS_PER_SECOND": "0",
            "TOKENBUS_LLMSIM_DEFAULT_MAX_TOKENS": "8",
        },
        gateway_env={"TOKENBUS_LIMITS__MAX_OUTPUT_TOKENS": str(MAX_OUTPUT_TOKENS)},
    ) as sys_:
        yield sys_


def test_generated_requests_never_get_a_5xx_or_hang(system: System) -> None:
    schema = schemathesis.openapi.from_url(f"{system.gateway_url}/openapi.json")
    urls = [node.url for node in system.gateways]
    statuses: Counter[int] = Counter()
    by_operation: Counter[str] = Counter()
    slowest = 0.0
    session = requests.Session()

    def call(case: Any) -> None:
        nonlocal slowest
        url = urls[sum(statuses.values()) % len(urls)]  # both nodes
        t0 = time.monotonic()
        try:
            response = case.call(base_url=url, session=session, timeout=TIMEOUT_S)
        except requests.Timeout as exc:
            raise AssertionError(f"no answer in {TIMEOUT_S} s:\n{case.as_curl_command()}") from exc
        elapsed = time.monotonic() - t0
        slowest = max(slowest, elapsed)
        statuses[response.status_code] += 1
        by_operation[case.operation.label] += 1
        assert response.status_code < 500, (
            f"{response.status_code} {response.text[:500]}\n{case.as_curl_command()}"
        )
        assert elapsed < TIMEOUT_S, f"took {elapsed:.1f} s:\n{case.as_curl_command()}"

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=False,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case: Any) -> None:
                call(case)

            try:
                fuzz()
            except Unsatisfiable:  # no way to break an operation without parameters
                assert mode is GenerationMode.NEGATIVE, operation.label

    total = sum(statuses.values())
    print(
        f"\nschemathesis: {total} requests, status counts {dict(sorted(statuses.items()))}, "
        f"slowest {slowest:.2f} s, "
        f"by operation {dict(by_operation)}"
    )
    assert total >= 5 * EXAMPLES  # 2 x POST, 2 x GET streams, 1 x DELETE (+1 GET models)
