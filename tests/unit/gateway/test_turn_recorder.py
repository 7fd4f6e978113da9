"""A conversation's turn is kept however its request ends, on a real store (SQLite).

The gateway keeps the turn while the last events go out, inside the request's task. A client
that leaves at that moment (a Stop in the web chat: a cancel and a closed connection at once)
cancels that task; the turn must still be written whole and the conversation let go.
"""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from contracts import Completed, Delta, Started, TokenUsage
from services.common.database import migrate
from services.gateway.app import create_app
from services.gateway.callers import Caller
from services.gateway.conversations.memory import Turn, TurnRecorder
from services.gateway.conversations.store import ConversationStore
from services.gateway.node import GatewayNode
from services.gateway.settings import GatewaySettings
from tests.fakes import eventually

TENANT = "acme"
RID = "chatcmpl-turn"
QUESTION: dict[str, Any] = {"type": "message", "role": "user", "content": "Stop me, then reload"}


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[GatewayNode]:
    """A gateway node without its lifespan (no broker needed here), on its own SQLite file."""
    settings = GatewaySettings(  # type: ignore[call-arg]
        bootstrap_servers="127.0.0.1:1",
        models="sim",
        llmsim_url="http://127.0.0.1:1/v1",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
    )
    app = create_app(settings)
    await migrate(app.state.engine)
    try:
        yield app.state.node
    finally:
        await app.state.engine.dispose()


def store_of(node: GatewayNode) -> ConversationStore:
    assert node.conversations is not None
    return node.conversations


async def held_turn(node: GatewayNode) -> Turn:
    conv, _ = await store_of(node).create(TENANT, {}, [])
    turn = Turn(conv, [])
    assert await store_of(node).acquire(conv.id, TENANT, turn.lease, 60)
    return turn


def started() -> Started:
    return Started(
        request_id=RID,
        seq=0,
        attempt="a1",
        model="llmsim-large",
        tier="large",
        backend="sim",
        route_reason="explicit",
        created=1,
    )


async def released(store: ConversationStore, conv_id: str) -> bool:
    """Whether another request can take the conversation now."""
    if await store.acquire(conv_id, TENANT, "another-request", 60):
        await store.release(conv_id, "another-request")
        return True
    return False


@pytest.mark.parametrize("finish", ["cancelled", "stop"])
async def test_a_client_leaving_while_the_turn_is_written_does_not_lose_it(
    node: GatewayNode, finish: str
) -> None:
    store = store_of(node)
    turn = await held_turn(node)
    recorder = TurnRecorder(node, Caller(TENANT), store, turn, RID, [QUESTION])
    delta = Delta(request_id=RID, seq=1, attempt="a1", content="Half")
    usage = TokenUsage(prompt_tokens=5, completion_tokens=1, total_tokens=6)
    end = Completed(request_id=RID, seq=2, attempt="a1", finish_reason=finish, usage=usage)
    request = asyncio.create_task(recorder.events([started(), delta, end]))
    # Rendering is synchronous: one turn of the loop takes the request to its first real
    # wait, the write of the turn. The client leaves there.
    await asyncio.sleep(0)
    assert not request.done()
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    await recorder.closed(finished=False)  # what the stream does next; nothing more to keep

    async def kept() -> bool:
        return len(await store.items_since(turn.conversation.id, TENANT, 0) or []) == 2

    await eventually(kept, within=10)
    items = await store.items_since(turn.conversation.id, TENANT, 0) or []
    assert items[0].data["role"] == "user"
    answer = items[1].data
    if finish == "cancelled":
        assert answer["status"] == "incomplete"  # the marker, not half an answer
    else:
        assert answer["content"][0]["text"] == "Half"
    await eventually(lambda: released(store, turn.conversation.id), within=10)
