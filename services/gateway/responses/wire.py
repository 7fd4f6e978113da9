"""The Responses API request, and the chat request it is: the backend sees exactly what the
equivalent chat-completions request would send it."""

import hashlib
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StrictBool, StrictStr

from contracts import EdgeCode
from services.common.openai_errors import OpenAIError
from services.gateway.openai_wire import ChatCompletionRequest

Item = dict[str, Any]


class ResponsesRequest(BaseModel):
    """`POST /v1/responses`. Fields tokenbus cannot honour are refused by name (400), never
    dropped; unknown fields too, as the request would otherwise mean something else."""

    model_config = ConfigDict(extra="forbid")

    model: StrictStr = Field(min_length=1, max_length=256)
    input: StrictStr | list[dict[str, JsonValue]] = Field(min_length=1)
    instructions: StrictStr | None = None
    stream: StrictBool = False
    stream_options: dict[str, JsonValue] | None = None  # include_obfuscation: nothing to pad
    background: StrictBool = False
    store: StrictBool = True
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[dict[str, JsonValue]] | None = None
    tool_choice: StrictStr | dict[str, JsonValue] | None = None
    parallel_tool_calls: StrictBool | None = None
    text: dict[str, JsonValue] | None = None
    metadata: dict[str, StrictStr] | None = Field(default=None, max_length=16)
    user: StrictStr | None = None
    safety_identifier: StrictStr | None = None
    prompt_cache_key: StrictStr | None = None
    service_tier: StrictStr | None = None
    truncation: Literal["auto", "disabled"] | None = None
    include: list[StrictStr] | None = None
    # Accepted only to be refused with a clear word (see `refuse_unsupported`).
    reasoning: dict[str, JsonValue] | None = None
    previous_response_id: StrictStr | None = None
    conversation: StrictStr | dict[str, JsonValue] | None = None
    prompt: dict[str, JsonValue] | None = None
    max_tool_calls: int | None = None


def bad(message: str, param: str) -> OpenAIError:
    return OpenAIError(400, message, param=param, code=EdgeCode.INVALID_VALUE)


def refuse_unsupported(req: ResponsesRequest) -> None:
    if req.conversation is not None and req.previous_response_id is not None:
        raise bad("Use either 'conversation' or 'previous_response_id', not both.", "conversation")
    unsupported = {
        "reasoning": "reasoning settings are not supported by this deployment's backends",
        "prompt": "stored prompt templates are not supported",
        "max_tool_calls": "a tool-call budget is not supported",
    }
    for name, why in unsupported.items():
        if getattr(req, name) is not None:
            raise bad(f"'{name}' is not supported: {why}.", name)
    for i, value in enumerate(req.include or ()):
        if value != "message.output_text.logprobs":
            raise bad(f"include value {value!r} is not supported.", f"include.{i}")


def conversation_id(req: ResponsesRequest) -> str | None:
    conv = req.conversation
    if isinstance(conv, dict):
        if not isinstance(conv.get("id"), str):
            raise bad("A conversation object needs its 'id'.", "conversation.id")
        return str(conv["id"])
    return conv


def to_chat(req: ResponsesRequest, history: Sequence[Item] = ()) -> ChatCompletionRequest:
    """The equivalent chat request: instructions as a leading system message, then the
    `history` (a conversation's, or a chain of earlier responses), then the input items as
    messages; Responses fields under their chat-completions names."""
    refuse_unsupported(req)
    instructions = [{"role": "system", "content": req.instructions}] if req.instructions else []
    messages = [*instructions, *history, *input_messages(req.input)]
    if not messages:
        raise bad("The input holds no message.", "input")
    body: dict[str, Any] = {"model": req.model, "messages": messages, "stream": True}
    body.update(_params(req))
    if req.tools:
        body["tools"] = [_tool(tool, i) for i, tool in enumerate(req.tools)]
    if req.tool_choice is not None:
        body["tool_choice"] = _tool_choice(req.tool_choice)
    if req.text and req.text.get("format") is not None:
        body["response_format"] = _format(req.text["format"])
    return ChatCompletionRequest.model_validate(body)


_SAME_NAME = (
    "temperature",
    "top_p",
    "parallel_tool_calls",
    "metadata",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "service_tier",
)


def _params(req: ResponsesRequest) -> dict[str, Any]:
    params = {name: getattr(req, name) for name in _SAME_NAME if getattr(req, name) is not None}
    if req.max_output_tokens is not None:
        params["max_completion_tokens"] = req.max_output_tokens
    if req.include or req.top_logprobs:
        params["logprobs"] = True
        if req.top_logprobs:
            params["top_logprobs"] = req.top_logprobs
    return params


