"""Fixtures for llmsim: an in-memory client, and the app served by real uvicorn."""

from collections.abc import AsyncIterator

import httpx
import pytest

from services.llmsim import LlmsimSettings, create_app
from tests.fakes import eventually, serve

__all__ = ["client", "eventually", "fast_settings", "serve"]


def fast_settings(**overrides: object) -> LlmsimSettings:
    """No waiting at all, so tests spend their time on behaviour, not on the simulated pace."""
    return LlmsimSettings(**{"ttft_ms": 0, "tokens_per_second": 0, **overrides})  # type: ignore[arg-type]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """An in-memory client of an llmsim app that answers instantly."""
    app = create_app(fast_settings())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://llmsim") as c:
        yield c
