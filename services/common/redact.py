"""Prompts in logs: never by default; with `TOKENBUS_LOG_CONTENT=redacted`, a short excerpt
with e-mail addresses and digits masked, for debugging."""

import re
from collections.abc import Sequence
from typing import Any

EXCERPT_CHARS = 40
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_DIGIT = re.compile(r"\d")


def redact(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The first `limit` characters, e-mails and digits masked (masked before cutting, so a
    cut never leaves half an address)."""
    masked = _DIGIT.sub("#", _EMAIL.sub("<email>", text))
    return masked[:limit] + ("…" if len(masked) > limit else "")


def content_for_log(mode: str, messages: Sequence[Any]) -> dict[str, str]:
    """Fields to add to a log line about a request: nothing unless `mode` is "redacted"."""
    if mode != "redacted" or not messages:
        return {}
    content = messages[-1].content
    if not isinstance(content, str):
        content = " ".join(
            p.get("text", "") for p in content or () if isinstance(p.get("text"), str)
        )
    return {"prompt": redact(content)}


def validation_summary(exc: Exception, limit: int = 500) -> str:
    """What failed validation, without the offending values (they may be someone's text)."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return type(exc).__name__
    parts = [
        f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}"
        for e in errors(include_input=False, include_url=False)
    ]
    return "; ".join(parts)[:limit]