def input_items(value: str | list[dict[str, Any]]) -> list[Item]:
    """The input as OpenAI lists it back (`input_items`): items with ids."""
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    items = []
    for i, item in enumerate(value):
        kind = item.get("type", "message")
        content = item.get("content")
        if kind == "message" and isinstance(content, str):
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            content = [{"type": part, "text": content}]
        digest = hashlib.sha256(repr((i, item)).encode()).hexdigest()[:24]
        entry: Item = {**item, "type": kind, "status": item.get("status") or "completed"}
        if kind == "message":
            entry["content"] = content
        entry["id"] = item.get("id") or f"{_ID_PREFIX.get(kind, 'item')}_{digest}"
        items.append(entry)
    return items


_ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}


def input_messages(value: str | list[dict[str, Any]]) -> list[Item]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    messages: list[Item] = []
    for i, item in enumerate(value):
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, f"input.{i}"))
        elif kind == "function_call":
            call = _call(item, f"input.{i}")
            last = messages[-1] if messages else None
            if last and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)  # parallel calls: one assistant turn
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append(_call_output(item, f"input.{i}"))
        else:
            raise bad(f"Input items of type {kind!r} are not supported.", f"input.{i}.type")
    return messages


_ROLES = ("user", "system", "developer", "assistant")


def _message(item: Item, where: str) -> Item:
    role = item.get("role")
    if role not in _ROLES:
        raise bad(f"A message's role must be one of {', '.join(_ROLES)}.", f"{where}.role")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise bad("A message's content must be a string or a list of parts.", f"{where}.content")
    parts = [_part(part, f"{where}.content.{j}") for j, part in enumerate(content)]
    if role == "assistant":  # earlier answers: their text (and refusal) as plain content
        text = "".join(p.get("text", "") for p in parts)
        return {"role": role, "content": text}
    return {"role": role, "content": parts}


def _part(part: Any, where: str) -> Item:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind == "refusal" and isinstance(part.get("refusal"), str):
        return {"type": "text", "text": part["refusal"]}
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        image: Item = {"url": part["image_url"]}
        if part.get("detail"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise bad(f"Content parts of type {kind!r} are not supported here.", f"{where}.type")


def _call(item: Item, where: str) -> Item:
    for name in ("call_id", "name", "arguments"):
        if not isinstance(item.get(name), str):
            raise bad(f"A function_call item needs a string '{name}'.", f"{where}.{name}")
    function = {"name": item["name"], "arguments": item["arguments"]}
    return {"id": item["call_id"], "type": "function", "function": function}


def _call_output(item: Item, where: str) -> Item:
    output = item.get("output")
    if isinstance(output, list):
        output = "".join(p.get("text", "") for p in output if isinstance(p, dict))
    if not isinstance(item.get("call_id"), str) or not isinstance(output, str):
        raise bad("A function_call_output item needs 'call_id' and 'output'.", where)
    return {"role": "tool", "tool_call_id": item["call_id"], "content": output}


def _tool(tool: dict[str, Any], i: int) -> Item:
    if tool.get("type") != "function":
        kind = tool.get("type")
        raise bad(f"Tools of type {kind!r} are not supported; use function tools.", f"tools.{i}")
    if not isinstance(tool.get("name"), str):
        raise bad("A function tool needs a 'name'.", f"tools.{i}.name")
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
    return {"type": "function", "function": function}


def _tool_choice(choice: str | dict[str, Any]) -> str | Item:
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise bad("tool_choice must be none, auto, required or a function.", "tool_choice")
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise bad("Only function tool choices are supported.", "tool_choice")


def _format(fmt: Any) -> Item:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    raise bad("text.format must be text, json_object or json_schema.", "text.format")


def shell(req: ResponsesRequest) -> dict[str, Any]:
    """The request's echo in every Response object, as OpenAI fills it in."""
    return {
        "model": req.model,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "metadata": req.metadata or {},
        "parallel_tool_calls": True if req.parallel_tool_calls is None else req.parallel_tool_calls,
        "temperature": 1.0 if req.temperature is None else req.temperature,
        "top_p": 1.0 if req.top_p is None else req.top_p,
        "tool_choice": req.tool_choice or "auto",
        "tools": req.tools or [],
        "text": req.text or {"format": {"type": "text"}},
        "truncation": req.truncation or "disabled",
        "user": req.user,
        "store": req.store,
        "background": req.background,
        "previous_response_id": req.previous_response_id,
        "conversation": {"id": conversation_id(req)} if req.conversation is not None else None,
        "top_logprobs": req.top_logprobs,
    }
