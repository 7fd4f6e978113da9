"""localmodel: a real small LLM (llama.cpp on the CPU) behind tokenbus's service contract.

llama.cpp's own server (run in this process by `xllamacpp`, see `engine.py`) already speaks
OpenAI's chat completions, streaming and usage included, and schedules `parallel` requests at
once. It listens on a loopback port; this FastAPI app on the public port forwards the OpenAI
routes to it byte for byte and adds what llama.cpp does not give in tokenbus's shape:
`/healthz`, `/readyz` (ready once the model is loaded) and `/metrics` (our Prometheus registry,
with llama.cpp's metrics renamed into it), a clean `/v1/models` naming `model_alias`, and one
guarantee: when a client drops a stream, the upstream connection is closed at once, which makes
llama.cpp cancel the generation and free its slot.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import structlog
import uvicorn
from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from contracts import EdgeCode
from services.common.health import health_router
from services.common.logging import configure_logging
from services.common.openai_errors import OpenAIError, install_error_handlers
from services.localmodel.engine import Engine, LlamaMetrics, start_engine
from services.localmodel.settings import LocalModelSettings

SERVICE = "localmodel"
PROXIED = ("/v1/chat/completions", "/v1/completions")
log = structlog.get_logger(SERVICE)


class _Proxy:
    """Forwards OpenAI requests to llama.cpp's server and counts what passes."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.upstream: str | None = None
        # Generations take seconds to minutes and wait for a free slot first: no read timeout.
        # No keep-alive: llama.cpp's HTTP server gives each open connection a thread, and an
        # idle pooled one would hold it; a new loopback connection costs ~0.1 ms.
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(10.0, read=None),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
        )
        self.requests = Counter(
            "localmodel_requests", "Requests forwarded to llama.cpp", ["stream"], registry=registry
        )
        self.open_streams = Gauge(
            "localmodel_open_streams", "Streams being relayed", registry=registry
        )
        self.closed_early = Counter(
            "localmodel_streams_closed_early",
            "Streams the client closed before the end (generation cancelled)",
            registry=registry,
        )
        self.upstream_errors = Counter(
            "localmodel_upstream_errors", "llama.cpp unreachable or failed", registry=registry
        )

    async def forward(self, request: Request) -> Response:
        if self.upstream is None:
            return OpenAIError(
                503, "The model is still loading", code=EdgeCode.MODEL_LOADING
            ).response()
        upstream_request = self.client.build_request(
            "POST",
            self.upstream + request.url.path,
            content=await request.body(),
            headers={"content-type": request.headers.get("content-type", "application/json")},
        )
        try:
            response = await self.client.send(upstream_request, stream=True)
        except httpx.TransportError as exc:
            self.upstream_errors.inc()
            log.error("upstream_unreachable", error=repr(exc))
            return OpenAIError(
                502, "The local model server is unreachable", code=EdgeCode.UPSTREAM_UNREACHABLE
            ).response()
        media_type = response.headers.get("content-type", "application/json")
        if response.status_code >= 500:
            self.upstream_errors.inc()
        if not media_type.startswith("text/event-stream"):
            self.requests.labels("false").inc()
            try:
                body = await response.aread()
            finally:
                await response.aclose()
            return Response(body, response.status_code, media_type=media_type)
        self.requests.labels("true").inc()
        return StreamingResponse(
            self._relay(response),
            response.status_code,
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
            media_type=media_type,
            background=BackgroundTask(response.aclose),
        )

    async def _relay(self, response: httpx.Response) -> AsyncIterator[bytes]:
        """llama.cpp's SSE bytes as they come. When the client goes away, Starlette cancels
        this generator; closing the unfinished upstream response drops its connection, and
        llama.cpp cancels the generation on its next token, freeing the slot."""
        self.open_streams.inc()
        finished = False
        try:
            async for chunk in response.aiter_raw():
                yield chunk
            finished = True
        finally:
            self.open_streams.dec()
            if not finished:
                self.closed_early.inc()
            with anyio.CancelScope(shield=True):  # we may be here because we were cancelled
                await response.aclose()


def create_app(settings: LocalModelSettings, upstream_url: str | None = None) -> FastAPI:
    """The localmodel app. It loads the model at startup (lifespan) unless `upstream_url`
    names an OpenAI-compatible server to front instead (tests use llmsim there)."""
    registry = CollectorRegistry()
    proxy = _Proxy(registry)
    proxy.upstream = upstream_url
    engine_ref: list[Engine] = []
    created = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if upstream_url is None:
            engine = await asyncio.to_thread(start_engine, settings)
            engine_ref.append(engine)
            registry.register(LlamaMetrics(engine))
            proxy.upstream = engine.url
            log.info(
                "model_loaded",
                model=str(engine.model),
                llama_server=engine.url,
                alias=settings.model_alias,
                load_seconds=round(engine.load_seconds, 3),
                slots=settings.parallel,
                ctx_per_slot=settings.ctx_per_slot,
                threads=settings.threads,
            )
        try:
            yield
        finally:
            await proxy.client.aclose()
            for engine in engine_ref:
                await asyncio.to_thread(engine.close)

    app = FastAPI(
        title="tokenbus localmodel",
        version="0.1.0",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.proxy = proxy
    install_error_handlers(app)  # unknown routes and the relay's own errors, in OpenAI's shape

    async def readiness() -> dict[str, bool]:
        # The model lives in this process: once loaded, llama.cpp answers; no HTTP round trip,
        # which would queue behind busy streams when all of llama.cpp's HTTP threads are used.
        return {"model": proxy.upstream is not None}

    app.include_router(health_router(registry, readiness))

    for path in PROXIED:
        app.add_api_route(path, proxy.forward, methods=["POST"], include_in_schema=False)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        model = {"id": settings.model_alias, "object": "model", "created": created}
        return {"object": "list", "data": [{**model, "owned_by": "tokenbus-localmodel"}]}

    return app


def run(settings: LocalModelSettings) -> None:
    """Serve until SIGINT/SIGTERM (blocking, like `uvicorn.run`): what `tokenbus localmodel`
    runs. Open streams get up to 15 s to finish, then the model is freed."""
    configure_logging(settings, SERVICE)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=15,
    )
