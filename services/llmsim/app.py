"""The llmsim FastAPI app: OpenAI chat completions with deterministic answers at a set pace."""

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.responses import Response, StreamingResponse

from services.common.health import health_router
from services.llmsim.settings import LlmsimSettings
from services.llmsim.text import answer_tokens, count_prompt_tokens, finish_reason

_JSON = json.JSONEncoder(separators=(",", ":")).encode  # compact, as OpenAI's wire is


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The fields llmsim reads; any other OpenAI parameter is accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[_Message] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stream_options: _StreamOptions | None = None


@dataclass(slots=True)
class Stats:
    """Counters served at /stats; plain ints so the per-token cost stays one attribute add."""

    open_streams: int = 0
    peak_open_streams: int = 0
    requests_total: int = 0
    streams_total: int = 0
    streams_completed: int = 0
    streams_closed_early: int = 0
    tokens_total: int = 0

    def reset(self) -> None:
        """Zero the totals; streams still running stay counted, as they decrement on exit."""
        self.requests_total = self.streams_total = self.tokens_total = 0
        self.streams_completed = self.streams_closed_early = 0
        self.peak_open_streams = self.open_streams


class _Frames:
    """Pre-built SSE frames of one stream, so each token costs one dumps and one concat."""

    def __init__(self, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        self.include_usage = include_usage
        head = _JSON(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": None,
            }
        )[:-1]
        self._usage_head = "data: " + head + ',"choices":[],"usage":'
        self._delta = "data: " + head + ',"choices":[{"index":0,"delta":'
        self._content = self._delta + '{"content":'
        # OpenAI sends `"usage":null` on every chunk but the last when usage was asked for.
        self._tail = ',"usage":null}\n\n' if include_usage else "}\n\n"
        self._open = ',"logprobs":null,"finish_reason":null}]' + self._tail

    def role(self) -> bytes:
        return (self._delta + '{"role":"assistant","content":""}' + self._open).encode()

    def content(self, token: str) -> bytes:
        return (self._content + _JSON(token) + "}" + self._open).encode()

    def finish(self, reason: str) -> bytes:
        closing = ',"logprobs":null,"finish_reason":' + _JSON(reason) + "}]" + self._tail
        return (self._delta + "{}" + closing).encode()

    def usage(self, usage: dict[str, int]) -> bytes:
        return (self._usage_head + _JSON(usage) + "}\n\n").encode()


_DONE = b"data: [DONE]\n\n"


