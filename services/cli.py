"""`tokenbus <service>`: each command builds its settings, sets up logging, and runs."""

import asyncio
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from services.common.logging import configure_logging
from services.common.telemetry import make_tracer_provider

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="tokenbus: stream LLM answers over Kafka.",
)

PortOpt = Annotated[int | None, typer.Option(help="Override the port from settings")]


def _serve(asgi_app: object, host: str, port: int) -> None:
    # log_config=None keeps our structlog handlers; uvicorn drains connections on SIGTERM.
    uvicorn.run(asgi_app, host=host, port=port, log_config=None, timeout_graceful_shutdown=15)  # type: ignore[arg-type]


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
    _serve(
        create_app(settings, make_tracer_provider(settings, "gateway")),
        settings.host,
        settings.port,
    )


@app.command()
def inference(port: PortOpt = None) -> None:
    """An inference worker of the consumer group (run several to scale)."""
    from services.inference.app import create_app
    from services.inference.settings import InferenceSettings

    settings = InferenceSettings(**({"port": port} if port is not None else {}))  # type: ignore[arg-type]
    configure_logging(settings, "inference")
    _serve(
        create_app(settings, make_tracer_provider(settings, "inference")),
        settings.host,
        settings.port,
    )


@app.command()
def llmsim(port: PortOpt = None) -> None:
    """The OpenAI-compatible model simulator."""
    from services.llmsim.app import create_app
    from services.llmsim.settings import LlmsimSettings

    settings = LlmsimSettings(**({"port": port} if port is not None else {}))  # type: ignore[arg-type]
    configure_logging(settings, "llmsim")
    _serve(create_app(settings), settings.host, settings.port)


@app.command()
def topics(
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers")] = None,
) -> None:
    """Create the registry's topics (idempotent)."""
    from infra.kafka.topics import ensure_topics
    from services.common.settings import KafkaSettings

    settings = KafkaSettings(**({"bootstrap_servers": bootstrap} if bootstrap else {}))  # type: ignore[arg-type]
    created = asyncio.run(ensure_topics(settings.bootstrap_servers, settings.topics))
    typer.echo(f"created: {', '.join(created) or 'none (all existed)'}")


@app.command()
def dev(
    kafka: Annotated[bool, typer.Option(help="Start the local broker (else use the env's)")] = True,
) -> None:
    """The whole system as local processes: broker, llmsim, inference, gateway."""
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


def main() -> None:
    app()
