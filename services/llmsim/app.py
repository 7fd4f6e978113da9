"""The llmsim FastAPI app: OpenAI chat completions with deterministic answers at a set pace."""

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.responses import Response, StreamingResponse

from contracts import EdgeCode
from services.common.health import health_router
from services.common.openai_errors import OpenAIError, install_error_handlers
from services.llmsim import wire
from services.llmsim.answer import Answer, plan
from services.llmsim.faults import (
    NO_FAULT,
    FailCounters,
    Fault,
    FaultSpecError,
    InjectedDisconnect,
    parse_fault,
    request_fault,
)
from services.llmsim.request import ChatCompletionRequest, Options, request_options
from services.llmsim.settings import LlmsimSettings


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
    faults_injected: int = 0
    requests_by_model: dict[str, int] = field(default_factory=dict)
    open_streams_by_model: dict[str, int] = field(default_factory=dict)
    peak_open_streams_by_model: dict[str, int] = field(default_factory=dict)

    def reset(self) -> None:
        """Zero the totals; streams still running stay counted, as they decrement on exit."""
        self.requests_total = self.streams_total = self.tokens_total = 0
        self.streams_completed = self.streams_closed_early = self.faults_injected = 0
        self.peak_open_streams = self.open_streams
        self.requests_by_model.clear()
        self.open_streams_by_model = {m: n for m, n in self.open_streams_by_model.items() if n}
        self.peak_open_streams_by_model = dict(self.open_streams_by_model)


def _pace(ttft_ms: float, tokens_per_second: float) -> tuple[float, float]:
    """(time to first token, interval between tokens), in seconds."""
    return ttft_ms / 1000, 1 / tokens_per_second if tokens_per_second > 0 else 0.0


