"""OpenAI's wire format as llmsim writes it: SSE chunk frames and error bodies."""

import json
import logging
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from contracts import EdgeCode
from services.common.openai_errors import OpenAIError
from services.llmsim.answer import Piece
from services.llmsim.faults import Fault, InjectedDisconnect

JSON = json.JSONEncoder(separators=(",", ":")).encode  # compact, as OpenAI's wire is
DONE = b"data: [DONE]\n\n"


class Frames:
    """Pre-built SSE frames of one stream, so each token costs one dumps and one concat."""

    def __init__(self, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        self.include_usage = include_usage
        head = JSON(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": None,
            }
        )[:-1]
        self._usage_head = "data: " + head + ',"choices":[],"usage":'
        self._delta = "data: " + head + ',"choices":[{"index":0,"delta":'
        self._content = self._delta + '{"content":'
        # OpenAI sends `"usage":null` on every chunk but the last when usage was asked for.
        self._tail = ',"usage":null}\n\n' if include_usage else "}\n\n"
        self._open = ',"logprobs":null,"finish_reason":null}]' + self._tail

    def role(self) -> bytes:
        return (self._delta + '{"role":"assistant","content":""}' + self._open).encode()

    def content(self, token: str) -> bytes:
        return (self._content + JSON(token) + "}" + self._open).encode()

    def opening(self, delta: dict[str, Any]) -> bytes:
        """The role chunk of an answer that is more than plain text."""
        return (self._delta + JSON(delta) + self._open).encode()

    def piece(self, piece: Piece) -> bytes:
        """One token of an answer that is more than plain text (built like OpenAI's chunks)."""
        kind, text = piece.kind, piece.text
        delta: dict[str, Any]
        if kind == "arguments":
            delta = {"tool_calls": [{"index": piece.call_index, "function": {"arguments": text}}]}
        elif kind == "call":
            call = {"index": piece.call_index, "id": piece.call_id, "type": "function"}
            delta = {"tool_calls": [{**call, "function": {"name": text, "arguments": ""}}]}
        elif kind == "reasoning":
            delta = {"reasoning_content": text}  # vLLM's and DeepSeek's field, not OpenAI's
        else:
            delta = {kind: text}  # "content" or "refusal"
        logprobs = None
        if piece.logprob is not None:  # in the list of the field the token went to
            entries = [piece.logprob]
            refused = kind == "refusal"
            logprobs = {
                "content": None if refused else entries,
                "refusal": entries if refused else None,
            }
        closing = ',"logprobs":' + JSON(logprobs) + ',"finish_reason":null}]' + self._tail
        return (self._delta + JSON(delta) + closing).encode()

    def finish(self, reason: str) -> bytes:
        closing = ',"logprobs":null,"finish_reason":' + JSON(reason) + "}]" + self._tail
        return (self._delta + "{}" + closing).encode()

    def usage(self, usage: dict[str, Any]) -> bytes:
        return (self._usage_head + JSON(usage) + "}\n\n").encode()


def completion(
    completion_id: str,
    created: int,
    model: str,
    message: dict[str, Any],
    logprobs: dict[str, Any] | None,
    reason: str,
    usage: dict[str, Any],
) -> dict[str, Any]:
    """A whole (non-stream) chat completion object."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": reason}
        ],
        "usage": usage,
        "system_fingerprint": None,
    }


def fault_response(fault: Fault, status: int) -> JSONResponse:
    """The error an injected `status` fault answers, shaped as OpenAI's for that status."""
    code: EdgeCode | None
    if status == 429:
        kind, code, message = "requests", EdgeCode.RATE_LIMIT_EXCEEDED, "Rate limit reached"
    elif status >= 500:
        kind, code, message = "server_error", None, "The server had an error"
    else:
        kind, code, message = "invalid_request_error", None, "The request was refused"
    text = f"{message} (llmsim fault {fault.spec!r})"
    response = OpenAIError(status, text, type_=kind, code=code).response()
    response.headers["x-llmsim-fault-injected"] = fault.spec
    if fault.retry_after is not None or status in (429, 503):
        seconds = fault.retry_after or 0.0
        response.headers["retry-after"] = f"{seconds:g}"
        response.headers["retry-after-ms"] = f"{seconds * 1000:g}"
    return response


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [p for p in loc if p != "body"]
    if not parts or not isinstance(parts[0], str):
        return None
    # A union's member tag (`str`, `list[dict[str,any]]`) names a type, not a parameter.
    tag = next((i for i, p in enumerate(parts) if isinstance(p, str) and _is_type_tag(p)), None)
    parts = parts[:tag]
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)[1:]


def _is_type_tag(part: str) -> bool:
    return part in ("str", "int", "float", "bool", "dict", "list") or "[" in part


def invalid_request(exc: RequestValidationError) -> OpenAIError:
    """Every validation failure is a 400 with the codes OpenAI itself uses, never a 422."""
    error = exc.errors()[0]
    kind, param = error["type"], _param(tuple(error["loc"]))
    if kind == "json_invalid":
        return OpenAIError(400, "We could not parse the JSON body of your request.")
    if param is None:
        return OpenAIError(400, f"The request body must be a JSON object: {error['msg']}")
    if kind == "missing":
        message = f"Missing required parameter: '{param}'."
        return OpenAIError(400, message, param=param, code=EdgeCode.MISSING_REQUIRED_PARAMETER)
    code = {
        "too_short": EdgeCode.EMPTY_ARRAY,
        "greater_than_equal": EdgeCode.INTEGER_BELOW_MIN_VALUE,
    }.get(kind, EdgeCode.INVALID_TYPE if kind.endswith(("_type", "_parsing")) else None)
    message = f"Invalid '{param}': {error['msg']}."
    return OpenAIError(400, message, param=param, code=code or EdgeCode.INVALID_VALUE)


class _QuietInjectedDisconnects(logging.Filter):
    """Turns uvicorn's traceback for an injected drop into one line: it is no server bug."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, InjectedDisconnect):
            record.msg, record.args, record.exc_info = (
                "llmsim dropped a connection: %s",
                (exc,),
                None,
            )
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_injected_disconnects() -> None:
    """Install the filter on uvicorn's error logger, once per process."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietInjectedDisconnects) for f in logger.filters):
        logger.addFilter(_QuietInjectedDisconnects())
