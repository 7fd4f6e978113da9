"""Deterministic tool calls: an id, arguments valid for the function's schema, and fragments."""

import hashlib
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.llmsim.request import FunctionDefinition
from services.llmsim.text import WORDS

COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_MAX_DEPTH = 6  # a recursive schema ($ref to itself) stops here with null
_SPAN = 10  # "small" numbers: at most this far above the lower bound
_FORMATS = {
    "date": "2024-05-17",
    "date-time": "2024-05-17T12:00:00Z",
    "time": "12:00:00",
    "uuid": "123e4567-e89b-12d3-a456-426614174000",
}


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call as the model makes it; `fragments` are its arguments as they are streamed."""

    id: str
    name: str
    arguments: str
    fragments: tuple[str, ...]


def tool_calls(functions: Sequence[FunctionDefinition], digest: bytes) -> list[ToolCall]:
    """A call of each function, derived from the conversation's digest and the call's index."""
    calls = []
    for index, function in enumerate(functions):
        key = hashlib.sha256(digest + index.to_bytes(4, "big")).digest()
        rng = random.Random(key + function.name.encode())
        schema = function.parameters or {}
        value = _value(schema, schema, rng, 0)
        arguments = COMPACT(value if isinstance(value, dict) else {})
        cuts, at = [], 0
        while at < len(arguments):  # a few characters per "token", as models stream JSON
            cuts.append(arguments[at : at + rng.randint(4, 8)])
            at += len(cuts[-1])
        calls.append(ToolCall(f"call_{key.hex()[:24]}", function.name, arguments, tuple(cuts)))
    return calls


def _resolve(schema: Any, root: dict[str, Any]) -> dict[str, Any]:
    """`schema` with a local `$ref` (`#/$defs/X`) replaced by its target; {} if it is none."""
    if not isinstance(schema, dict):
        return {}
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#"):
        return schema
    target: Any = root
    for part in ref[1:].split("/")[1:]:
        target = target.get(part) if isinstance(target, dict) else None
    return {
        **(target if isinstance(target, dict) else {}),
        **{k: v for k, v in schema.items() if k != "$ref"},
    }


def _value(schema: Any, root: dict[str, Any], rng: random.Random, depth: int) -> Any:
    """A value `schema` accepts, each choice drawn from `rng`."""
    schema = _resolve(schema, root)
    if depth > _MAX_DEPTH:
        return None
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    chosen = _combined(schema, root)
    if chosen is not None:
        return _value(chosen, root, rng, depth + 1)
    kind = _kind(schema)
    if kind in ("object", "array"):
        return (_object if kind == "object" else _array)(schema, root, rng, depth + 1)
    if kind in ("integer", "number"):
        return _number(schema, rng, kind == "integer")
    if kind in ("boolean", "null"):
        return rng.random() < 0.5 if kind == "boolean" else None
    return _string(schema, rng)


def _combined(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any] | None:
    """The one schema an anyOf/oneOf/allOf comes down to; None when there is none of them."""
    for key in ("anyOf", "oneOf"):  # any alternative is as valid: the first that is not null
        alternatives = [_resolve(a, root) for a in schema.get(key) or () if isinstance(a, dict)]
        if alternatives:
            return next((a for a in alternatives if a.get("type") != "null"), alternatives[0])
    if isinstance(schema.get("allOf"), list):
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            merged.update(_resolve(part, root))
        return merged
    return None


def _kind(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):  # ["string", "null"]: the non-null type
        kind = next((k for k in kind if k != "null"), "null")
    if isinstance(kind, str):
        return kind
    return "object" if "properties" in schema else "array" if "items" in schema else "string"


def _object(
    schema: dict[str, Any], root: dict[str, Any], rng: random.Random, depth: int
) -> dict[str, Any]:
    """Every property, required or not (models tend to fill them all)."""
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    value = {name: _value(sub, root, rng, depth) for name, sub in properties.items()}
    required = schema.get("required")
    for name in required if isinstance(required, list) else ():
        value.setdefault(str(name), rng.choice(WORDS))  # required but not described: a word
    return value


def _array(schema: dict[str, Any], root: dict[str, Any], rng: random.Random, depth: int) -> Any:
    count = 0 if _bound(schema, "maxItems") == 0 else max(1, int(_bound(schema, "minItems") or 0))
    return [_value(schema.get("items") or {}, root, rng, depth) for _ in range(count)]


def _string(schema: dict[str, Any], rng: random.Random) -> str:
    word = rng.choice(WORDS)
    fmt = schema.get("format")
    if fmt in _FORMATS:
        return _FORMATS[fmt]
    if fmt == "email":
        return f"{word}@example.com"
    if fmt in ("uri", "url"):
        return f"https://example.com/{word}"
    while len(word) < (_bound(schema, "minLength") or 0):
        word += word
    max_length = _bound(schema, "maxLength")
    return word[: int(max_length)] if max_length is not None else word


def _bound(schema: dict[str, Any], key: str) -> int | float | None:
    value = schema.get(key)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _number(schema: dict[str, Any], rng: random.Random, integer: bool) -> int | float:
    """A small number within the schema's bounds (and a multiple of `multipleOf`)."""
    low, high = _bound(schema, "minimum"), _bound(schema, "maximum")
    ex_low, ex_high = _bound(schema, "exclusiveMinimum"), _bound(schema, "exclusiveMaximum")
    lo = max(
        math.ceil(low) if low is not None else -math.inf,
        math.floor(ex_low) + 1 if ex_low is not None else -math.inf,
    )
    hi = min(
        math.floor(high) if high is not None else math.inf,
        math.ceil(ex_high) - 1 if ex_high is not None else math.inf,
    )
    if lo == -math.inf:
        lo = 0 if hi >= 0 else hi - _SPAN
    hi = min(hi, lo + _SPAN)
    if lo > hi:  # fractional bounds with no whole number between them: their middle
        lows = [b for b in (low, ex_low) if b is not None]
        highs = [b for b in (high, ex_high) if b is not None]
        return (max(lows) + min(highs)) / 2 if lows and highs else lo
    step = _bound(schema, "multipleOf")
    if step is not None and step > 0:
        first, last = math.ceil(lo / step), math.floor(hi / step)
        if first <= last:
            multiple = rng.randint(first, last) * step
            return multiple if isinstance(step, int) else round(multiple, 9)
    value = rng.randint(int(lo), int(hi))
    if not integer and step is None and value + 0.5 <= hi and rng.random() < 0.5:
        return value + 0.5  # a "number" is not always whole
    return value
