"""A tiny SSE reader for tests: frames as (id, data) pairs, comments (pings) left out."""

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

Frame = tuple[str | None, str]


def parse_frames(raw: str) -> list[Frame]:
    frames: list[Frame] = []
    for block in raw.split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        ids = [line[4:] for line in lines if line.startswith("id: ")]
        data = "\n".join(line[6:] for line in lines if line.startswith("data: "))
        frames.append((ids[0] if ids else None, data))
    return frames


async def iter_frames(resp: httpx.Response) -> AsyncIterator[Frame]:
    buffer = ""
    async for text in resp.aiter_text():
        buffer += text
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            for parsed in parse_frames(block + "\n\n"):  # none for a ping comment
                yield parsed


def last_id(frames: list[Frame]) -> int:
    return max(int(i) for i, _ in frames if i is not None)


def chat_text(frames: list[Frame]) -> str:
    """The text of a chat-completions stream's chunks."""
    chunks = [json.loads(d) for _, d in frames if d.startswith("{") and '"choices"' in d]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def stream_error(frames: list[Frame]) -> dict[str, Any] | None:
    """The error a stream ended with (OpenAI's error body), if any."""
    errors = [json.loads(d)["error"] for _, d in frames if d.startswith('{"error"')]
    return errors[0] if errors else None