class _Simulator:
    """Per-app state and the two ways of answering: one JSON object, or a paced stream."""

    def __init__(self, settings: LlmsimSettings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.stats = Stats()
        self.default_fault = parse_fault(settings.fault)
        self.fail_counters = FailCounters()
        self._pace = _pace(settings.ttft_ms, settings.tokens_per_second)
        self._paces = {
            m: _pace(p.ttft_ms, p.tokens_per_second) for m, p in settings.profiles.items()
        }
        self._tokens = Counter("llmsim_tokens", "Completion tokens sent", registry=registry)
        self._open = Gauge("llmsim_open_streams", "Streams in progress", registry=registry)
        self._faults = Counter("llmsim_faults_injected", "Faults injected", registry=registry)

    async def complete(
        self, body: ChatCompletionRequest, options: Options, fault: Fault
    ) -> Response:
        stats, model = self.stats, body.model
        stats.requests_total += 1
        stats.requests_by_model[model] = stats.requests_by_model.get(model, 0) + 1
        if fault.active:
            stats.faults_injected += 1
            self._faults.inc()
        if fault.status is not None:
            return wire.fault_response(fault, fault.status)
        if fault.error_before_first_token and not body.stream:
            return wire.fault_response(fault, 500)
        messages = [m.model_dump() for m in body.messages]
        limit = body.max_completion_tokens or body.max_tokens
        answer = plan(options, messages, limit, self.settings.default_max_tokens)
        tokens = answer.tokens
        completion_id, created = f"chatcmpl-{secrets.token_hex(12)}", int(time.time())
        ttft, interval = self._paces.get(model, self._pace)
        if fault.ttft is not None:
            ttft = fault.ttft
        headers = {"x-llmsim-fault-injected": fault.spec} if fault.active else {}
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            frames = wire.Frames(completion_id, created, model, include_usage)
            return StreamingResponse(
                self._stream(model, frames, answer, ttft, interval, fault),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache", **headers},
            )
        if fault.drop_after is not None:
            sent = min(fault.drop_after, len(tokens))
            return StreamingResponse(
                _drop_later(ttft + sent * interval, fault),
                media_type="application/json",
                headers=headers,
            )
        delay = ttft + len(tokens) * interval + fault.stall
        if delay > 0:
            await asyncio.sleep(delay)
        stats.tokens_total += len(tokens)
        self._tokens.inc(len(tokens))
        body_json = wire.completion(
            completion_id,
            created,
            model,
            answer.message(),
            answer.logprobs(),
            answer.reason,
            answer.usage,
        )
        return JSONResponse(body_json, headers=headers)

    async def _stream(
        self,
        model: str,
        frames: wire.Frames,
        answer: Answer,
        ttft: float,
        interval: float,
        fault: Fault,
    ) -> AsyncIterator[bytes]:
        loop, stats, by_model = (
            asyncio.get_running_loop(),
            self.stats,
            self.stats.open_streams_by_model,
        )
        first_due = loop.time() + ttft
        stats.streams_total += 1
        stats.open_streams += 1
        stats.peak_open_streams = max(stats.peak_open_streams, stats.open_streams)
        by_model[model] = by_model.get(model, 0) + 1
        peaks = stats.peak_open_streams_by_model
        peaks[model] = max(peaks.get(model, 0), by_model[model])
        self._open.inc()
        drop_at, stall_at = fault.drop_after, fault.stall_after if fault.stall else None
        tokens = answer.tokens
        # Plain text keeps its pre-built frames: one concat per token, nothing else added.
        plain = answer.options.plain
        render = frames.content if plain else frames.piece
        opening = frames.role() if plain else frames.opening(answer.opening())
        sent, completed = 0, False
        # Starlette cancels this generator when the client disconnects, and an injected fault
        # raises InjectedDisconnect, which makes uvicorn drop the connection; either way
        # `finally` runs with `completed` still False: the stream was "closed early".
        try:
            yield opening
            if fault.error_before_first_token:
                await asyncio.sleep(first_due - loop.time())
                raise InjectedDisconnect(f"{fault.spec}: before the first token")
            for i, token in enumerate(tokens):
                if i == drop_at:
                    raise InjectedDisconnect(f"{fault.spec}: after {i} tokens")
                if i == stall_at:  # a real pause even when running late, then the same pace
                    first_due = max(first_due, loop.time() - i * interval) + fault.stall
                # An absolute schedule: a late wake-up shortens the next wait, so no drift.
                delay = first_due + i * interval - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent += 1
                stats.tokens_total += 1
                yield render(token)
            if stall_at is not None and stall_at >= len(tokens):
                await asyncio.sleep(fault.stall)
            if drop_at is not None:
                raise InjectedDisconnect(f"{fault.spec}: after all {len(tokens)} tokens")
            yield frames.finish(answer.reason)
            if frames.include_usage:
                yield frames.usage(answer.usage)
            yield wire.DONE
            completed = True
        finally:
            stats.open_streams -= 1
            by_model[model] -= 1
            if completed:
                stats.streams_completed += 1
            else:
                stats.streams_closed_early += 1
            self._open.dec()
            self._tokens.inc(sent)


async def _drop_later(delay: float, fault: Fault) -> AsyncIterator[bytes]:
    """A non-stream body that never comes: the connection drops after the headers."""
    await asyncio.sleep(delay)
    raise InjectedDisconnect(f"{fault.spec}: before the body")
    yield b""  # pragma: no cover - makes this an async generator


def create_app(settings: LlmsimSettings) -> FastAPI:
    """An llmsim app with its own stats and Prometheus registry (so tests can run several)."""
    registry = CollectorRegistry()
    sim = _Simulator(settings, registry)
    app = FastAPI(title="llmsim", version="0.1.0", docs_url=None, redoc_url=None)
    app.state.simulator = sim
    install_error_handlers(app, on_invalid=wire.invalid_request)
    wire.quiet_injected_disconnects()

    async def readiness() -> dict[str, bool]:
        return {}  # no dependencies: ready whenever it answers

    app.include_router(health_router(registry, readiness))
    models_created = int(time.time())

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        options = request_options(body)  # raises OpenAIError, answered as OpenAI's 400
        try:
            fault, key = request_fault(request.headers, body.metadata, sim.default_fault)
        except FaultSpecError as exc:
            message = f"Invalid llmsim fault spec: {exc}"
            return OpenAIError(
                400, message, param=exc.param, code=EdgeCode.INVALID_VALUE
            ).response()
        applies = fault.hits(body.model) and sim.fail_counters.applies(fault, key)
        return await sim.complete(body, options, fault if applies else NO_FAULT)

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
    async def stats() -> dict[str, Any]:
        return asdict(sim.stats)

    @app.post("/stats/reset")
    async def reset_stats() -> dict[str, Any]:
        sim.stats.reset()
        return asdict(sim.stats)

    return app
