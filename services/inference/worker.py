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
from pydantic import ValidationError

from contracts import (
    CancelRequested,
    ChatRequested,
    ErrorCode,
    TokenUsage,
    UsageRecorded,
    utcnow,
)
from services.common.logging import bind_request
from services.common.models import ModelsConfig
from services.inference.backends import BackendClients, Route, route_request
from services.inference.generation import CANCEL_MSG, Generation, Outcome
from services.inference.offsets import OffsetTracker
from services.inference.reply import ReplyStream, SendFn
from services.inference.settings import InferenceSettings

log = structlog.get_logger("inference")

CommitFn = Callable[[dict[TopicPartition, int]], Awaitable[None]]
DeadLetterFn = Callable[..., Awaitable[Any]]
UsageFn = Callable[[UsageRecorded], Awaitable[Any]]


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
    ) -> None:
        self._settings = settings
        self._models = models
        self._clients = clients
        self._send = send
        self._publish_usage = publish_usage
        self._dead_letter = dead_letter
        self._tokens_topic = settings.topics.tokens.name
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._offsets = OffsetTracker()
        self._inflight: dict[str, asyncio.Task[None]] = {}
        # Cancels that arrived before their request did (both topics race), kept briefly.
        self._early_cancels: dict[str, float] = {}
        self._closing = False

    @property
    def active(self) -> int:
        return len(self._inflight)

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

    async def cancel(self, value: bytes, delivery: Delivery) -> bool:
        """Cancel a request this worker holds; return whether it held it."""
        try:
            command = CancelRequested.model_validate_json(value)
        except ValidationError as exc:
            await self._dead_letter(value=value, delivery=delivery, reason=str(exc))
            return False
        task = self._inflight.get(command.request_id)
        if task is None:
            self._remember_early_cancel(command.request_id)
            return False
        log.info("cancel_requested", request_id=command.request_id, reason=command.reason)
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
                self._slots.release()
            await self._finish(delivery)

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
        route = route_request(self._models, request.model)
        if request.request_id in self._early_cancels:
            outcome = Outcome("cancelled", "cancelled", _zero_usage(), None)
            await reply.started(
                model=route.model,
                tier=route.tier,
                route_reason=route.reason,
                created=int(time.time()),
            )
            await reply.completed(finish_reason="cancelled", usage=outcome.usage)
        elif utcnow() - request.ts > timedelta(seconds=self._settings.stale_after_s):
            outcome = Outcome("failed", None, _zero_usage(), None, ErrorCode.STREAM_TIMEOUT)
            await reply.failed(
                code=ErrorCode.STREAM_TIMEOUT,
                retryable=True,
                message="request waited too long in the queue",
            )
        else:
            generation = Generation(
                request,
                route,
                self._clients.get(route.backend),
                reply,
                self._settings.coalesce_ms / 1000,
            )
            outcome = await generation.run()
        await reply.close()
        await self._publish_usage(_usage_record(request, attempt, route, outcome, started_at, t0))
        log.info(
            "request_finished",
            request_id=request.request_id,
            status=outcome.status,
            tier=route.tier,
            model=route.model,
            events=reply.events_sent,
        )

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


def _zero_usage() -> TokenUsage:
    return TokenUsage()


def _usage_record(
    request: ChatRequested,
    attempt: str,
    route: Route,
    outcome: Outcome,
    started_at: Any,
    t0: float,
) -> UsageRecorded:
    return UsageRecorded(
        request_id=request.request_id,
        attempt=attempt,
        tenant_id=request.tenant_id,
        route=route.reason,
        route_score=route.score,
        tier=route.tier,
        backend=route.backend.name,
        model=route.model,
        usage=outcome.usage,
        ttft_ms=outcome.ttft_ms,
        duration_ms=(time.monotonic() - t0) * 1000,
        finish_reason=outcome.finish_reason,
        status=outcome.status,
        error_code=outcome.error_code,
        started_at=started_at,
        finished_at=utcnow(),
    )
