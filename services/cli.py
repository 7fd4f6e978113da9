"""`tokenbus <service>`: each command builds its settings, sets up logging, and runs."""

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
import uvicorn

from services.common.logging import configure_logging
from services.common.settings import HttpSettings
from services.common.telemetry import make_tracer_provider
from services.tenants.cli import register_commands

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="tokenbus: stream LLM answers over Kafka.",
)

PortOpt = Annotated[int | None, typer.Option(help="Override the port from settings")]


class _Server(uvicorn.Server):
    """uvicorn, letting the app drain first when a stop signal comes: uvicorn's own shutdown
    (which closes every WebSocket at once) starts only when the app says it is done. A second
    signal stops at once."""

    def __init__(
        self, config: uvicorn.Config, drain: Callable[[Callable[[], None]], None] | None
    ) -> None:
        super().__init__(config)
        self._drain = drain
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain is None or self._draining:
            super().handle_exit(sig, frame)
            return
        self._draining = True
        self._drain(lambda: super(_Server, self).handle_exit(sig, None))


def _serve(
    asgi_app: object,
    settings: HttpSettings,
    *,
    drain: Callable[[Callable[[], None]], None] | None = None,
    graceful_s: float = 15,
) -> None:
    # log_config=None keeps our structlog handlers; on SIGTERM (after `drain`, if any)
    # uvicorn stops accepting and waits up to `graceful_s` for open connections.
    config = uvicorn.Config(
        asgi_app,  # type: ignore[arg-type]
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=int(graceful_s),
        timeout_keep_alive=int(settings.keep_alive_s),
    )
    _Server(config, drain).run()


@app.command()
def gateway(
    port: PortOpt = None,
    partitions: Annotated[str | None, typer.Option(help="Reply partitions, e.g. 0,2")] = None,
) -> None:
    """The edge: OpenAI-compatible HTTP API and the fan-out hub."""
    from services.gateway.app import create_app
    from services.gateway.settings import GatewaySettings

    overrides: dict[str, object] = {}
    if port is not None:
        overrides["port"] = port
    if partitions:
        overrides["reply_partitions"] = [int(p) for p in partitions.split(",")]
    settings = GatewaySettings(**overrides)  # type: ignore[arg-type]
    configure_logging(settings, "gateway")
    asgi = create_app(settings, make_tracer_provider(settings, "gateway"))
    # The gateway ends its SSE streams itself when it drains (with a resumable error after
    # drain_timeout_s); sse-starlette would otherwise cut them all the moment SIGTERM comes.
    from sse_starlette.sse import AppStatus

    AppStatus.disable_automatic_graceful_drain()
    # SIGTERM drains: streams and room sockets run on for drain_timeout_s, then their
    # clients are told to resume elsewhere; then uvicorn stops, giving what is left 5 s.
    _serve(
        asgi,
        settings,
        drain=asgi.state.node.request_drain,
        graceful_s=5,
    )


@app.command()
def inference(port: PortOpt = None) -> None:
    """An inference worker of the consumer group (run several to scale)."""
    from services.inference.app import create_app
    from services.inference.settings import InferenceSettings

    settings = InferenceSettings(**({"port": port} if port is not None else {}))  # type: ignore[arg-type]
    configure_logging(settings, "inference")
    _serve(create_app(settings, make_tracer_provider(settings, "inference")), settings)


@app.command()
def llmsim(port: PortOpt = None) -> None:
    """The OpenAI-compatible model simulator."""
    from services.llmsim.app import create_app
    from services.llmsim.settings import LlmsimSettings

    settings = LlmsimSettings(**({"port": port} if port is not None else {}))  # type: ignore[arg-type]
    configure_logging(settings, "llmsim")
    _serve(create_app(settings), settings)


@app.command()
def analytics(
    port: PortOpt = None,
    from_beginning: Annotated[
        bool,
        typer.Option(
            "--from-beginning",
            help="Rebuild: recreate the tables and re-read llm.usage from offset 0 "
            "(stop the group's other analytics processes first)",
        ),
    ] = False,
) -> None:
    """Usage analytics: stores llm.usage in SQL and serves GET /v1/usage."""
    from services.analytics.app import create_app
    from services.analytics.settings import AnalyticsSettings

    overrides: dict[str, object] = {"from_beginning": True} if from_beginning else {}
    if port is not None:
        overrides["port"] = port
    settings = AnalyticsSettings(**overrides)  # type: ignore[arg-type]
    configure_logging(settings, "analytics")
    _serve(create_app(settings, make_tracer_provider(settings, "analytics")), settings)


