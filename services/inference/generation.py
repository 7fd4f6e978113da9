"""One generation: retries and fallbacks before the first token, then a stream of events.

Before any text reached the client, a failed backend call is safe to repeat: it is retried
with backoff, then the next backend of the plan is tried (the tier's others, then the
fallback tier). After text, repeating would splice two answers, so a broken or stalled
upstream ends in a retryable `failed` instead. A deadline bounds all of it.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import httpx2
import openai
from httpx_sse import EventSource
from openai.types.chat import ChatCompletionMessageParam
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer
from pydantic_core import from_json
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from contracts import BackendTry, ChatRequested, ErrorCode, TokenUsage
from services.common.models import BackendSpec, RetryPolicy
from services.inference.backends import BackendClients, PlannedTry, Route
from services.inference.coalesce import Coalescer, Piece
from services.inference.pieces import pieces, usage_of
from services.inference.reply import ReplyStream

# Parameters the worker sets itself; everything else the client sent goes through unchanged.
_OWN_PARAMS = frozenset({"model", "messages", "stream", "stream_options"})
# `task.cancel(CANCEL_MSG)` means "a client asked to stop"; any other cancellation (shutdown)
# propagates, leaving the request uncommitted so another worker takes it.
CANCEL_MSG = "tokenbus:cancel"
_STALL_SLACK = 1.5  # a stalled stream fails between idle_timeout_s and this many times it
# The SDK's transport is httpx2 (a fork); errors while reading a body surface from it raw.
_STREAM_ERRORS = (openai.OpenAIError, httpx.HTTPError, httpx2.HTTPError, ValueError)


@dataclass(slots=True)
class Outcome:
    """How a generation ended, for the usage record."""

    status: str  # ok | failed | cancelled
    finish_reason: str | None
    usage: TokenUsage
    ttft_ms: float | None
    error_code: ErrorCode | None = None
    tries: list[BackendTry] = field(default_factory=list)
    last: PlannedTry | None = None


class BeforeText(Exception):
    """A try failed before any text reached the client: safe to retry or fall back."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code


async def _chunks(response: Any) -> AsyncIterator[dict[str, Any]]:
    """The chunks of an OpenAI chat stream, as dicts, until `[DONE]`; an error frame raises."""
    done = False
    async for sse in EventSource(response.http_response).aiter_sse():
        # After [DONE], read on to the end of the body (nothing more comes): a fully read
        # response lets the connection be reused instead of a new one (and TLS) per request.
        if done or sse.data == "[DONE]":
            done = True
            continue
        chunk = from_json(sse.data)
        if not isinstance(chunk, dict):
            raise ValueError("a stream chunk that is not a JSON object")
        if "error" in chunk:  # how OpenAI-compatible servers report errors mid-stream
            error = chunk["error"] if isinstance(chunk["error"], dict) else {}
            raise openai.APIError(
                str(error.get("message", "stream error")),
                response.http_response.request,
                body=error,
            )
        yield chunk


def classify_error(exc: BaseException) -> ErrorCode:
    """Map an SDK or transport error to the one shared error code enum."""
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException | httpx2.TimeoutException):
        return ErrorCode.BACKEND_TIMEOUT
    if isinstance(exc, openai.APIConnectionError | httpx.TransportError | httpx2.TransportError):
        return ErrorCode.BACKEND_UNAVAILABLE
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status in (408, 409, 429) or status >= 500:
            return ErrorCode.BACKEND_UNAVAILABLE if status >= 500 else ErrorCode.OVERLOADED
        return ErrorCode.INVALID_REQUEST
    return ErrorCode.BACKEND_ERROR


def _public_message(exc: BaseException, code: ErrorCode) -> str:
    # Backend error bodies can echo request details; status and type are enough for clients.
    if isinstance(exc, openai.APIStatusError):
        return f"model backend answered HTTP {exc.status_code} ({code.value})"
    return f"model backend failed: {type(exc).__name__} ({code.value})"


