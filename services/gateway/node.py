"""GatewayNode: what one gateway process holds (hub, reader, publisher, auth, limits) and its
FastAPI deps."""

import asyncio
import itertools
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import structlog
from fastapi import Depends, Request
from opentelemetry.trace import Tracer
from prometheus_client import Counter
from sqlalchemy.exc import SQLAlchemyError

from contracts import new_request_id, request_belongs
from services.common.metrics import GatewayMetrics
from services.common.models import ModelsConfig
from services.fanout import Hub, ReplyReader
from services.gateway.callers import Authenticator
from services.gateway.conversations.store import ConversationStore
from services.gateway.publish import RequestPublisher
from services.gateway.responses.store import ResponseStore
from services.gateway.settings import GatewaySettings
from services.tenants.limiter import RateLimiter, Ticket

log = structlog.get_logger("gateway")
# After the drain deadline, before the server closes what is left: the errors go out.
_LAST_FRAMES_S = 0.5


@dataclass
class GatewayNode:
    settings: GatewaySettings
    hub: Hub
    reader: ReplyReader
    publisher: RequestPublisher
    models: ModelsConfig
    auth: Authenticator = field(default_factory=lambda: Authenticator(None))
    limiter: RateLimiter | None = None  # None: open mode, nothing is limited
    slow_consumer_drops: Counter | None = None
    metrics: GatewayMetrics | None = None  # None in unit tests that build a bare node
    tracer: Tracer | None = None
    responses: ResponseStore | None = None  # the Responses API index (None: no database)
    conversations: ConversationStore | None = None  # server-side memory (None: no database)
    draining: bool = False  # SIGTERM: no new requests, open streams end at the deadline
    streams: set[Any] = field(default_factory=set)  # open EventStreams (drained on SIGTERM)
    drain_hooks: list[Callable[[], None]] = field(default_factory=list)  # at the deadline too
    _next_partition: Iterator[int] = field(init=False)
    _loop: asyncio.AbstractEventLoop | None = field(init=False, default=None)
    _background: set[asyncio.Task[None]] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self._next_partition = itertools.cycle(self.settings.reply_partitions)
        self._id_secret = self.settings.id_secret.get_secret_value().encode()

    def bind_loop(self) -> None:
        """Remember the serving loop, for `request_drain` from a signal handler."""
        self._loop = asyncio.get_running_loop()

    def request_drain(self, then: Callable[[], None]) -> None:
        """Safe from a signal handler: drain on the serving loop, then call `then` (the
        server's own shutdown, which closes every socket left)."""
        if self._loop is None:  # not serving yet: nothing to drain
            then()
        else:
            self._loop.call_soon_threadsafe(self.start_drain, then)

    def start_drain(self, then: Callable[[], None] | None = None) -> None:
        """Stop taking requests (readiness goes false), let open streams and room sockets run
        for `drain_timeout_s`, then end each with a resumable error: its client resumes from
        its last event on another node, and the worker keeps generating meanwhile (grace
        period). `then` runs a moment later, once those errors are out."""
        if self.draining:
            return
        self.draining = True
        log.info(
            "gateway_draining", streams=len(self.streams), within_s=self.settings.drain_timeout_s
        )
        loop = asyncio.get_running_loop()
        loop.call_later(self.settings.drain_timeout_s, self._cut_streams)
        if then is not None:
            loop.call_later(self.settings.drain_timeout_s + _LAST_FRAMES_S, then)

    def _cut_streams(self) -> None:
        log.info("gateway_drain_deadline", streams=len(self.streams))
        for stream in list(self.streams):
            stream.cut_for_drain()
        for hook in self.drain_hooks:
            hook()

    def fire(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `work` in the background (also from a request being torn down), keeping a
        reference so the task is not garbage-collected half-way."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def detach(self, request_id: str) -> None:
        """The client left before the end: the worker keeps going for the grace period."""
        self.fire(self.publisher.detached(request_id, self.settings.disconnect_grace_s))

    def dropped(self, request_id: str) -> None:
        """A client fell too far behind and lost its feed (it may resume)."""
        log.info("slow_consumer_dropped", request_id=request_id)
        if self.slow_consumer_drops is not None:
            self.slow_consumer_drops.inc()

    def reply_partition(self) -> int:
        """Spread this node's requests over the partitions it reads."""
        return next(self._next_partition)

    def new_request_id(self, partition: int, tenant: str, created_ms: int) -> str:
        return new_request_id(partition, created_ms, tenant, self._id_secret)

    def owns(self, request_id: str, tenant: str) -> bool:
        """The id is one of ours, made for `tenant`, on a partition that exists."""
        if not request_belongs(request_id, tenant, self._id_secret):
            return False
        partition = int(request_id.split("-")[2])
        return partition < self.settings.topics.tokens.partitions

    def release(self, ticket: Ticket | None, total_tokens: int | None) -> None:
        """A stream ended: free its concurrency slot and correct its token estimate."""
        if ticket is not None and self.limiter is not None:
            self.fire(self._release(self.limiter, ticket, total_tokens))

    async def _release(self, limiter: RateLimiter, ticket: Ticket, tokens: int | None) -> None:
        try:
            await limiter.finish(ticket, tokens)
        except (SQLAlchemyError, OSError) as exc:  # the lease expires on its own
            log.warning("limits_release_failed", error=type(exc).__name__)


async def get_node(request: Request) -> GatewayNode:
    # async: FastAPI runs a plain `def` dependency in a worker thread, on every request.
    return request.app.state.node


NodeDep = Annotated[GatewayNode, Depends(get_node)]
