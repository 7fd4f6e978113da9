"""The worker's core: admit requests up to its capacity, run them, commit, cancel, drain."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import uuid4

import structlog
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from opentelemetry import propagate
from opentelemetry.trace import Tracer
from pydantic import ValidationError

from contracts import (
    CONTROL_EVENT,
    CancelRequested,
    ChatRequested,
    ClientAttached,
    ClientDetached,
    ErrorCode,
    TokenUsage,
    UsageRecorded,
    utcnow,
)
from services.common.logging import bind_request
from services.common.metrics import WorkerMetrics
from services.common.models import ModelsConfig
from services.inference.backends import BackendClients, Route, route_request
from services.inference.coalesce import Window
from services.inference.generation import CANCEL_MSG, Generation, Outcome
from services.inference.offsets import OffsetTracker
from services.inference.reply import ReplyStream, SendFn
from services.inference.settings import InferenceSettings
from services.inference.watchers import Watchers

log = structlog.get_logger("inference")

CommitFn = Callable[[dict[TopicPartition, int]], Awaitable[None]]
DeadLetterFn = Callable[..., Awaitable[Any]]
UsageFn = Callable[[UsageRecorded], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class FlowControl:
    """Pause and resume fetching of every partition the worker holds."""

    pause: Callable[[], None]
    resume: Callable[[], None]


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where a Kafka message came from, so its offset can be committed when it is done."""

    tp: TopicPartition
    offset: int
    key: bytes | None
    commit: CommitFn | None