def estimate_prompt_tokens(request: ChatRequested) -> int:
    """A rough count (4 characters a token) for when the backend reports no usage."""
    chars = sum(len(str(m.content or "")) for m in request.messages)
    return max(1, chars // 4) + 3 * len(request.messages)


class Generation:
    """Streams `request` along its plan into `reply`; never raises for backend trouble."""

    def __init__(
        self,
        request: ChatRequested,
        route: Route,
        clients: BackendClients,
        reply: ReplyStream,
        *,
        coalesce_s: float | Callable[[], float],
        retry: RetryPolicy,
        deadline: float | None,
        tracer: Tracer | None = None,
    ) -> None:
        self.request = request
        self.route = route
        self._clients = clients
        self._reply = reply
        self._retry = retry
        self._deadline = deadline  # event-loop time
        self._coalescer = Coalescer(coalesce_s, self._emit_delta)
        self._t0 = time.monotonic()
        self._ttft_ms: float | None = None
        self._chunks = 0
        self._usage: TokenUsage | None = None
        self._finish_reason: str | None = None
        self._first_delta = True
        self._tries: list[BackendTry] = []
        # Set once the last event is being sent: a cancel now would end the request twice
        # (a `completed` already on its way, then `cancelled`), so the worker ignores it.
        self.ending = False
        self._last_code: ErrorCode | None = None
        self._current: PlannedTry | None = None
        self._tracer = tracer or trace.get_tracer("tokenbus.inference")

    async def run(self) -> Outcome:
        try:
            async with asyncio.timeout_at(self._deadline):
                return await self._run_plan()
        except TimeoutError:
            return await self._end_failed(
                ErrorCode.DEADLINE_EXCEEDED, "the request's deadline passed"
            )
        except asyncio.CancelledError as exc:
            if CANCEL_MSG not in exc.args:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            return await self._end("cancelled", "cancelled", None)

    async def _run_plan(self) -> Outcome:
        failure = BeforeText(ErrorCode.BACKEND_UNAVAILABLE, "no backend to try")
        for planned in self.route.plan:
            try:
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(self._retry.attempts),
                    wait=wait_exponential_jitter(
                        multiplier=self._retry.initial_backoff_s,
                        max=self._retry.max_backoff_s,
                        jitter=self._retry.initial_backoff_s,
                    ),
                    retry=retry_if_exception(
                        lambda e: isinstance(e, BeforeText) and e.code.retryable
                    ),
                    reraise=True,
                ):
                    with attempt:
                        return await self._try(planned)
            except BeforeText as exc:
                failure = exc
                if not exc.code.retryable:
                    break  # the request itself is bad: no other backend will like it either
        return await self._end_failed(failure.code, str(failure))

    async def _try(self, planned: PlannedTry) -> Outcome:
        self._current = planned
        await self._reply.started(
            model=planned.model,
            tier=planned.tier,
            backend=planned.backend.name,
            route_reason=self.route.reason,
            route_score=self.route.score,
            route_features=self.route.features,
            try_no=len(self._tries),
            retry_reason=self._last_code.value if self._last_code else None,
            include_usage=self.request.include_usage,
            created=int(time.time()),
        )
        t0 = time.monotonic()
        outcome = "ok"
        # The backend call in the request's trace (under the worker's consume span), with the
        # GenAI attributes: models and token counts, never the prompt or the answer.
        span = self._tracer.start_span(
            f"chat {planned.model}",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": planned.model,
                "tokenbus.backend": planned.backend.name,
                "tokenbus.tier": planned.tier,
                "tokenbus.try": len(self._tries),
            },
        )
        try:
            with trace.use_span(span, end_on_exit=False):
                async with self._clients.slot(planned.backend):
                    result = await self._stream(planned)
            self._end_span(span, planned, result)
            return result
        except BeforeText as exc:
            outcome = exc.code.value
            self._last_code = exc.code
            span.set_attribute("error.type", exc.code.value)
            span.set_status(StatusCode.ERROR)
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            span.end()
            self._tries.append(
                BackendTry(
                    backend=planned.backend.name,
                    model=planned.model,
                    tier=planned.tier,
                    outcome=outcome,
                    duration_ms=(time.monotonic() - t0) * 1000,
                )
            )

    def _end_span(self, span: Span, planned: PlannedTry, result: Outcome) -> None:
        if not span.is_recording():
            return
        span.set_attribute("gen_ai.response.model", planned.model)
        span.set_attribute("gen_ai.usage.input_tokens", result.usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", result.usage.completion_tokens)
        if result.finish_reason:
            span.set_attribute("gen_ai.response.finish_reasons", [result.finish_reason])
        if result.error_code is not None:
            span.set_attribute("error.type", result.error_code.value)
            span.set_status(StatusCode.ERROR)

    async def _stream(self, planned: PlannedTry) -> Outcome:
        backend = planned.backend
        params = {k: v for k, v in self.request.params.items() if k not in _OWN_PARAMS}
        started = time.monotonic()
        # The SDK's raw streaming response: the same call, errors and retries policy, but
        # chunks are parsed as plain dicts; building SDK models per token cost ~half the
        # worker's CPU (measured with py-spy).
        call = self._clients.get(backend).chat.completions.with_streaming_response.create(
            model=planned.model,
            # Our contract's messages, validated, in OpenAI's shape: the SDK's TypedDicts.
            messages=cast(
                "list[ChatCompletionMessageParam]",
                [m.model_dump(exclude_none=True) for m in self.request.messages],
            ),
            stream=True,
            stream_options={"include_usage": True},
            extra_body=params,
        )
        try:
            async with asyncio.timeout(backend.first_token_timeout_s):
                response = await call.__aenter__()
        except TimeoutError as exc:
            raise BeforeText(ErrorCode.BACKEND_TIMEOUT, "no response in time") from exc
        except _STREAM_ERRORS as exc:
            raise BeforeText(
                classify_error(exc), _public_message(exc, classify_error(exc))
            ) from exc
        try:
            chunks = _chunks(response)
            await self._until_first_text(chunks, backend, started)
            return await self._rest(chunks, backend)
        finally:
            # Closing the HTTP response is what makes the provider stop generating (and billing).
            await asyncio.shield(call.__aexit__(None, None, None))

    async def _until_first_text(
        self, chunks: AsyncIterator[Any], backend: BackendSpec, started: float
    ) -> None:
        while self._chunks == 0:
            remaining = backend.first_token_timeout_s - (time.monotonic() - started)
            try:
                async with asyncio.timeout(max(remaining, 0)):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return  # an empty answer is still an answer
            except TimeoutError as exc:
                raise BeforeText(ErrorCode.BACKEND_TIMEOUT, "first token too slow") from exc
            except _STREAM_ERRORS as exc:
                code = classify_error(exc)
                raise BeforeText(code, _public_message(exc, code)) from exc
            await self._on_chunk(chunk)

    async def _rest(self, chunks: AsyncIterator[Any], backend: BackendSpec) -> Outcome:
        idle = backend.idle_timeout_s
        loop = asyncio.get_running_loop()
        failure: BaseException | None = None
        try:
            # One deadline for the whole stream, moved forward only when it comes within
            # `idle` of now: a stall is caught between `idle` and 1.5 x `idle` after the last
            # chunk, and a chunk costs a clock read instead of a timer set and cancelled.
            async with asyncio.timeout_at(loop.time() + _STALL_SLACK * idle) as stall:
                while True:
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                    except _STREAM_ERRORS as exc:
                        failure = exc
                        break
                    now = loop.time()
                    if (stall.when() or now) - now < idle:
                        stall.reschedule(now + _STALL_SLACK * idle)
                    await self._on_chunk(chunk)
        except TimeoutError:
            return await self._end_failed(
                ErrorCode.STREAM_TIMEOUT, "the model backend stalled mid-answer"
            )
        if failure is not None:
            code = classify_error(failure)
            code = ErrorCode.BACKEND_ERROR if code == ErrorCode.INVALID_REQUEST else code
            return await self._end_failed(code, _public_message(failure, code))
        return await self._end("ok", self._finish_reason or "stop", None)

    async def _on_chunk(self, chunk: dict[str, Any]) -> None:
        usage = chunk.get("usage")
        if usage:
            self._usage = usage_of(usage)
        for choice in chunk.get("choices") or ():
            for piece in pieces(choice.get("delta") or {}, choice.get("logprobs")):
                if self._ttft_ms is None:
                    self._ttft_ms = (time.monotonic() - self._t0) * 1000
                self._chunks += 1
                await self._coalescer.add(piece)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]

    async def _emit_delta(self, piece: Piece) -> None:
        first, self._first_delta = self._first_delta, False
        await self._reply.delta(piece, first)

    def _estimated_usage(self) -> TokenUsage:
        prompt = estimate_prompt_tokens(self.request)
        return TokenUsage(
            prompt_tokens=prompt,
            completion_tokens=self._chunks,
            total_tokens=prompt + self._chunks,
            estimated=True,
        )

    async def _end(self, status: str, finish: str, code: ErrorCode | None) -> Outcome:
        self.ending = True
        await self._coalescer.flush()
        usage = self._usage if status == "ok" and self._usage else self._estimated_usage()
        await self._reply.completed(finish_reason=finish, usage=usage)
        return Outcome(status, finish, usage, self._ttft_ms, code, self._tries, self._current)

    async def _end_failed(self, code: ErrorCode, message: str) -> Outcome:
        self.ending = True
        await self._coalescer.flush()
        usage = self._estimated_usage()
        await self._reply.failed(
            code=code,
            message=message,
            retryable=code.retryable,
            usage=usage if self._chunks else None,
        )
        return Outcome("failed", None, usage, self._ttft_ms, code, self._tries, self._current)
