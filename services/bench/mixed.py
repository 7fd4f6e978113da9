"""The mixed load of the soak: what real apps send, each answer checked against llmsim's text.

One request of each kind is one `Done`: its outcome (`ok`, `mismatch`, `resume_mismatch`, or
an error kind), the request id, and the total tokens the client was told (for reconciling
usage). Kinds: chat streamed and not (the `openai` SDK), Responses streamed (the SDK), a chat
over the WebSocket (`websockets`), a stream cut and resumed on the other node with
`Last-Event-ID`, and a stream cancelled with `DELETE /v1/streams/{id}` (httpx).
"""

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
from openai import AsyncOpenAI
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from contracts import request_of_response
from services.bench.load import LLMSIM_DEFAULT_MAX_TOKENS
from services.llmsim.text import answer_tokens

KINDS = ("chat_stream", "chat", "responses", "websocket", "resume", "cancel")
OK, MISMATCH, RESUME_MISMATCH = "ok", "mismatch", "resume_mismatch"


@dataclass(frozen=True, slots=True)
class Done:
    kind: str
    outcome: str
    request_id: str | None = None
    total_tokens: int | None = None  # what the client was told (None: not told)
    status: str = "ok"  # the usage status the database must hold for it


@dataclass
class Nodes:
    """Two gateway URLs (resumes go to the second), the model and the answer length, and the
    clients shared by every request (as an app keeps one): open them with `async with`."""

    first: str
    second: str
    model: str = "small"
    max_tokens: int = 24
    sdk: AsyncOpenAI = field(init=False)
    http: httpx.AsyncClient = field(init=False)

    async def __aenter__(self) -> "Nodes":
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=200)
        self.http = httpx.AsyncClient(timeout=60, limits=limits)
        self.sdk = AsyncOpenAI(
            base_url=f"{self.first}/v1", api_key="sk-soak", max_retries=0, timeout=60
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.sdk.close()
        await self.http.aclose()


def expected(messages: list[dict[str, Any]], max_tokens: int) -> str:
    return "".join(answer_tokens(messages, max_tokens, LLMSIM_DEFAULT_MAX_TOKENS))


def _messages(n: int) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"Soak question {n}: what is a log?"}]


async def chat_stream(nodes: Nodes, n: int) -> Done:
    messages, text, usage, request_id = _messages(n), "", None, None
    stream = await nodes.sdk.chat.completions.create(
        model=nodes.model,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=nodes.max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )  # type: ignore[call-overload]
    async for chunk in stream:
        request_id = chunk.id
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage is not None:
            usage = chunk.usage.total_tokens
    ok = text == expected(messages, nodes.max_tokens)
    return Done("chat_stream", OK if ok else MISMATCH, request_id, usage)


async def chat(nodes: Nodes, n: int) -> Done:
    messages = _messages(n)
    answer = await nodes.sdk.chat.completions.create(
        model=nodes.model,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=nodes.max_tokens,
    )
    ok = answer.choices[0].message.content == expected(messages, nodes.max_tokens)
    usage = answer.usage.total_tokens if answer.usage else None
    return Done("chat", OK if ok else MISMATCH, answer.id, usage)


async def responses(nodes: Nodes, n: int) -> Done:
    question = _messages(n)[0]["content"]
    text, usage, request_id = "", None, None
    stream = await nodes.sdk.responses.create(
        model=nodes.model, input=question, max_output_tokens=nodes.max_tokens, stream=True
    )
    async for event in stream:
        if event.type == "response.output_text.delta":
            text += event.delta
        elif event.type == "response.completed":
            request_id = request_of_response(event.response.id)
            usage = event.response.usage.total_tokens if event.response.usage else None
    ok = text == expected([{"role": "user", "content": question}], nodes.max_tokens)
    return Done("responses", OK if ok else MISMATCH, request_id, usage)


async def websocket(nodes: Nodes, n: int) -> Done:
    messages, text, usage, request_id = _messages(n), "", None, None
    url = "ws" + nodes.first.removeprefix("http") + "/v1/ws"
    async with connect(url, open_timeout=30) as conn:
        await conn.send(
            json.dumps(
                {
                    "type": "chat",
                    "id": "c",
                    "model": nodes.model,
                    "max_tokens": nodes.max_tokens,
                    "messages": messages,
                }
            )
        )
        async for raw in conn:
            frame = json.loads(raw)
            kind = frame["type"]
            if kind == "ack":
                request_id = frame["request_id"]
            elif kind == "delta":
                text += frame.get("content") or ""
            elif kind == "completed":
                usage = frame["usage"]["total_tokens"]
                break
            elif kind in ("error", "failed"):
                return Done("websocket", f"ws_{frame.get('code', kind)}", request_id)
    ok = text == expected(messages, nodes.max_tokens)
    return Done("websocket", OK if ok else MISMATCH, request_id, usage)


