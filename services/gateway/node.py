"""GatewayNode: what one gateway process holds (hub, reader, publisher) and its FastAPI deps."""

import asyncio
import itertools
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from services.common.models import ModelsConfig
from services.fanout import Hub, ReplyReader
from services.gateway.publish import RequestPublisher
from services.gateway.settings import GatewaySettings


@dataclass
class GatewayNode:
    settings: GatewaySettings
    hub: Hub
    reader: ReplyReader
    publisher: RequestPublisher
    models: ModelsConfig
    _next_partition: itertools.cycle = field(init=False)  # type: ignore[type-arg]

    def __post_init__(self) -> None:
        self._next_partition = itertools.cycle(self.settings.reply_partitions)

    _background: set[asyncio.Task[None]] = field(init=False, default_factory=set)

    def fire(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in the background (also from a request being torn down), keeping a
        reference so the task is not garbage-collected half-way."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def detach(self, request_id: str) -> None:
        """The client left before the end: the worker keeps going for the grace period."""
        self.fire(self.publisher.detached(request_id, self.settings.disconnect_grace_s))

    def reply_partition(self) -> int:
        """Spread this node's requests over the partitions it reads."""
        return next(self._next_partition)


def get_node(request: Request) -> GatewayNode:
    return request.app.state.node  # type: ignore[no-any-return]


NodeDep = Annotated[GatewayNode, Depends(get_node)]