class _Simulator:
    """Per-app state and the two ways of answering: one JSON object, or a paced stream."""

    def __init__(self, settings: LlmsimSettings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.stats = Stats()
        self._ttft = settings.ttft_ms / 1000
        self._interval = 1 / settings.tokens_per_second if settings.tokens_per_second > 0 else 0.0
        self._tokens = Counter("llmsim_tokens", "Completion tokens sent", registry=registry)
        self._open = Gauge("llmsim_open_streams", "Streams in progress", registry=registry)

    async def complete(self, body: ChatCompletionRequest) -> Response:
        messages = [m.model_dump() for m in body.messages]
        limit = body.max_completion_tokens or body.max_tokens
        tokens = answer_tokens(messages, limit, self.settings.default_max_tokens)
        completion_id, created = f"chatcmpl-{secrets.token_hex(12)}", int(time.time())
        self.stats.requests_total += 1
        prompt_tokens = count_prompt_tokens(messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(tokens),
            "total_tokens": prompt_tokens + len(tokens),
        }
        if body.stream:
            frames = _Frames(
                completion_id,
                created,
                body.model,
                bool(body.stream_options and body.stream_options.include_usage),
            )
            return StreamingResponse(
                self._stream(frames, tokens, finish_reason(limit), usage),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache"},
            )
        delay = self._ttft + len(tokens) * self._interval
        if delay > 0:
            await asyncio.sleep(delay)
        self.stats.tokens_total += len(tokens)
        self._tokens.inc(len(tokens))
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": body.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": "".join(tokens),
                            "refusal": None,
                        },
                        "logprobs": None,
                        "finish_reason": finish_reason(limit),
                    }
                ],
                "usage": usage,
                "system_fingerprint": None,
            }
        )

    async def _stream(
        self, frames: _Frames, tokens: list[str], reason: str, usage: dict[str, int]
    ) -> AsyncIterator[bytes]:
        loop, stats = asyncio.get_running_loop(), self.stats
        first_due = loop.time() + self._ttft
        stats.streams_total += 1
        stats.open_streams += 1
        stats.peak_open_streams = max(stats.peak_open_streams, stats.open_streams)
        self._open.inc()
        sent, completed = 0, False
        # Starlette cancels this generator when the client disconnects; `finally` then runs
        # with `completed` still False, which is what makes the stream "closed early".
        try:
            yield frames.role()
            for i, token in enumerate(tokens):
                # An absolute schedule: a late wake-up shortens the next wait, so no drift.
                delay = first_due + i * self._interval - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent += 1
                stats.tokens_total += 1
                yield frames.content(token)
            yield frames.finish(reason)
            if frames.include_usage:
                yield frames.usage(usage)
            yield _DONE
            completed = True
        finally:
            stats.open_streams -= 1
            if completed:
                stats.streams_completed += 1
            else:
                stats.streams_closed_early += 1
            self._open.dec()
            self._tokens.inc(sent)


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [p for p in loc if p != "body"]
    if not parts or not isinstance(parts[0], str):
        return None
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)[1:]


def _openai_error(status: int, message: str, param: str | None, code: str | None) -> JSONResponse:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return JSONResponse({"error": error}, status_code=status)


async def _on_invalid_request(_: Request, exc: Exception) -> JSONResponse:
    """Every validation failure is a 400 in OpenAI's error shape, never FastAPI's 422."""
    assert isinstance(exc, RequestValidationError)
    error = exc.errors()[0]
    kind, param = error["type"], _param(tuple(error["loc"]))
    if kind == "json_invalid":
        return _openai_error(400, "We could not parse the JSON body of your request.", None, None)
    if param is None:
        return _openai_error(
            400, f"The request body must be a JSON object: {error['msg']}", None, None
        )
    if kind == "missing":
        return _openai_error(
            400, f"Missing required parameter: '{param}'.", param, "missing_required_parameter"
        )
    code = {"too_short": "empty_array", "greater_than_equal": "integer_below_min_value"}.get(
        kind, "invalid_type" if kind.endswith(("_type", "_parsing")) else "invalid_value"
    )
    return _openai_error(400, f"Invalid '{param}': {error['msg']}.", param, code)


async def _on_http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    response = _openai_error(exc.status_code, str(exc.detail), None, None)
    response.headers.update(exc.headers or {})
    return response


def create_app(settings: LlmsimSettings) -> FastAPI:
    """An llmsim app with its own stats and Prometheus registry (so tests can run several)."""
    registry = CollectorRegistry()
    sim = _Simulator(settings, registry)
    app = FastAPI(title="llmsim", version="0.1.0", docs_url=None, redoc_url=None)
    app.state.simulator = sim
    app.add_exception_handler(RequestValidationError, _on_invalid_request)
    app.add_exception_handler(HTTPException, _on_http_error)

    async def readiness() -> dict[str, bool]:
        return {}  # no dependencies: ready whenever it answers

    app.include_router(health_router(registry, readiness))
    models_created = int(time.time())

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest) -> Response:
        return await sim.complete(body)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": models_created, "owned_by": "llmsim"}
                for name in settings.model_names
            ],
        }

    @app.get("/stats")
    async def stats() -> dict[str, int]:
        return asdict(sim.stats)

    @app.post("/stats/reset")
    async def reset_stats() -> dict[str, int]:
        sim.stats.reset()
        return asdict(sim.stats)

    return app
