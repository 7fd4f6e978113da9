"""GatewayNode: what one gateway process holds (hub, reader, publisher) and its FastAPI deps."""

import itertools
from dataclasses import dataclass, field
from typing import Annotated

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

    def reply_partition(self) -> int:
        """Spread this node's requests over the partitions it reads."""
        return next(self._next_partition)


def get_node(request: Request) -> GatewayNode:
    return request.app.state.node  # type: ignore[no-any-return]


NodeDep = Annotated[GatewayNode, Depends(get_node)]