FilterOpt = Annotated[str | None, typer.Option(show_default=False)]


@app.command()
def usage(
    from_: Annotated[
        str | None, typer.Option("--from", help="Start, ISO 8601 (inclusive)", show_default=False)
    ] = None,
    to: Annotated[
        str | None, typer.Option(help="End, ISO 8601 (exclusive)", show_default=False)
    ] = None,
    tenant: FilterOpt = None,
    model: FilterOpt = None,
    route: FilterOpt = None,
    status: Annotated[
        str | None, typer.Option(help="ok | failed | cancelled", show_default=False)
    ] = None,
    group_by: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated: hour, day, model, route, tenant, tier, status",
            show_default=False,
        ),
    ] = None,
    url: Annotated[str, typer.Option(help="The analytics service")] = "http://127.0.0.1:8081",
    key: Annotated[
        str | None,
        typer.Option(envvar="TOKENBUS_ADMIN_KEY", help="Admin key, if the API needs one"),
    ] = None,
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="Also write the rows to this CSV file")
    ] = None,
) -> None:
    """Usage report from the analytics API: requests, tokens, cost, TTFT and error rate."""
    from rich.console import Console

    from services.analytics.report import ReportError, fetch, table, write_csv

    params = {
        "from": from_,
        "to": to,
        "tenant": tenant,
        "model": model,
        "route": route,
        "status": status,
        "group_by": group_by,
    }
    try:
        report = fetch(url, params, key)
    except ReportError as exc:
        typer.echo(f"tokenbus usage: {exc}", err=True)
        raise typer.Exit(1) from None
    # Piped or redirected: wide enough that no cell is cut (a terminal keeps its own width).
    Console(width=None if sys.stdout.isatty() else 200).print(table(report))
    if csv_file is not None:
        lines = write_csv(report, csv_file)
        typer.echo(f"wrote {lines} rows to {csv_file}")


@app.command()
def topics(
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers")] = None,
) -> None:
    """Create the registry's topics (idempotent)."""
    from services.common.kafka import ensure_topics
    from services.common.settings import KafkaSettings

    settings = KafkaSettings(**({"bootstrap_servers": bootstrap} if bootstrap else {}))  # type: ignore[arg-type]
    created = asyncio.run(ensure_topics(settings.bootstrap_servers, settings.topics))
    typer.echo(f"created: {', '.join(created) or 'none (all existed)'}")


@app.command()
def dev(
    kafka: Annotated[bool, typer.Option(help="Start the local broker (else use the env's)")] = True,
) -> None:
    """The whole system as local processes: broker, llmsim, inference, gateway, analytics."""
    from services.dev import run_dev

    raise typer.Exit(run_dev(start_kafka=kafka))


@app.command("route-eval")
def route_eval(
    file: Annotated[Path, typer.Argument(help="Labelled JSONL set (id, messages, label)")],
    threshold: Annotated[
        float | None, typer.Option(help="Score at or above which `auto` goes large")
    ] = None,
    show_misses: Annotated[bool, typer.Option(help="List each misrouted item")] = False,
) -> None:
    """Evaluate the `auto` complexity router on a labelled set: accuracy, cost, speed."""
    from services.inference.route_eval import bench_scoring, evaluate, format_report, load_rows
    from services.inference.routing import DEFAULT_THRESHOLD

    rows = load_rows(file)
    report = evaluate(rows, DEFAULT_THRESHOLD if threshold is None else threshold)
    typer.echo(format_report(report, show_misses=show_misses))
    bench = bench_scoring(rows, repeats=20)
    typer.echo(
        f"\nscoring time per request: p50 {bench['p50_us']:.0f} µs, p99 {bench['p99_us']:.0f} µs"
        f" (max {bench['max_us']:.0f} µs over {bench['calls']:.0f} calls)"
    )


@app.command()
def localmodel(port: PortOpt = None) -> None:
    """The bundled local LLM (SmolLM2-135M-Instruct on llama.cpp), OpenAI-compatible."""
    from services.localmodel.app import run
    from services.localmodel.settings import LocalModelSettings

    run(LocalModelSettings(**({"port": port} if port is not None else {})))  # type: ignore[arg-type]


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def bench(ctx: typer.Context) -> None:
    """Benchmark: the same load direct to llmsim and through tokenbus (`tokenbus bench --help`)."""
    from services.bench import main as bench_main

    raise typer.Exit(bench_main(ctx.args, prog="tokenbus bench"))


register_commands(app)  # `tokenbus keys ...` and `tokenbus tenants ...`


def main() -> None:
    app()
