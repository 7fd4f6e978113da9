"""A request's stream events as the Responses API's events, and the Response they describe.

Rendering is a pure function of the event log, so every node numbers the events the same
way: a stream resumed with `starting_after=N` on any node continues exactly at N + 1.
"""

import copy
from typing import Any

from contracts import Completed, Delta, ErrorCode, Failed, Started, StreamEvent, TokenUsage

Json = dict[str, Any]

# finish_reason -> (status, incomplete_details.reason)
_ENDINGS: dict[str, tuple[str, str | None]] = {
    "length": ("incomplete", "max_output_tokens"),
    "content_filter": ("incomplete", "content_filter"),
    # OpenAI's stream has no event of its own for a cancel: `response.incomplete` ends it,
    # with the response's status `cancelled`.
    "cancelled": ("cancelled", None),
}
_TERMINAL_EVENT = {
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "cancelled": "response.incomplete",
    "failed": "response.failed",
}


class ResponseRenderer:
    """Folds one request's ordered events into Responses events numbered from 0 and keeps
    the Response object (status, output so far, usage) up to date."""

    def __init__(self, response_id: str, created_at: int, shell: Json) -> None:
        self.seq = 0
        self._key = response_id[-16:]
        self._background = bool(shell.get("background"))
        self.response: Json = {
            "id": response_id,
            "object": "response",
            "created_at": created_at,
            "status": "queued" if self._background else "in_progress",
            "error": None,
            "incomplete_details": None,
            "output": [],
            "usage": None,
            "completed_at": None,
            **shell,
        }
        self._started = False
        self._item: Json | None = None  # the output item being streamed
        self._part: Json | None = None  # its content part being streamed
        self._calls: dict[int, Json] = {}  # tool call index -> its function_call item

    @property
    def done(self) -> bool:
        return self.response["status"] not in ("queued", "in_progress")

    def snapshot(self) -> Json:
        return copy.deepcopy(self.response)

    def render(self, event: StreamEvent) -> list[Json]:
        if isinstance(event, Started):
            return self._start(event)
        if not self._started or self.done:
            return []
        if isinstance(event, Delta):
            return self._delta(event)
        if isinstance(event, Completed):
            status, reason = _ENDINGS.get(event.finish_reason, ("completed", None))
            return self._end(event, status, reason)
        if isinstance(event, Failed):
            return self._fail(event)
        return []

    def _emit(self, type_: str, **fields: Any) -> Json:
        event = {"type": type_, "sequence_number": self.seq, **fields}
        self.seq += 1
        return event

    def _lifecycle(self, type_: str) -> Json:
        return self._emit(type_, response=self.snapshot())

    def _start(self, event: Started) -> list[Json]:
        self.response["model"] = event.model  # a retry or fallback names the model that answers
        if self._started:
            return []
        self._started = True
        out = [self._lifecycle("response.created")]
        if self._background:
            out.append(self._lifecycle("response.queued"))
        self.response["status"] = "in_progress"
        out.append(self._lifecycle("response.in_progress"))
        return out

    def _delta(self, event: Delta) -> list[Json]:
        out: list[Json] = []
        if event.reasoning is not None:
            out += self._text("reasoning", "reasoning_text", event.reasoning, None)
        if event.refusal is not None:
            out += self._text("message", "refusal", event.refusal, None)
        if event.content:
            entries = (event.logprobs or {}).get("content")
            out += self._text("message", "output_text", event.content, entries)
        for piece in event.tool_calls or ():
            out += self._tool_piece(piece.index, piece.id, piece.name, piece.arguments)
        return out

    # Items and parts -------------------------------------------------------------------

    def _open_item(self, item: Json) -> list[Json]:
        out = self._close_item("completed")
        self.response["output"].append(item)
        self._item = item
        return [
            *out,
            self._emit("response.output_item.added", **self._where(), item=copy.deepcopy(item)),
        ]

    def _where(self) -> Json:
        assert self._item is not None
        return {"output_index": self.response["output"].index(self._item)}

    def _text(self, kind: str, part_type: str, text: str, entries: Any) -> list[Json]:
        out: list[Json] = []
        if self._item is None or self._item["type"] != kind:
            prefix = "rs" if kind == "reasoning" else "msg"
            item: Json = {"id": f"{prefix}_{self._key}{len(self.response['output'])}"}
            if kind == "reasoning":
                item |= {"type": "reasoning", "summary": [], "content": [], "status": "in_progress"}
            else:
                item |= {"type": "message", "role": "assistant", "status": "in_progress"}
                item["content"] = []
            out += self._open_item(item)
        if self._part is None or self._part["type"] != part_type:
            out += self._close_part()
            out += self._open_part(part_type)
        return out + self._append(part_type, text, entries)

    def _open_part(self, part_type: str) -> list[Json]:
        assert self._item is not None
        part: Json = {"type": part_type}
        if part_type == "output_text":
            part |= {"text": "", "annotations": [], "logprobs": []}
        else:
            part["refusal" if part_type == "refusal" else "text"] = ""
        self._item["content"].append(part)
        self._part = part
        return [
            self._emit(
                "response.content_part.added", **self._part_where(), part=copy.deepcopy(part)
            )
        ]

    def _part_where(self) -> Json:
        assert self._item is not None and self._part is not None
        return {
            "item_id": self._item["id"],
            **self._where(),
            "content_index": self._item["content"].index(self._part),
        }

    def _append(self, part_type: str, text: str, entries: Any) -> list[Json]:
        assert self._part is not None
        where = self._part_where()
        if part_type == "refusal":
            self._part["refusal"] += text
            return [self._emit("response.refusal.delta", **where, delta=text)]
        self._part["text"] += text
        if part_type == "reasoning_text":
            return [self._emit("response.reasoning_text.delta", **where, delta=text)]
        logprobs = [_logprob(e) for e in entries or ()]
        self._part["logprobs"].extend(logprobs)
        return [self._emit("response.output_text.delta", **where, delta=text, logprobs=logprobs)]

    def _close_part(self) -> list[Json]:
        part, where = self._part, self._part_where() if self._part is not None else {}
        if part is None:
            return []
        self._part = None
        if part["type"] == "output_text":
            done = self._emit(
                "response.output_text.done", **where, text=part["text"], logprobs=part["logprobs"]
            )
        elif part["type"] == "refusal":
            done = self._emit("response.refusal.done", **where, refusal=part["refusal"])
        else:
            done = self._emit("response.reasoning_text.done", **where, text=part["text"])
        return [done, self._emit("response.content_part.done", **where, part=copy.deepcopy(part))]

    def _tool_piece(
        self, index: int, call_id: str | None, name: str | None, args: str
    ) -> list[Json]:
        out: list[Json] = []
        if call_id is not None or index not in self._calls:
            item: Json = {
                "id": f"fc_{self._key}{len(self.response['output'])}",
                "type": "function_call",
                "call_id": call_id or "",
                "name": name or "",
                "arguments": "",
                "status": "in_progress",
            }
            self._calls[index] = item
            out += self._open_item(item)
        item = self._calls[index]
        if args:
            item["arguments"] += args
            where = {"item_id": item["id"], "output_index": self.response["output"].index(item)}
            out.append(self._emit("response.function_call_arguments.delta", **where, delta=args))
        return out

    def _close_item(self, status: str) -> list[Json]:
        item = self._item
        if item is None:
            return []
        out = self._close_part()
        where = self._where()
        if item["type"] == "function_call":
            out.append(
                self._emit(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    **where,
                    arguments=item["arguments"],
                    name=item["name"],
                )
            )
        item["status"] = status
        self._item = None
        return [*out, self._emit("response.output_item.done", **where, item=copy.deepcopy(item))]

    # The end ---------------------------------------------------------------------------

    def _end(self, event: Completed, status: str, reason: str | None) -> list[Json]:
        out = self._close_item("completed" if status == "completed" else "incomplete")
        self.response |= {
            "status": status,
            "usage": usage(event.usage),
            "completed_at": int(event.ts.timestamp()),
            "incomplete_details": {"reason": reason} if reason else None,
        }
        return [*out, self._lifecycle(_TERMINAL_EVENT[status])]

    def _fail(self, event: Failed) -> list[Json]:
        out = self._close_item("incomplete")
        code = "rate_limit_exceeded" if event.code == ErrorCode.OVERLOADED else "server_error"
        message = f"{event.message} ({event.code.value})"
        self.response |= {
            "status": "failed",
            "error": {"code": code, "message": message},
            "usage": usage(event.usage) if event.usage is not None else None,
        }
        error = self._emit("error", code=event.code.value, message=message, param=None)
        return [*out, error, self._lifecycle("response.failed")]


def usage(counted: TokenUsage) -> Json:
    """Chat usage in the Responses API's names."""
    prompt = counted.prompt_tokens_details or {}
    completion = counted.completion_tokens_details or {}
    return {
        "input_tokens": counted.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": prompt.get("cached_tokens", 0),
            "cache_write_tokens": prompt.get("cache_write_tokens", 0),
        },
        "output_tokens": counted.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": completion.get("reasoning_tokens", 0)},
        "total_tokens": counted.total_tokens,
    }


def _logprob(entry: Any) -> Json:
    """A chat-completions logprob entry in the Responses API's shape (bytes never null)."""
    top = [
        {"token": t.get("token", ""), "bytes": t.get("bytes") or [], "logprob": t.get("logprob")}
        for t in entry.get("top_logprobs") or ()
    ]
    return {
        "token": entry.get("token", ""),
        "bytes": entry.get("bytes") or [],
        "logprob": entry.get("logprob"),
        "top_logprobs": top,
    }
