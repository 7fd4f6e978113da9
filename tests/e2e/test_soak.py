"""The soak of `make soak`, for 60 s in `make test`: the mixed load on the real broker, two
gateway nodes, two workers and analytics; every answer checked, usage reconciled, and every
process's memory and file descriptors sampled (the 10-minute run's table is in
docs/reliability.md; a minute is too short to judge their slopes, so they are only reported)."""

import json
from pathlib import Path

import pytest

from services.bench.mixed import KINDS, OK
from services.bench.soak import SoakOptions, clean, run_soak, table

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.slow]

RATE = 15.0  # requests/s: the suite shares the machine with itself


def test_a_minute_of_mixed_load_loses_nothing_and_usage_is_exact(
    kafka_bootstrap: str, logs_dir: Path, tmp_path: Path
) -> None:
    result = run_soak(
        SoakOptions(
            duration_s=60,
            rate=RATE,
            sample_s=5,
            bootstrap=kafka_bootstrap,
            logs=logs_dir,
            json_path=tmp_path / "soak.json",
            plot_path=tmp_path / "soak.png",
        )
    )
    print(table(result))
    assert result["requests"] == int(60 * RATE)
    for kind in KINDS:  # every kind was sent and answered
        assert result["by_kind"][kind].get(OK, 0) >= 1, result["by_kind"]
    assert clean(result), json.dumps({k: v for k, v in result.items() if k != "samples"})
    assert result["cancelled"] >= 1  # some cancels landed mid-answer
    for name in ("gateway", "gateway-1", "inference-0", "inference-1", "analytics-0"):
        assert len(result["samples"][name]) >= 60 / 5, name  # sampled throughout
    for name in ("gateway", "gateway-1"):  # resumes and cancels leave no consumer behind
        growth = result["processes"][name]
        assert growth["kafka_connections_last"] <= growth["kafka_connections_first"], growth
    assert json.loads((tmp_path / "soak.json").read_text())["requests"] == result["requests"]
    assert (tmp_path / "soak.png").stat().st_size > 10_000
