"""The gateway app's edge behaviour that needs no Kafka: validation errors, auth, health, models.

The app is built with `create_app` but its lifespan (topics, broker, reply reader) is not run:
`httpx.ASGITransport` does not start it. A valid chat request needs a worker to answer, so it
belongs to the e2e tests.
"""

import base64
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from contracts import new_request_id
from services.gateway.app import create_app, refuse_placeholder_secrets
from services.gateway.settings import GatewaySettings
from services.tenants.database import open_store

CHAT = "/v1/chat/completions"
PEPPER, ID_SECRET = "test-pepper", "test-id-secret"


def _settings(**overrides: Any) -> GatewaySettings:
    return GatewaySettings(
        bootstrap_servers="127.0.0.1:1",
        models="sim",
        llmsim_url="http://127.0.0.1:1/v1",
        **{"auth_mode": "open", **overrides},
    )


@contextlib.asynccontextmanager
async def _client(settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    """The app without its lifespan (no broker here), so its engine is disposed here: a pooled
    SQLite connection left to the garbage collector is a ResourceWarning in a later test."""
    app = create_app(settings)
    transport = httpx.ASGITransport(app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client
    finally:
        await app.state.engine.dispose()


@pytest.fixture
async def gateway() -> AsyncIterator[httpx.AsyncClient]:
    async with _client(_settings()) as client:
        yield client


@pytest.fixture
def keyed_settings(tmp_path: Path) -> GatewaySettings:
    return _settings(
        auth_mode="keys",
        database_url=f"sqlite+aiosqlite:///{tmp_path}/keys.db",
        key_pepper=PEPPER,
        id_secret=ID_SECRET,
        key_cache_s=0,
    )


@pytest.fixture
async def secret(keyed_settings: GatewaySettings) -> str:
    """A key of tenant-a (the store is migrated here: the app's lifespan does not run)."""
    async with open_store(keyed_settings) as store:
        return (await store.create_key("tenant-a"))[1]


@pytest.fixture
async def keyed_gateway(
    keyed_settings: GatewaySettings, secret: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(keyed_settings) as client:
        yield client


def _openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


class TestValidation:
    @pytest.mark.parametrize("raw", [b'{"model": "auto", "messages": [', b"not json"])
    async def test_malformed_json_is_a_400(self, gateway: httpx.AsyncClient, raw: bytes) -> None:
        response = await gateway.post(
            CHAT, content=raw, headers={"content-type": "application/json"}
        )
        error = _openai_error(response, 400)
        assert error["type"] == "invalid_request_error"
        assert "parse the JSON body" in error["message"]

    @pytest.mark.parametrize(
        ("body", "param"),
        [
            ({"model": "auto", "messages": []}, "messages"),
            (
                {"model": "auto", "messages": [{"role": "robot", "content": "hi"}]},
                "messages.0.role",
            ),
            ({"model": "auto", "messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
            ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
            (
                {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"},
                "stream",
            ),
            ({"model": "auto", "messages": [{"role": "user", "content": "hi"}], "n": 3}, "n"),
        ],
        ids=["empty-messages", "unknown-role", "content-type", "no-model", "stream-str", "n"],
    )
    async def test_invalid_body_is_a_400_naming_the_param(
        self, gateway: httpx.AsyncClient, body: dict[str, Any], param: str
    ) -> None:
        error = _openai_error(await gateway.post(CHAT, json=body), 400)
        assert error["type"] == "invalid_request_error"
        assert error["param"] == param
        assert param in error["message"]

    @pytest.mark.parametrize("body", [[1, 2], "text", None])
    async def test_a_body_that_is_not_an_object_is_a_400(
        self, gateway: httpx.AsyncClient, body: object
    ) -> None:
        _openai_error(await gateway.post(CHAT, json=body), 400)

    async def test_unknown_path_is_an_openai_404(self, gateway: httpx.AsyncClient) -> None:
        error = _openai_error(await gateway.get("/v1/nothing"), 404)
        assert error["type"] == "invalid_request_error"


class TestAuth:
    VALID: ClassVar[dict[str, Any]] = {
        "model": "auto",
        "messages": [{"role": "user", "content": "hi"}],
    }

    @pytest.mark.parametrize(
        "authorization",
        [
            None,
            "",
            "Bearer",
            "Bearer sk-wrong-key-987",
            "Bearer tb-" + "A" * 32,  # well formed, but no such key
            "Basic {secret}",
            "{secret}",
        ],
    )
    async def test_missing_or_wrong_key_is_a_401(
        self, keyed_gateway: httpx.AsyncClient, secret: str, authorization: str | None
    ) -> None:
        headers = (
            {} if authorization is None else {"authorization": authorization.format(secret=secret)}
        )
        response = await keyed_gateway.post(CHAT, json=self.VALID, headers=headers)
        error = _openai_error(response, 401)
        assert error["code"] == "invalid_api_key"
        assert response.headers["www-authenticate"] == "Bearer"

    async def test_the_key_is_never_echoed(
        self, keyed_gateway: httpx.AsyncClient, secret: str
    ) -> None:
        for key in ("sk-wrong-key-987", "tb-" + "B" * 32, secret):
            for authorization in (f"Basic {key}", f"Bearer {key[:-1]}"):
                response = await keyed_gateway.post(
                    CHAT, json=self.VALID, headers={"authorization": authorization}
                )
                assert response.status_code == 401
                assert key[:-1] not in response.text
                assert key[:-1] not in str(response.headers)

    async def test_a_revoked_key_is_a_401(
        self, keyed_settings: GatewaySettings, keyed_gateway: httpx.AsyncClient, secret: str
    ) -> None:
        headers = {"authorization": f"Bearer {secret}"}
        assert (await keyed_gateway.get("/v1/models", headers=headers)).status_code == 200
        async with open_store(keyed_settings) as store:
            [record] = await store.list_keys("tenant-a")
            assert await store.revoke_key(record.id)
        error = _openai_error(await keyed_gateway.get("/v1/models", headers=headers), 401)
        assert error["code"] == "invalid_api_key"

    async def test_another_tenants_stream_is_a_404_like_a_missing_one(
        self, keyed_gateway: httpx.AsyncClient, secret: str
    ) -> None:
        headers = {"authorization": f"Bearer {secret}"}
        theirs = new_request_id(0, 1_700_000_000_000, "tenant-b", ID_SECRET.encode())
        forged = new_request_id(0, 1_700_000_000_000, "tenant-a", b"not the secret")
        for request_id in (theirs, forged, "chatcmpl-nope"):
            for method in ("GET", "DELETE"):
                response = await keyed_gateway.request(
                    method, f"/v1/streams/{request_id}", headers=headers
                )
                error = _openai_error(response, 404)
                assert error["code"] == "stream_not_found"
                assert error["message"] == f"No stream with id '{request_id}'."

    async def test_a_valid_key_gets_past_auth(
        self, keyed_gateway: httpx.AsyncClient, secret: str
    ) -> None:
        headers = {"authorization": f"Bearer {secret}"}
        response = await keyed_gateway.post(
            CHAT, json={"model": "auto", "messages": []}, headers=headers
        )
        assert _openai_error(response, 400)["param"] == "messages"  # validation, not auth, failed
        models = await keyed_gateway.get("/v1/models", headers=headers)
        assert models.status_code == 200

    async def test_models_need_a_key_too(self, keyed_gateway: httpx.AsyncClient) -> None:
        error = _openai_error(await keyed_gateway.get("/v1/models"), 401)
        assert error["code"] == "invalid_api_key"

    async def test_open_mode_needs_no_key(self, gateway: httpx.AsyncClient) -> None:
        assert (await gateway.get("/v1/models")).status_code == 200

    async def test_keys_mode_is_the_default(self) -> None:
        assert GatewaySettings().auth_mode == "keys"

    def test_placeholder_secrets_are_refused_outside_development(self) -> None:
        with pytest.raises(RuntimeError, match="TOKENBUS_KEY_PEPPER, TOKENBUS_ID_SECRET"):
            refuse_placeholder_secrets(GatewaySettings())
        with pytest.raises(RuntimeError, match="TOKENBUS_ID_SECRET"):  # empty is unset
            refuse_placeholder_secrets(GatewaySettings(key_pepper="p" * 32, id_secret=""))
        refuse_placeholder_secrets(GatewaySettings(environment="development"))
        with pytest.raises(RuntimeError, match="TOKENBUS_CONVERSATION_KEYS"):
            refuse_placeholder_secrets(GatewaySettings(key_pepper="p" * 32, id_secret="s" * 32))
        keyring = "k1:" + base64.b64encode(b"k" * 32).decode()
        refuse_placeholder_secrets(
            GatewaySettings(key_pepper="p" * 32, id_secret="s" * 32, conversation_keys=keyring)
        )


class TestEdge:
    @pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
    async def test_a_body_over_the_limit_is_a_413_naming_it(self, declared: bool) -> None:
        settings = _settings(limits={"max_body_bytes": 2048})
        raw = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "x" * 4096}]})

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(raw), 1000):
                yield raw[i : i + 1000].encode()

        async with _client(settings) as client:
            response = await client.post(
                CHAT,
                content=raw.encode() if declared else chunks(),
                headers={"content-type": "application/json"},
            )
        error = _openai_error(response, 413)
        assert error["type"] == "invalid_request_error"
        assert error["code"] == "request_too_large"
        assert "2048 bytes" in error["message"]

    async def test_cors_answers_a_preflight_from_an_allowed_origin_only(self) -> None:
        settings = _settings(cors_origins=["https://chat.example.com"])
        preflight = {
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        }
        async with _client(settings) as client:
            allowed = await client.options(
                CHAT, headers={"origin": "https://chat.example.com", **preflight}
            )
            denied = await client.options(
                CHAT, headers={"origin": "https://evil.example", **preflight}
            )
            models = await client.get("/v1/models", headers={"origin": "https://chat.example.com"})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://chat.example.com"
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-origin" not in denied.headers
        assert "x-request-id" in models.headers["access-control-expose-headers"]

    async def test_no_cors_headers_without_configured_origins(
        self, gateway: httpx.AsyncClient
    ) -> None:
        response = await gateway.get("/v1/models", headers={"origin": "https://a.example"})
        assert "access-control-allow-origin" not in response.headers


class TestServiceEndpoints:
    async def test_healthz(self, gateway: httpx.AsyncClient) -> None:
        response = await gateway.get("/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}

    async def test_models_lists_aliases_and_concrete_models(
        self, gateway: httpx.AsyncClient
    ) -> None:
        body = (await gateway.get("/v1/models")).json()
        assert body["object"] == "list"
        assert [m["id"] for m in body["data"]] == [
            "auto",
            "small",
            "large",
            "llmsim-large",
            "llmsim-small",
        ]
        assert all(m["object"] == "model" for m in body["data"])

    async def test_metrics_show_the_hub_gauges(self, gateway: httpx.AsyncClient) -> None:
        metrics = (await gateway.get("/metrics")).text
        assert "tokenbus_gateway_watched_requests 0.0" in metrics
        assert "tokenbus_gateway_subscriptions 0.0" in metrics