class Worker:
    """Admits at most `max_concurrency` generations; a full worker blocks its consume loop."""

    def __init__(
        self,
        settings: InferenceSettings,
        models: ModelsConfig,
        clients: BackendClients,
        send: SendFn,
        publish_usage: UsageFn,
        dead_letter: DeadLetterFn,
        metrics: WorkerMetrics | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self._settings = settings
        self._models = models
        self._clients = clients
        self._send = send
        self._publish_usage = publish_usage
        self._dead_letter = dead_letter
        self._metrics = metrics
        self._tracer = tracer
        self._tokens_topic = settings.topics.tokens.name
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._offsets = OffsetTracker()
        self._inflight: dict[str, asyncio.Task[None]] = {}
        # Requests inside `Generation.run`, the only place a cancel is handled: before it, a
        # cancel is remembered for the start; once the generation is ending (its last event
        # is on its way, then its usage and commit), a cancel is too late and must not
        # interrupt that.
        self._generating: dict[str, Generation] = {}
        # Cancels that arrived before their request did (both topics race), kept briefly.
        self._early_cancels: dict[str, float] = {}
        self._closing = False
        self._flow: FlowControl | None = None
        self._window = Window(
            settings.coalesce_ms / 1000, settings.coalesce_busy_ms / 1000, settings.coalesce_busy_at
        )
        self._watchers = Watchers(
            lambda request_id: self.cancel(request_id, "no_watcher"), settings.gateway_silence_s
        )
        self.paused = False
        self.pauses = 0

    def attach_flow_control(self, flow: "FlowControl") -> None:
        """How to stop and restart fetching (the consumer exists only once the broker runs)."""
        self._flow = flow

    @property
    def active(self) -> int:
        return len(self._inflight)

    def _coalesce_window(self) -> float:
        return self._window.at(len(self._inflight))

    async def accept(self, value: bytes, delivery: Delivery, headers: dict[str, str]) -> None:
        await self._slots.acquire()
        if self._closing:  # shutting down: leave it uncommitted for the next owner
            self._slots.release()
            return
        self._offsets.begin(delivery.tp, delivery.offset)
        try:
            request = ChatRequested.model_validate_json(value)
        except ValidationError as exc:
            self._slots.release()
            await self._dead_letter(value=value, delivery=delivery, reason=str(exc))
            await self._finish(delivery)
            return
        if request.request_id in self._inflight:  # redelivered while we still run it
            self._slots.release()
            await self._finish(delivery)
            return
        task = asyncio.create_task(self._serve(request, delivery, headers))
        self._inflight[request.request_id] = task
        self._watchers.track(request.request_id, request.node)
        if len(self._inflight) >= self._settings.max_concurrency and self._flow and not self.paused:
            # Full: stop fetching rather than letting prefetched requests queue up here,
            # where no other worker of the group could take them.
            self.paused = True
            self.pauses += 1
            self._flow.pause()
            log.info("worker_paused", active=len(self._inflight))

    async def control(self, value: bytes, delivery: Delivery) -> None:
        """A control event from `llm.control`: cancel, or a watcher came or went."""
        try:
            event = CONTROL_EVENT.validate_json(value)
        except ValidationError as exc:
            await self._dead_letter(value=value, delivery=delivery, reason=str(exc))
            return
        if isinstance(event, CancelRequested):
            self.cancel(event.request_id, event.reason)
        elif isinstance(event, ClientAttached):
            self._watchers.attach(event.request_id, event.node)
        elif isinstance(event, ClientDetached):
            self._watchers.detach(event.request_id, event.grace_s, event.node)
        else:
            self._watchers.alive(event.node, event.grace_s)

    def cancel(self, request_id: str, reason: str) -> bool:
        """Cancel a request this worker holds; return whether it held it."""
        task = self._inflight.get(request_id)
        generation = self._generating.get(request_id)
        if task is None or generation is None or generation.ending:
            self._remember_early_cancel(request_id)
            return task is not None
        log.info("cancel_requested", request_id=request_id, reason=reason)
        del self._generating[request_id]  # once: a second cancel would cut the first's end
        task.cancel(CANCEL_MSG)
        return True

    async def drain(self, timeout_s: float) -> int:
        """Stop admitting; wait for running generations; return how many were abandoned."""
        self._closing = True
        tasks = list(self._inflight.values())
        if not tasks:
            return 0
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        for task in pending:
            task.cancel()  # uncommitted: the request goes to another worker
        await asyncio.gather(*pending, return_exceptions=True)
        return len(pending)

    def _remember_early_cancel(self, request_id: str) -> None:
        now = time.monotonic()
        self._early_cancels = {r: t for r, t in self._early_cancels.items() if now - t < 300}
        self._early_cancels[request_id] = now

    async def _serve(
        self, request: ChatRequested, delivery: Delivery, headers: dict[str, str]
    ) -> None:
        with bind_request(request_id=request.request_id):
            try:
                await self._generate(request, headers)
            except asyncio.CancelledError:
                log.warning("generation_abandoned", request_id=request.request_id)
                raise
            except Exception:
                # A bug, not bad input: log it loudly but do not block the partition forever.
                log.exception("generation_crashed", request_id=request.request_id)
            finally:
                self._inflight.pop(request.request_id, None)
                self._watchers.untrack(request.request_id)
                self._slots.release()
                self._maybe_resume()
            await self._finish(delivery)

    def _maybe_resume(self) -> None:
        if self.paused and self._flow and len(self._inflight) < self._settings.max_concurrency:
            self.paused = False
            if not self._closing:
                self._flow.resume()
                log.info("worker_resumed", active=len(self._inflight))

    async def _generate(self, request: ChatRequested, headers: dict[str, str]) -> None:
        started_at, t0 = utcnow(), time.monotonic()
        attempt = uuid4().hex[:16]
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        reply = ReplyStream(
            self._send,
            self._tokens_topic,
            request,
            attempt,
            [(k, v.encode()) for k, v in carrier.items()],
        )
        route = route_request(self._models, request)
        if request.request_id in self._early_cancels:
            outcome = Outcome("cancelled", "cancelled", TokenUsage(), None)
            await reply.completed(finish_reason="cancelled", usage=outcome.usage)
        elif utcnow() - request.ts > timedelta(seconds=self._settings.stale_after_s):
            outcome = Outcome("failed", None, TokenUsage(), None, ErrorCode.STREAM_TIMEOUT)
            await reply.failed(
                code=ErrorCode.STREAM_TIMEOUT,
                retryable=True,
                message="request waited too long in the queue",
            )
        else:
            generation = Generation(
                request,
                route,
                self._clients,
                reply,
                coalesce_s=self._coalesce_window,
                retry=self._models.retry,
                deadline=self._deadline(request),
                tracer=self._tracer,
            )
            self._generating[request.request_id] = generation
            try:
                outcome = await generation.run()
            finally:
                self._generating.pop(request.request_id, None)
        await reply.close()
        record = _usage_record(request, attempt, route, outcome, started_at, t0)
        if self._metrics is not None:
            self._metrics.finished(record)
        await self._publish_usage(record)
        log.info(
            "request_finished",
            request_id=request.request_id,
            status=outcome.status,
            tier=route.tier,
            model=route.model,
            tries=len(outcome.tries),
            events=reply.events_sent,
        )

    def _deadline(self, request: ChatRequested) -> float:
        """The request's deadline (or its time plus the default) as event-loop time."""
        deadline = request.deadline or request.ts + timedelta(seconds=self._settings.deadline_s)
        return asyncio.get_running_loop().time() + (deadline - utcnow()).total_seconds()

    async def _finish(self, delivery: Delivery) -> None:
        offset = self._offsets.finish(delivery.tp, delivery.offset)
        if offset is None or delivery.commit is None:
            return
        try:
            await delivery.commit({delivery.tp: offset})
        except KafkaError as exc:
            # Lost the partition in a rebalance: its new owner re-runs what we did not commit.
            log.warning(
                "commit_failed",
                partition=delivery.tp.partition,
                offset=offset,
                error=type(exc).__name__,
            )


def _usage_record(
    request: ChatRequested,
    attempt: str,
    route: Route,
    outcome: Outcome,
    started_at: Any,
    t0: float,
) -> UsageRecorded:
    last = outcome.last or route.plan[0]
    return UsageRecorded(
        request_id=request.request_id,
        attempt=attempt,
        tenant_id=request.tenant_id,
        api=request.api,
        summarised_turns=request.summarised_turns,
        route=route.reason,
        route_score=route.score,
        route_features=route.features,
        tier=last.tier,
        backend=last.backend.name,
        model=last.model,
        usage=outcome.usage,
        cost_usd=last.backend.cost_usd(outcome.usage),
        tries=tuple(outcome.tries),
        ttft_ms=outcome.ttft_ms,
        duration_ms=(time.monotonic() - t0) * 1000,
        finish_reason=outcome.finish_reason,
        status=outcome.status,
        error_code=outcome.error_code,
        started_at=started_at,
        finished_at=utcnow(),
    )
