"""Rate-limit admission of a new stream: estimate its tokens, ask the shared limiter, and
render OpenAI's `x-ratelimit-*` headers (a refusal is a 429 with `Retry-After`)."""

import math

import structlog
from sqlalchemy.exc import SQLAlchemyError

from contracts import EdgeCode
from services.common.openai_errors import OpenAIError
from services.gateway.callers import Caller
from services.gateway.node import GatewayNode
from services.gateway.openai_wire import ChatCompletionRequest
from services.tenants.limiter import (
    CONCURRENCY,
    DAILY_TOKENS,
    REQUESTS,
    TOKENS,
    Decision,
    Quota,
    Ticket,
)

log = structlog.get_logger("gateway")

_WHAT = {
    REQUESTS: ("requests per minute", "rpm"),
    TOKENS: ("tokens per minute", "tpm"),
    CONCURRENCY: ("concurrent streams", "concurrency"),
    DAILY_TOKENS: ("tokens per day", "daily_tokens"),
}


class RateLimited(OpenAIError):
    """A 429; `retry_after_s` also goes into WebSocket error frames."""

    def __init__(self, decision: Decision, limit: int | None, headers: dict[str, str]) -> None:
        kind = decision.refused_by or REQUESTS
        label, field = _WHAT[kind]
        self.retry_after_s = math.ceil(decision.retry_after_s) or 1
        super().__init__(
            429,
            f"Rate limit reached on {label} ({field}): limit {limit}. "
            f"Try again in {self.retry_after_s}s.",
            type_="rate_limit_error",
            code=EdgeCode.INSUFFICIENT_QUOTA
            if kind == DAILY_TOKENS
            else EdgeCode.RATE_LIMIT_EXCEEDED,
            headers={**headers, "retry-after": str(self.retry_after_s)},
        )


def estimate_tokens(body: ChatCompletionRequest, default_output: int) -> int:
    """Prompt characters / 4 + the answer's token limit: what admission charges up front."""
    chars = 0
    for message in body.messages:
        content = message.content
        if isinstance(content, str):
            chars += len(content)
        elif content is not None:
            texts = (part.get("text") for part in content)
            chars += sum(len(text) for text in texts if isinstance(text, str))
    output = body.max_completion_tokens or body.max_tokens or default_output
    return math.ceil(chars / 4) + output


async def admit(
    node: GatewayNode, caller: Caller, body: ChatCompletionRequest, request_id: str
) -> tuple[Ticket | None, dict[str, str]]:
    """A ticket to release when the stream ends (None: nothing was counted) and the rate-limit
    headers; raises RateLimited (429), or a 503 when the database cannot be reached and the
    node's `limits_when_database_down` is `closed` (`open` admits the request uncounted)."""
    if node.limiter is None or not caller.limits.any():
        return None, {}
    estimate = estimate_tokens(body, node.settings.default_output_tokens)
    try:
        decision = await node.limiter.admit(caller.tenant, caller.limits, estimate, request_id)
    except (SQLAlchemyError, OSError) as exc:
        if node.settings.limits_when_database_down == "open":
            log.warning("limits_unchecked", tenant=caller.tenant, error=type(exc).__name__)
            if node.metrics is not None:
                node.metrics.limits_unchecked.inc()
            return None, {}
        log.error("limits_unavailable", error=type(exc).__name__)
        raise OpenAIError(
            503,
            "Rate limits cannot be checked right now; try again.",
            code=EdgeCode.SERVICE_UNAVAILABLE,
            headers={"retry-after": "1"},
        ) from exc
    headers = rate_headers(decision)
    if decision.ticket is None:
        limits = caller.limits
        limit = {
            REQUESTS: limits.rpm,
            TOKENS: limits.tpm,
            CONCURRENCY: limits.concurrency,
            DAILY_TOKENS: limits.daily_tokens,
        }[decision.refused_by or REQUESTS]
        log.info("rate_limited", tenant=caller.tenant, limit=decision.refused_by)
        raise RateLimited(decision, limit, headers)
    return decision.ticket, headers


def rate_headers(decision: Decision) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, quota in (("requests", decision.requests), ("tokens", decision.tokens)):
        if quota is not None:
            headers.update(_quota_headers(name, quota))
    return headers


def _quota_headers(name: str, quota: Quota) -> dict[str, str]:
    return {
        f"x-ratelimit-limit-{name}": str(quota.limit),
        f"x-ratelimit-remaining-{name}": str(quota.remaining),
        f"x-ratelimit-reset-{name}": duration(quota.reset_s),
    }


def duration(seconds: float) -> str:
    """OpenAI's reset format: `6m0s`, `1.5s`, `20ms`."""
    if seconds < 1:
        return f"{max(int(seconds * 1000), 0)}ms"
    if seconds < 60:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(seconds // 60)}m{int(seconds % 60)}s"
