"""Request ids that say where a request's events live (reply partition and creation time) and
whose they are (a keyed tag of the tenant).

Any gateway node can then resume a stream from Kafka alone (`offsets_for_times`), and refuse
another tenant's id, with no second store: `chatcmpl-<ms hex>-<partition>-<random>-<tag>`.
"""

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

_PATTERN = re.compile(r"chatcmpl-([0-9a-f]{1,12})-([0-9]{1,4})-([0-9a-f]{16})-([0-9a-f]{16})")
TAG_HEX = 16  # 64 bits: guessing another tenant's tag online is hopeless


@dataclass(frozen=True, slots=True)
class RequestRef:
    """What a request id encodes."""

    created_ms: int
    partition: int

    def age_ms(self) -> int:
        return int(time.time() * 1000) - self.created_ms


def _tag(body: str, tenant: str, secret: bytes) -> str:
    mac = hmac.new(secret, f"{tenant}\n{body}".encode(), hashlib.sha256)
    return mac.hexdigest()[:TAG_HEX]


def new_request_id(partition: int, created_ms: int, tenant: str, secret: bytes) -> str:
    """`chatcmpl-<ms hex>-<partition>-<random>-<tag>`; OpenAI clients see it as the completion
    id. The tag is HMAC-SHA256(secret, tenant + the rest of the id), cut to 64 bits."""
    body = f"chatcmpl-{created_ms:x}-{partition}-{secrets.token_hex(8)}"
    return f"{body}-{_tag(body, tenant, secret)}"


def parse_request_id(request_id: str) -> RequestRef | None:
    """The partition and time a request id encodes, or None if it is not one of ours."""
    match = _PATTERN.fullmatch(request_id)
    if match is None:
        return None
    return RequestRef(created_ms=int(match.group(1), 16), partition=int(match.group(2)))


def request_belongs(request_id: str, tenant: str, secret: bytes) -> bool:
    """True if `request_id` is well formed and was made for `tenant` with `secret`."""
    if _PATTERN.fullmatch(request_id) is None:
        return False
    body, _, tag = request_id.rpartition("-")
    return hmac.compare_digest(tag, _tag(body, tenant, secret))


_CHAT, _RESPONSE = "chatcmpl-", "resp_"


def response_id(request_id: str) -> str:
    """A Responses API id for the request: the same id (partition, time, tenant tag) with
    OpenAI's `resp_` prefix, so it tells any node as much as the request id does."""
    return _RESPONSE + request_id.removeprefix(_CHAT)


def request_of_response(response_id: str) -> str | None:
    """The request id behind a Responses API id, or None if it is not one of ours."""
    if not response_id.startswith(_RESPONSE):
        return None
    request_id = _CHAT + response_id.removeprefix(_RESPONSE)
    return request_id if _PATTERN.fullmatch(request_id) else None
