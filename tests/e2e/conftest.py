"""E2E fixtures: a tokenbus started as real processes on the session's broker."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system import System, running_system


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, logs_dir: Path) -> Iterator[System]:
    """One worker; llmsim paced so that 50 streams take long enough to overlap visibly."""
    with running_system(
        kafka_bootstrap,
        logs_dir,
        tag="e",
        llmsim_env={"TOKENBUS_LLMSIM_TTFT_MS": "20", "TOKENBUS_LLMSIM_TOKENS_PER_SECOND": "100"},
    ) as sys_:
        yield sys_
