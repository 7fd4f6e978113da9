"""`previous_response_id`: the earlier responses of a chain as history, from the index (what
each was asked) and the log (what each answered); their `instructions` stay behind."""

from typing import Any

from contracts import EdgeCode
from services.common.openai_errors import OpenAIError
from services.gateway.callers import Caller
from services.gateway.conversations.memory import as_input
from services.gateway.node import GatewayNode
from services.gateway.responses.events import ResponseRenderer
from services.gateway.responses.lookup import created_at, owned, snapshot_now
from services.gateway.responses.wire import input_messages

MAX_CHAIN = 64  # earlier responses followed at most; a longer chain is a 400

Json = dict[str, Any]


async def history(node: GatewayNode, caller: Caller, previous_id: str) -> list[Json]:
    """The messages of the chain that ends in `previous_id`, oldest first."""
    turns: list[list[Json]] = []
    current: str | None = previous_id
    while current is not None:
        if len(turns) == MAX_CHAIN:
            raise OpenAIError(
                400,
                f"A chain of previous responses may be at most {MAX_CHAIN} long.",
                param="previous_response_id",
                code=EdgeCode.INVALID_VALUE,
            )
        record = await owned(node, caller, current)
        renderer = ResponseRenderer(current, created_at(record.request_id), record.shell)
        answer = await snapshot_now(node, caller, record, renderer)
        if answer["status"] in ("queued", "in_progress"):
            raise OpenAIError(
                400,
                f"Response '{current}' has not finished; continue from it once it has.",
                param="previous_response_id",
                code=EdgeCode.INVALID_VALUE,
            )
        output = [as_input(i) for i in answer["output"] if i["type"] != "reasoning"]
        turns.insert(0, [*record.input_items, *output])
        current = record.shell.get("previous_response_id")
    return input_messages([item for turn in turns for item in turn])
