"""Which backend answers a request, and one pooled OpenAI client per backend."""

from dataclasses import dataclass

from openai import AsyncOpenAI

from services.common.models import BackendSpec, ModelsConfig


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes, and why."""

    tier: str
    backend: BackendSpec
    model: str
    reason: str
    score: float | None = None


def route_request(config: ModelsConfig, requested: str) -> Route:
    """`auto` and tier names pick a tier; a concrete model picks the backend that serves it.

    A model no backend names goes to the small tier's first backend under that name, so a
    client can still reach any model the provider offers.
    """
    if requested in config.tiers:
        backend = config.tiers[requested][0]
        return Route(requested, backend, backend.model, "explicit")
    if requested == "auto":
        # Complexity scoring is the router's job (issue 3); until then auto means small.
        backend = config.tiers["small"][0]
        return Route("small", backend, backend.model, "default")
    for tier, backends in config.tiers.items():
        for backend in backends:
            if backend.model == requested:
                return Route(tier, backend, requested, "explicit")
    return Route("small", config.tiers["small"][0], requested, "passthrough")


class BackendClients:
    """One pooled AsyncOpenAI client per backend, built once and closed on shutdown."""

    def __init__(self, config: ModelsConfig) -> None:
        self._clients: dict[str, AsyncOpenAI] = {}
        for backends in config.tiers.values():
            for spec in backends:
                if spec.name not in self._clients:
                    self._clients[spec.name] = AsyncOpenAI(
                        base_url=str(spec.base_url),
                        api_key=spec.api_key(),
                        # Retries are the worker's decision (before the first token only).
                        max_retries=0,
                        timeout=spec.timeout_s,
                    )

    def get(self, spec: BackendSpec) -> AsyncOpenAI:
        return self._clients[spec.name]

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
