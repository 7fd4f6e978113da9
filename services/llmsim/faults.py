"""Fault injection for llmsim: a small grammar, read per request.

Where a request's fault spec comes from (the first source present wins, even when empty):
  1. the HTTP header `x-llmsim-fault` (the openai SDK sends it with `extra_headers`);
  2. the body's `metadata.llmsim_fault` (OpenAI's str->str `metadata`, passed through tokenbus);
  3. the setting `TOKENBUS_LLMSIM_FAULT`, applied to every request ("" = none).

Grammar: `spec := "" | "none" | clause (";" clause)*`, `clause := name [":" value]`; spaces
around names and values are ignored, each name at most once.

  status:<code>             answer HTTP <code> (400-599) at once with an OpenAI error body;
                            429 and 503 carry `retry-after` (and `retry-after-ms`)
  retry_after:<s>           with status: the retry-after value in seconds (default 0)
  error_before_first_token  stream: the role chunk, the TTFT wait, then the connection drops;
                            non-stream: HTTP 500 at once
  drop_after:<n>            stream: n content tokens, then the connection drops (no finish chunk,
                            no [DONE]); non-stream: 200 headers, then the connection drops
  stall:<ms>                stream: a pause of <ms> before content token `after`, later tokens
                            shift by as much; non-stream: the answer comes <ms> later
  after:<n>                 with stall: content tokens sent before the pause (default 0)
  slow_first_token:<ms>     this request's time to first token, replacing the model's
  model:<name>              the rest of the spec applies only to requests for model <name>
                            (so one tier of a gateway can fail while the other answers)
  fail_times:<n>            the rest of the spec applies to the first n requests of one key
                            only, later ones succeed; the key is the header
                            `x-llmsim-fault-key`, else `metadata.llmsim_fault_key`, else the spec

A "token" is any completion token: of reasoning, of the text, or of a tool call (its opening
or a fragment of its arguments). At most one of status, error_before_first_token and
drop_after. A spec that breaks these rules is answered with HTTP 400 (or, as the setting,
refused at startup).
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FAULT_HEADER = "x-llmsim-fault"
FAULT_KEY_HEADER = "x-llmsim-fault-key"
FAULT_METADATA = "llmsim_fault"
FAULT_KEY_METADATA = "llmsim_fault_key"

_TERMINAL = ("status", "error_before_first_token", "drop_after")
_FLAGS = frozenset({"error_before_first_token"})
_COUNTS = frozenset({"drop_after", "after", "fail_times"})
_MILLIS = frozenset({"stall", "slow_first_token"})
_STRINGS = frozenset({"model"})
_NAMES = _FLAGS | _COUNTS | _MILLIS | _STRINGS | {"status", "retry_after"}
_MAX_KEYS = 10_000  # fail_times counters kept; the oldest key is forgotten beyond this


class FaultSpecError(ValueError):
    """A fault spec outside the grammar; `param` names the body field it came from, if any."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class InjectedDisconnect(Exception):
    """Raised inside a response body so the server drops the connection mid-answer."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One parsed spec; times in seconds. The default instance injects nothing."""

    spec: str = ""
    status: int | None = None
    retry_after: float | None = None
    error_before_first_token: bool = False
    drop_after: int | None = None
    stall: float = 0.0
    stall_after: int = 0
    ttft: float | None = None
    fail_times: int | None = None
    model: str | None = None

    @property
    def active(self) -> bool:
        return bool(self.spec)

    def hits(self, model: str) -> bool:
        return self.active and (self.model is None or self.model == model)


NO_FAULT = Fault()


def _number(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise FaultSpecError(f"'{name}' needs a number >= 0, got {value!r}")
    if name in _COUNTS and not number.is_integer():
        raise FaultSpecError(f"'{name}' needs a whole number, got {value!r}")
    return number


def _clauses(spec: str) -> dict[str, str | None]:
    clauses: dict[str, str | None] = {}
    for clause in spec.split(";"):
        name, sep, value = (part.strip() for part in clause.partition(":"))
        if name not in _NAMES:
            raise FaultSpecError(f"unknown fault {name!r}; see the llmsim.faults docstring")
        if name in clauses:
            raise FaultSpecError(f"{name!r} given twice")
        if (name in _FLAGS) == bool(sep):
            shape = name if name in _FLAGS else f"{name}:<value>"
            raise FaultSpecError(f"{name!r} is written {shape!r}")
        clauses[name] = value if sep else None
    if sum(n in clauses for n in _TERMINAL) > 1:
        raise FaultSpecError(f"at most one of {', '.join(_TERMINAL)}")
    for name, needs in (("after", "stall"), ("retry_after", "status")):
        if name in clauses and needs not in clauses:
            raise FaultSpecError(f"{name!r} only goes with {needs!r}")
    if clauses.keys() <= {"fail_times", "model"}:
        raise FaultSpecError("'fail_times' and 'model' need a fault to apply")
    return clauses


def parse_fault(spec: str) -> Fault:
    """The fault `spec` describes; `FaultSpecError` when it breaks the grammar."""
    spec = spec.strip()
    if spec in ("", "none"):
        return NO_FAULT
    clauses = _clauses(spec)
    numbers = {n: _number(n, v) for n, v in clauses.items() if v is not None and n not in _STRINGS}
    status = numbers.get("status")
    if status is not None and not (status.is_integer() and 400 <= status <= 599):
        raise FaultSpecError(f"'status' needs an HTTP error code 400-599, got {status:g}")

    def count(name: str) -> int | None:
        return int(numbers[name]) if name in numbers else None

    def seconds(name: str) -> float | None:
        return numbers[name] / 1000 if name in numbers else None

    return Fault(
        spec=";".join(n if v is None else f"{n}:{v}" for n, v in clauses.items()),
        status=count("status"),
        retry_after=numbers.get("retry_after"),
        error_before_first_token="error_before_first_token" in clauses,
        drop_after=count("drop_after"),
        stall=seconds("stall") or 0.0,
        stall_after=count("after") or 0,
        ttft=seconds("slow_first_token"),
        fail_times=count("fail_times"),
        model=clauses.get("model") or None,
    )


def request_fault(
    headers: Mapping[str, str], metadata: Mapping[str, Any] | None, default: Fault
) -> tuple[Fault, str]:
    """The fault of one request and its fail_times key, from headers, metadata or `default`."""
    metadata = metadata or {}
    for name in (FAULT_METADATA, FAULT_KEY_METADATA):
        if name in metadata and not isinstance(metadata[name], str):
            raise FaultSpecError(f"'metadata.{name}' must be a string", f"metadata.{name}")
    if FAULT_HEADER in headers:
        fault = parse_fault(headers[FAULT_HEADER])
    elif FAULT_METADATA in metadata:
        try:
            fault = parse_fault(metadata[FAULT_METADATA])
        except FaultSpecError as exc:
            raise FaultSpecError(str(exc), f"metadata.{FAULT_METADATA}") from None
    else:
        fault = default
    key = headers.get(FAULT_KEY_HEADER) or metadata.get(FAULT_KEY_METADATA) or fault.spec
    return fault, key


class FailCounters:
    """How many requests of each fail_times key were seen, to fault only the first n."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def applies(self, fault: Fault, key: str) -> bool:
        """Whether `fault` hits this request; counts it when the fault has fail_times."""
        if fault.fail_times is None:
            return fault.active
        seen = self._seen.pop(key, 0) + 1
        self._seen[key] = seen  # re-inserted, so the dict's order is least recently used first
        if len(self._seen) > _MAX_KEYS:
            del self._seen[next(iter(self._seen))]
        return seen <= fault.fail_times
