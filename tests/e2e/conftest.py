"""E2E fixtures: a tokenbus started as real processes on the session's broker."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system import System


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, logs_dir: Path) -> Iterator[System]:
    """One worker; llmsim paced so that 50 streams take long enough to overlap visibly."""
    sys_ = System(
        kafka_bootstrap,
        f"e{uuid.uuid4().hex[:8]}.",
        logs_dir,
        llmsim_env={"TOKENBUS_LLMSIM_TTFT_MS": "20", "TOKENBUS_LLMSIM_TOKENS_PER_SECOND": "100"},
    )
    sys_.start(workers=1)
    yield sys_
    sys_.stop()
