"""Which backends answer a request, in which order; one pooled client and slot pool each."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from openai import AsyncOpenAI, DefaultAioHttpClient, Timeout

from contracts import ChatRequested
from services.common.models import BackendSpec, ModelsConfig
from services.inference.routing import score_conversation


@dataclass(frozen=True, slots=True)
class PlannedTry:
    """One backend to try, with the model name to ask it for."""

    tier: str
    backend: BackendSpec
    model: str


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes, why, and what to try if that fails before the first token."""

    tier: str
    reason: str  # explicit | score | passthrough
    plan: tuple[PlannedTry, ...]
    score: float | None = None
    features: tuple[str, ...] = ()

    @property
    def model(self) -> str:
        return self.plan[0].model


def _tier_plan(config: ModelsConfig, tier: str) -> list[PlannedTry]:
    return [PlannedTry(tier, b, b.model) for b in config.tiers[tier]]


def _with_fallback(config: ModelsConfig, tier: str) -> tuple[PlannedTry, ...]:
    plan = _tier_plan(config, tier)
    if (other := config.fallback.get(tier)) and other != tier:
        plan += _tier_plan(config, other)
    return tuple(plan)


def route_request(config: ModelsConfig, request: ChatRequested) -> Route:
    """`auto` scores the conversation; a tier name picks it; a concrete model its backend.

    A model no backend names goes to the small tier's first backend under that name, so a
    client can still reach any model the provider offers (and gets no fallback: another
    model would not be what it asked for).
    """
    requested = request.model
    if requested == "auto":
        max_tokens = request.params.get("max_completion_tokens") or request.params.get("max_tokens")
        kwargs = {} if config.route_threshold is None else {"threshold": config.route_threshold}
        scored = score_conversation(
            [m.model_dump(exclude_none=True) for m in request.messages],
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
            offers_tools=bool(request.params.get("tools")),
            **kwargs,
        )
        return Route(
            scored.tier,
            "score",
            _with_fallback(config, scored.tier),
            scored.score,
            tuple(scored.top_features()),
        )
    if requested in config.tiers:
        return Route(requested, "explicit", _with_fallback(config, requested))
    for tier, backends in config.tiers.items():
        serving = [PlannedTry(tier, b, requested) for b in backends if b.model == requested]
        if serving:
            return Route(tier, "explicit", tuple(serving))
    first = config.tiers["small"][0]
    return Route("small", "passthrough", (PlannedTry("small", first, requested),))


class BackendClients:
    """One pooled AsyncOpenAI client and one concurrency limit per backend."""

    def __init__(self, config: ModelsConfig) -> None:
        self._clients: dict[str, AsyncOpenAI] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._busy: dict[str, int] = {}
        for backends in config.tiers.values():
            for spec in backends:
                timeout = Timeout(None, connect=spec.connect_timeout_s)
                self._clients[spec.name] = AsyncOpenAI(
                    base_url=str(spec.base_url),
                    api_key=spec.api_key(),
                    max_retries=0,  # retries are the worker's decision (before the first token)
                    timeout=timeout,
                    # aiohttp's C parser instead of the default pure-Python HTTP/1.1 stack:
                    # reading a streamed answer was the worker's largest cost (py-spy).
                    http_client=DefaultAioHttpClient(timeout=timeout),
                )
                # Touching the resource loads the SDK's lazy modules now, not on the first
                # request (where it cost ~10 ms of time to first token).
                _ = self._clients[spec.name].chat.completions.with_streaming_response
                self._slots[spec.name] = asyncio.Semaphore(spec.max_concurrency)
                self._busy[spec.name] = 0

    def get(self, spec: BackendSpec) -> AsyncOpenAI:
        return self._clients[spec.name]

    @contextlib.asynccontextmanager
    async def slot(self, spec: BackendSpec) -> AsyncIterator[None]:
        """Hold one of the backend's `max_concurrency` slots for the duration of a call."""
        async with self._slots[spec.name]:
            self._busy[spec.name] += 1
            try:
                yield
            finally:
                self._busy[spec.name] -= 1

    def busy(self) -> dict[str, int]:
        return dict(self._busy)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
