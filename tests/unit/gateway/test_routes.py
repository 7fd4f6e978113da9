"""The gateway app's edge behaviour that needs no Kafka: validation errors, auth, health, models.

The app is built with `create_app` but its lifespan (topics, broker, reply reader) is not run:
`httpx.ASGITransport` does not start it. A valid chat request needs a worker to answer, so it
belongs to the e2e tests.
"""

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import httpx
import pytest

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings

CHAT = "/v1/chat/completions"
SECRET = "sk-tenant-a-0123456789"


def _settings(**overrides: Any) -> GatewaySettings:
    return GatewaySettings(
        bootstrap_servers="127.0.0.1:1",
        models="sim",
        llmsim_url="http://127.0.0.1:1/v1",
        **overrides,
    )


async def _client(settings: GatewaySettings) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(create_app(settings))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


@pytest.fixture
async def gateway() -> AsyncIterator[httpx.AsyncClient]:
    async with await _client(_settings()) as client:
        yield client


@pytest.fixture
async def keyed_gateway() -> AsyncIterator[httpx.AsyncClient]:
    async with await _client(_settings(api_keys={SECRET: "tenant-a"})) as client:
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
            f"Basic {SECRET}",
            f"{SECRET}",
        ],
    )
    async def test_missing_or_wrong_key_is_a_401(
        self, keyed_gateway: httpx.AsyncClient, authorization: str | None
    ) -> None:
        headers = {} if authorization is None else {"authorization": authorization}
        response = await keyed_gateway.post(CHAT, json=self.VALID, headers=headers)
        error = _openai_error(response, 401)
        assert error["code"] == "invalid_api_key"
        assert response.headers["www-authenticate"] == "Bearer"

    async def test_the_key_is_never_echoed(self, keyed_gateway: httpx.AsyncClient) -> None:
        for key in ("sk-wrong-key-987", SECRET):
            response = await keyed_gateway.post(
                CHAT, json=self.VALID, headers={"authorization": f"Basic {key}"}
            )
            assert response.status_code == 401
            assert key not in response.text
            assert key not in str(response.headers)

    async def test_a_valid_key_gets_past_auth(self, keyed_gateway: httpx.AsyncClient) -> None:
        headers = {"authorization": f"Bearer {SECRET}"}
        response = await keyed_gateway.post(
            CHAT, json={"model": "auto", "messages": []}, headers=headers
        )
        assert _openai_error(response, 400)["param"] == "messages"  # validation, not auth, failed
        models = await keyed_gateway.get("/v1/models", headers=headers)
        assert models.status_code == 200

    async def test_models_need_a_key_too(self, keyed_gateway: httpx.AsyncClient) -> None:
        error = _openai_error(await keyed_gateway.get("/v1/models"), 401)
        assert error["code"] == "invalid_api_key"

    async def test_no_keys_configured_means_open_dev_mode(self, gateway: httpx.AsyncClient) -> None:
        assert (await gateway.get("/v1/models")).status_code == 200


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