def _body(nodes: Nodes, messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "model": nodes.model,
        "messages": messages,
        "max_tokens": nodes.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def _events(resp: httpx.Response) -> AsyncIterator[tuple[str | None, dict[str, Any] | None]]:
    """(event id, chunk) per SSE event; (None, None) for `[DONE]`."""
    event_id: str | None = None
    async for line in resp.aiter_lines():
        if line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
            yield (event_id, None) if data == "[DONE]" else (event_id, json.loads(data))


def _piece(chunk: dict[str, Any]) -> str:
    choices = chunk.get("choices") or []
    return (choices[0].get("delta", {}).get("content") or "") if choices else ""


async def resume(nodes: Nodes, n: int) -> Done:
    """Read a few pieces on the first node, hang up, and read the rest on the second."""
    messages, head, last_id, client = _messages(n), "", None, nodes.http
    async with client.stream(
        "POST", f"{nodes.first}/v1/chat/completions", json=_body(nodes, messages)
    ) as resp:
        if resp.status_code != 200:
            return Done("resume", f"http_{resp.status_code}")
        request_id = resp.headers["x-request-id"]
        async for event_id, chunk in _events(resp):
            if chunk is None or "error" in chunk:
                return Done("resume", "ended_before_the_cut", request_id)
            head += _piece(chunk)
            last_id = event_id
            if len(head) >= 8:
                break
    tail, usage = "", None
    headers = {"last-event-id": last_id} if last_id else {}
    async with client.stream(
        "GET", f"{nodes.second}/v1/streams/{request_id}", headers=headers
    ) as resp:
        if resp.status_code != 200:
            return Done("resume", f"resume_http_{resp.status_code}", request_id)
        async for _, chunk in _events(resp):
            if chunk is None:
                break
            if "error" in chunk:
                return Done("resume", f"resume_{chunk['error'].get('code')}", request_id)
            tail += _piece(chunk)
            if chunk.get("usage"):
                usage = chunk["usage"]["total_tokens"]
    ok = head + tail == expected(messages, nodes.max_tokens)
    return Done("resume", OK if ok else RESUME_MISMATCH, request_id, usage)


async def cancel(nodes: Nodes, n: int) -> Done:
    """Start a stream, cancel it from the other node after a piece, read it to its end."""
    messages, text, finish, client = _messages(n), "", None, nodes.http
    async with client.stream(
        "POST", f"{nodes.first}/v1/chat/completions", json=_body(nodes, messages)
    ) as resp:
        if resp.status_code != 200:
            return Done("cancel", f"http_{resp.status_code}")
        request_id = resp.headers["x-request-id"]
        cancelled = False
        async for _, chunk in _events(resp):
            if chunk is None:
                break
            text += _piece(chunk)
            for choice in chunk.get("choices") or []:
                finish = choice.get("finish_reason") or finish
            if text and not cancelled:
                cancelled = True
                gone = await client.delete(f"{nodes.second}/v1/streams/{request_id}")
                if gone.status_code not in (200, 202, 204, 409):
                    return Done("cancel", f"cancel_http_{gone.status_code}", request_id)
    whole = expected(messages, nodes.max_tokens)
    if not whole.startswith(text):
        return Done("cancel", MISMATCH, request_id)
    # Cancelled mid-answer, or it had already finished when the cancel came (a race it may win).
    status = "cancelled" if finish == "cancelled" else "ok"
    if status == "ok" and text != whole:
        return Done("cancel", MISMATCH, request_id)
    return Done("cancel", OK, request_id, status=status)


RUNNERS: dict[str, Callable[[Nodes, int], Awaitable[Done]]] = {
    "chat_stream": chat_stream,
    "chat": chat,
    "responses": responses,
    "websocket": websocket,
    "resume": resume,
    "cancel": cancel,
}


async def run_one(kind: str, nodes: Nodes, n: int) -> Done:
    """One request of `kind`; a transport or API failure is an outcome, never an exception."""
    try:
        return await RUNNERS[kind](nodes, n)
    except openai.APIStatusError as exc:
        return Done(kind, f"http_{exc.status_code}")
    except (openai.APIError, httpx.HTTPError, WebSocketException, OSError, TimeoutError) as exc:
        return Done(kind, type(exc).__name__)
