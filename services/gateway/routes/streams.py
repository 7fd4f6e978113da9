"""GET /v1/streams/{id}: watch or resume a request's stream (on any node); DELETE cancels.

Only the tenant that made a request can reach it: the id carries a keyed tag of its tenant,
and another tenant's id answers 404, exactly like one that never existed.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from sse_starlette import EventSourceResponse

from services.gateway.auth import CallerDep
from services.gateway.node import NodeDep
from services.gateway.sse import FrameRenderer, sse_frames
from services.gateway.submit import cancel, watch

router = APIRouter()

LastEventIdHeader = Annotated[
    int | None, Header(alias="last-event-id", ge=-1, description="Resume after this event id")
]
LastEventIdQuery = Annotated[
    int | None, Query(ge=-1, description="Same as Last-Event-ID, for clients without headers")
]


@router.get("/v1/streams/{request_id}", response_model=None)
async def watch_stream(
    request_id: str,
    node: NodeDep,
    caller: CallerDep,
    last_event_id: LastEventIdHeader = None,
    after: LastEventIdQuery = None,
) -> EventSourceResponse:
    stream = await watch(node, caller, request_id)
    resume_after = last_event_id if last_event_id is not None else after
    frames = sse_frames(
        stream, FrameRenderer(request_id, -1 if resume_after is None else resume_after)
    )
    return EventSourceResponse(
        frames,
        headers={"x-request-id": request_id},
        sep="\n",
        ping=15,
        send_timeout=node.settings.send_timeout_s,
    )


@router.delete("/v1/streams/{request_id}", status_code=202)
async def cancel_stream(request_id: str, node: NodeDep, caller: CallerDep) -> dict[str, Any]:
    await cancel(node, caller, request_id)
    return {"id": request_id, "object": "chat.completion.cancel", "status": "cancelling"}
