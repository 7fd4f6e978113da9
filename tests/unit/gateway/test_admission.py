"""Admission helpers: the token estimate, OpenAI's rate-limit headers, the key cache."""

import asyncio
from typing import Any

import pytest

from services.gateway.admission import duration, estimate_tokens, rate_headers
from services.gateway.callers import OPEN_CALLER, Authenticator
from services.gateway.openai_wire import ChatCompletionRequest
from services.tenants.keys import new_key
from services.tenants.limiter import Decision, Quota
from services.tenants.store import Limits, Principal


def _body(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "auto", "messages": [{"role": "user", "content": "x" * 40}], **fields}
    )


class TestEstimate:
    def test_prompt_chars_over_four_plus_the_answer_limit(self) -> None:
        assert estimate_tokens(_body(max_tokens=100), 256) == 110
        assert estimate_tokens(_body(max_completion_tokens=7), 256) == 17
        assert estimate_tokens(_body(), 256) == 266

    def test_text_parts_count_and_images_do_not(self) -> None:
        content = [
            {"type": "text", "text": "y" * 8},
            {"type": "image_url", "image_url": {"url": "https://x"}},
        ]
        body = _body(messages=[{"role": "user", "content": content}], max_tokens=1)
        assert estimate_tokens(body, 256) == 3


class TestHeaders:
    @pytest.mark.parametrize(
        ("seconds", "text"), [(0.02, "20ms"), (1.5, "1.5s"), (12.0, "12s"), (360.0, "6m0s")]
    )
    def test_reset_times_read_like_openais(self, seconds: float, text: str) -> None:
        assert duration(seconds) == text

    def test_requests_and_tokens_headers(self) -> None:
        decision = Decision(None, "requests", 3.2, Quota(20, 0, 3.2), Quota(1000, 640, 3.2))
        assert rate_headers(decision) == {
            "x-ratelimit-limit-requests": "20",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "3.2s",
            "x-ratelimit-limit-tokens": "1000",
            "x-ratelimit-remaining-tokens": "640",
            "x-ratelimit-reset-tokens": "3.2s",
        }


class FakeStore:
    """Counts lookups; answers for one key."""

    def __init__(self, key: str) -> None:
        self.key, self.lookups, self.down = key, 0, False

    def hash(self, key: str) -> str:
        return f"h:{key}"

    async def principal_by_hash(self, digest: str) -> Principal | None:
        self.lookups += 1
        await asyncio.sleep(0.01)
        if self.down:
            raise OSError("connection refused")
        if digest != f"h:{self.key}":
            return None
        return Principal("acme", "key_1", False, Limits(rpm=5))


class TestAuthenticator:
    async def test_open_mode_is_the_dev_tenant_whatever_the_key(self) -> None:
        auth = Authenticator(None)
        assert await auth.caller(None) == OPEN_CALLER
        assert await auth.caller("anything") == OPEN_CALLER

    async def test_lookups_are_cached_and_shared(self) -> None:
        key = new_key()
        store = FakeStore(key)
        auth = Authenticator(store, ttl_s=60)  # type: ignore[arg-type]
        callers = await asyncio.gather(*(auth.caller(key) for _ in range(20)))
        assert {c.tenant for c in callers if c} == {"acme"} and store.lookups == 1
        assert (await auth.caller(key)).limits == Limits(rpm=5)  # type: ignore[union-attr]
        assert store.lookups == 1

    async def test_unknown_keys_are_cached_too_and_garbage_is_never_looked_up(self) -> None:
        store = FakeStore(new_key())
        auth = Authenticator(store, ttl_s=60)  # type: ignore[arg-type]
        stranger = new_key()
        assert await auth.caller(stranger) is None
        assert await auth.caller(stranger) is None
        assert await auth.caller("sk-not-ours") is None
        assert await auth.caller(None) is None
        assert store.lookups == 1

    async def test_the_cache_expires(self) -> None:
        key = new_key()
        store = FakeStore(key)
        auth = Authenticator(store, ttl_s=0)  # type: ignore[arg-type]
        await auth.caller(key)
        await auth.caller(key)
        assert store.lookups == 2

    async def test_with_the_database_away_a_key_seen_recently_keeps_its_answer(self) -> None:
        key, stranger = new_key(), new_key()
        store = FakeStore(key)
        auth = Authenticator(store, ttl_s=0, stale_s=60)  # type: ignore[arg-type]
        assert (await auth.caller(key)).tenant == "acme"  # type: ignore[union-attr]
        store.down = True
        assert (await auth.caller(key)).tenant == "acme"  # type: ignore[union-attr]
        with pytest.raises(OSError):  # never checked: no answer to fall back on
            await auth.caller(stranger)
        store.down = False
        assert await auth.caller(stranger) is None

    async def test_a_stale_answer_too_old_is_not_used(self) -> None:
        key = new_key()
        store = FakeStore(key)
        auth = Authenticator(store, ttl_s=0, stale_s=0)  # type: ignore[arg-type]
        await auth.caller(key)
        store.down = True
        with pytest.raises(OSError):
            await auth.caller(key)
