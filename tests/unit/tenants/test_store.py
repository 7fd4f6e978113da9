"""Tenants and keys: a key is shown once and stored only as a keyed hash; revoked keys fail."""

import pytest
from sqlalchemy import select

from services.tenants.keys import key_hash, looks_like_key, new_key
from services.tenants.schema import api_keys
from services.tenants.store import Limits, TenantStore, UnknownTenant


class TestKeys:
    def test_a_key_is_192_random_bits_in_url_safe_characters(self) -> None:
        keys = {new_key() for _ in range(100)}
        assert len(keys) == 100
        assert all(looks_like_key(k) and len(k) == 35 for k in keys)

    @pytest.mark.parametrize(
        "garbage",
        ["", "tb-", "sk-" + "a" * 32, "tb-" + "a" * 31, "tb-" + "a" * 33, "tb-" + "é" * 32],
    )
    def test_garbage_is_not_a_key(self, garbage: str) -> None:
        assert not looks_like_key(garbage)

    def test_the_hash_depends_on_the_pepper(self) -> None:
        key = new_key()
        assert key_hash(key, b"a") != key_hash(key, b"b")
        assert len(key_hash(key, b"a")) == 64


class TestStore:
    async def test_a_new_key_finds_its_tenant_and_is_stored_only_hashed(
        self, store: TenantStore
    ) -> None:
        record, key = await store.create_key("acme")
        principal = await store.principal(key)
        assert principal is not None
        assert (principal.tenant, principal.key_id, principal.admin) == ("acme", record.id, False)
        assert principal.limits == Limits()
        async with store.engine.connect() as conn:
            row = (await conn.execute(select(api_keys))).one()
        assert key not in {str(v) for v in row}
        assert row.key_hash == store.hash(key) and row.hint == key[-4:]

    async def test_another_pepper_does_not_find_the_key(self, store: TenantStore) -> None:
        _, key = await store.create_key("acme")
        assert await TenantStore(store.engine, b"other pepper").principal(key) is None

    async def test_revoked_and_unknown_keys_find_nothing(self, store: TenantStore) -> None:
        record, key = await store.create_key("acme")
        _, other = await store.create_key("acme", admin=True)
        assert await store.revoke_key(record.id)
        assert not await store.revoke_key(record.id)  # already revoked
        assert not await store.revoke_key("key_nothing")
        assert await store.principal(key) is None
        assert await store.principal(new_key()) is None
        assert await store.principal("not a key") is None
        still = await store.principal(other)
        assert still is not None and still.admin

    async def test_limits_are_set_per_tenant_and_zero_clears(self, store: TenantStore) -> None:
        _, key = await store.create_key("acme")
        limits = await store.set_limits("acme", rpm=20, concurrency=2)
        assert limits == Limits(rpm=20, concurrency=2)
        assert await store.set_limits("acme", tpm=1000) == Limits(rpm=20, tpm=1000, concurrency=2)
        assert await store.set_limits("acme", rpm=None) == Limits(tpm=1000, concurrency=2)
        principal = await store.principal(key)
        assert principal is not None and principal.limits == Limits(tpm=1000, concurrency=2)
        with pytest.raises(UnknownTenant):
            await store.set_limits("nobody", rpm=1)

    async def test_listing_shows_tenants_keys_and_revocations(self, store: TenantStore) -> None:
        assert await store.create_tenant("globex")
        assert not await store.create_tenant("globex")
        first, _ = await store.create_key("acme")
        await store.create_key("acme", admin=True)
        await store.revoke_key(first.id)
        keys = await store.list_keys("acme")
        assert [(k.id == first.id, k.revoked_at is not None) for k in keys] == [
            (True, True),
            (False, False),
        ]
        assert len(await store.list_keys()) == 2
        tenants = {t.name: t.active_keys for t in await store.list_tenants()}
        assert tenants == {"acme": 1, "globex": 0}
