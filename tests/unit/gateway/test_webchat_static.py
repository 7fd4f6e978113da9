"""The web chat's files: `/` and `/static/...` are served with security headers (no Kafka).

The browser behaviour is tested end to end in `tests/e2e/test_webchat.py`.
"""

from collections.abc import AsyncIterator

import httpx
import pytest

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from services.gateway.webchat import STATIC_DIR

HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


@pytest.fixture
async def gateway() -> AsyncIterator[httpx.AsyncClient]:
    settings = GatewaySettings(
        bootstrap_servers="127.0.0.1:1",
        models="sim",
        llmsim_url="http://127.0.0.1:1/v1",
        auth_mode="open",
    )
    transport = httpx.ASGITransport(create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


def _assert_secured(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    for name, value in HEADERS.items():
        assert response.headers[name] == value, name
    csp = [d.strip() for d in response.headers["content-security-policy"].split(";")]
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp


async def test_the_root_serves_the_chat_page_with_security_headers(gateway: httpx.AsyncClient):
    response = await gateway.get("/")
    _assert_secured(response)
    assert response.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/static/app.js">' in response.text
    assert "<textarea" in response.text


@pytest.mark.parametrize(
    ("path", "mime"),
    [
        ("app.js", "text/javascript"),
        ("stream.js", "text/javascript"),
        ("app.css", "text/css"),
        ("vendor/marked.esm.js", "text/javascript"),
        # a module script with a wrong MIME type is refused under nosniff
        ("vendor/purify.es.mjs", "text/javascript"),
    ],
)
async def test_static_files_carry_the_same_headers(
    gateway: httpx.AsyncClient, path: str, mime: str
):
    response = await gateway.get(f"/static/{path}")
    _assert_secured(response)
    assert response.headers["content-type"].startswith(mime)
    assert response.content == (STATIC_DIR / path).read_bytes()


async def test_a_missing_static_file_is_an_openai_style_404(gateway: httpx.AsyncClient):
    response = await gateway.get("/static/nope.js")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Not Found"


async def test_the_api_is_not_shadowed_by_the_page(gateway: httpx.AsyncClient):
    response = await gateway.get("/v1/models")
    assert response.status_code == 200
    assert response.json()["data"][0]["id"] == "auto"
    assert "content-security-policy" not in response.headers  # the API's hot path is untouched


def test_every_script_is_readable_size():
    """Modules stay small enough to read in one sitting (vendored libraries excepted)."""
    for script in STATIC_DIR.glob("*.js"):
        assert len(script.read_text().splitlines()) < 400, script.name
