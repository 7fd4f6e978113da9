"""The chat completion request llmsim accepts (OpenAI's shape) and the options it asks for."""

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from contracts import EdgeCode
from services.common.openai_errors import OpenAIError

MAX_PARALLEL_CALLS = 4
# OpenAI's `metadata` (str -> str) passes through tokenbus untouched, so tests reach llmsim
# with these: "<N>" reasoning tokens before the answer, "true" to refuse (the text goes in
# `refusal`), "<N>" reported as usage.prompt_tokens_details.cached_tokens.
REASONING_METADATA = "llmsim_reasoning"
REFUSAL_METADATA = "llmsim_refusal"
CACHED_TOKENS_METADATA = "llmsim_cached_tokens"
_MAX_METADATA_TOKENS = 100_000  # keeps a typo from building a stream of millions of tokens


class _Open(BaseModel):
    # Fields llmsim does not read (OpenAI adds new ones often) are accepted and ignored.
    model_config = ConfigDict(extra="allow")


class FunctionDefinition(_Open):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema; none means no arguments
    strict: bool | None = None


class Tool(_Open):
    type: Literal["function"]
    function: FunctionDefinition


class _CalledFunction(_Open):
    name: str
    arguments: str


class _ToolCall(_Open):
    id: str
    type: Literal["function"] = "function"
    function: _CalledFunction


class _Message(_Open):
    role: str
    content: str | list[dict[str, Any]] | None = None  # parts: text, image_url, input_audio...
    tool_calls: list[_ToolCall] | None = None  # an assistant's earlier calls
    tool_call_id: str | None = None  # a tool message: the call it answers


class _Named(_Open):
    name: str


class NamedToolChoice(_Open):
    type: Literal["function"]
    function: _Named


class _StreamOptions(_Open):
    include_usage: bool = False


class ChatCompletionRequest(_Open):
    """The fields llmsim reads; any other OpenAI parameter is accepted and ignored."""

    model: str
    messages: list[_Message] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stream_options: _StreamOptions | None = None
    metadata: dict[str, Any] | None = None  # llmsim_fault, llmsim_reasoning... (see above)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: dict[str, Any] | None = None
    seed: int | None = None
    user: str | None = None

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _one_tool_choice(cls, value: Any) -> Any:
        # Checked here so an error names `tool_choice` itself, not a member of the union.
        if value is None or value in ("none", "auto", "required"):
            return value
        if isinstance(value, dict):
            try:
                return NamedToolChoice.model_validate(value)
            except ValidationError:
                pass
        raise ValueError('expected "none", "auto", "required" or a named function')


@dataclass(frozen=True, slots=True)
class Options:
    """What a request asks of the answer beyond plain text; the default asks nothing."""

    calls: tuple[FunctionDefinition, ...] = ()  # functions to call now instead of answering
    reasoning: int = 0  # reasoning tokens streamed before the answer
    refusal: bool = False  # the answer text goes in `refusal`, not `content`
    top_logprobs: int | None = None  # None: no logprobs asked for
    cached_tokens: int | None = None  # usage.prompt_tokens_details.cached_tokens

    @property
    def plain(self) -> bool:
        """Nothing asked for: the answer takes the fast path of pre-built text frames."""
        return self == PLAIN


PLAIN = Options()


def _invalid(param: str, message: str) -> OpenAIError:
    return OpenAIError(
        400, f"Invalid '{param}': {message}", param=param, code=EdgeCode.INVALID_VALUE
    )


def _metadata_count(metadata: dict[str, Any], name: str) -> int | None:
    value = metadata.get(name)
    if value is None:
        return None
    if not (isinstance(value, str) and value.isdigit() and int(value) <= _MAX_METADATA_TOKENS):
        number = f"a whole number up to {_MAX_METADATA_TOKENS}"
        raise _invalid(f"metadata.{name}", f"expected {number} as a string, got {value!r}.")
    return int(value)


def _calls(body: ChatCompletionRequest) -> tuple[FunctionDefinition, ...]:
    """The tools to call: only in answer to a user, so a turn with tool results gets text."""
    choice, functions = body.tool_choice, [t.function for t in body.tools or ()]
    if choice is not None and not functions:
        raise _invalid("tool_choice", "'tool_choice' is only allowed when 'tools' are specified.")
    if isinstance(choice, NamedToolChoice):
        named = [f for f in functions if f.name == choice.function.name]
        if not named:
            raise _invalid("tool_choice", f"no tool named {choice.function.name!r} in 'tools'.")
        functions = named
    if not functions or choice == "none" or body.messages[-1].role != "user":
        return ()
    return tuple(functions[: MAX_PARALLEL_CALLS if body.parallel_tool_calls is not False else 1])


def request_options(body: ChatCompletionRequest) -> Options:
    """The options of `body`; an `OpenAIError` (400) for values OpenAI or llmsim refuse."""
    metadata = body.metadata or {}
    refusal = metadata.get(REFUSAL_METADATA, "false")
    if refusal not in ("true", "false"):
        raise _invalid(f"metadata.{REFUSAL_METADATA}", 'expected "true" or "false".')
    if body.top_logprobs is not None and not body.logprobs:
        raise _invalid("top_logprobs", "'logprobs' must be true when 'top_logprobs' is set.")
    return Options(
        calls=_calls(body),
        reasoning=_metadata_count(metadata, REASONING_METADATA) or 0,
        refusal=refusal == "true",
        top_logprobs=(body.top_logprobs or 0) if body.logprobs else None,
        cached_tokens=_metadata_count(metadata, CACHED_TOKENS_METADATA),
    )
