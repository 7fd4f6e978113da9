"""Small helpers for e2e tests: SDK clients and llmsim's stats."""

import asyncio
from typing import Any

import httpx
from openai import AsyncOpenAI
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import eventually

__all__ = [
    "Samples",
    "complete",
    "direct_texts",
    "eventually",
    "llmsim_stats",
    "scrape",
    "sdk",
    "stream_text",
    "total",
]


def sdk(base_url: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{base_url}/v1", api_key="sk-test", max_retries=0, timeout=60)


async def stream_text(
    base_url: str, messages: list[dict[str, Any]], **params: Any
) -> tuple[str, Any, list[Any]]:
    """Stream a completion with the SDK; return (text, usage of the final chunk, all chunks)."""
    chunks = []
    async with sdk(base_url) as client:
        stream = await client.chat.completions.create(
            model=params.pop("model", "auto"),
            messages=messages,
            stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
            **params,
        )
        async for chunk in stream:
            chunks.append(chunk)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks[-1].usage, chunks


async def direct_texts(llmsim_url: str, bodies: list[dict[str, Any]]) -> list[str]:
    """What llmsim answers each chat body directly (its text is deterministic), all at once:
    one by one would take the sum of their streaming times."""
    answers = await asyncio.gather(
        *(
            stream_text(llmsim_url, body["messages"], model="x", max_tokens=body["max_tokens"])
            for body in bodies
        )
    )
    return [text for text, _, _ in answers]


async def complete(base_url: str, messages: list[dict[str, Any]], **params: Any) -> Any:
    """A non-streamed completion with the SDK."""
    async with sdk(base_url) as client:
        return await client.chat.completions.create(
            model=params.pop("model", "auto"), messages=messages, **params
        )  # type: ignore[arg-type]


async def llmsim_stats(url: str) -> dict[str, int]:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{url}/stats")).json()  # type: ignore[no-any-return]


# A scrape: (sample name, its labels) -> value.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"{url}/metrics")).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, name: str,
          **where: str) -> float:  # fmt: skip
    return sum(
        v for (n, labels), v in samples.items()
        if n == name and all((k, w) in labels for k, w in where.items())
    )  # fmt: skip
