"""One trace per request, on the real broker: the gateway's HTTP span, its Kafka publish, the
worker's consume and backend call, and the gateway's delivery, joined through Kafka headers;
GenAI attributes on the spans, and never the prompt or the answer."""

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from services.gateway.app import create_app as create_gateway
from services.gateway.settings import GatewaySettings
from services.inference.app import create_app as create_worker
from services.inference.settings import InferenceSettings
from services.llmsim import LlmsimSettings
from services.llmsim import create_app as create_llmsim
from tests.fakes import eventually, serve

pytestmark = pytest.mark.kafka

PROMPT = "Trace me: a question nobody else asks"


@asynccontextmanager
async def running(
    bootstrap: str, prefix: str, tmp_path: Path, provider: TracerProvider
) -> AsyncIterator[str]:
    """llmsim, one worker and one gateway in this process, all on `provider`."""
    async with AsyncExitStack() as stack:
        llmsim = await stack.enter_async_context(serve(create_llmsim(LlmsimSettings(ttft_ms=5))))
        common: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "topic_prefix": prefix,
            "models": "sim",
            "llmsim_url": f"{llmsim}/v1",
        }
        worker = create_worker(InferenceSettings(**common, port=0), provider)
        await stack.enter_async_context(worker.router.lifespan_context(worker))
        gateway = create_gateway(
            GatewaySettings(
                **common,
                auth_mode="open",
                database_url=f"sqlite+aiosqlite:///{tmp_path}/gateway.db",
            ),
            provider,
        )
        await stack.enter_async_context(gateway.router.lifespan_context(gateway))
        yield await stack.enter_async_context(serve(gateway))


def _trace_of(spans: list[ReadableSpan], request_id: str) -> list[ReadableSpan]:
    [deliver] = [
        s
        for s in spans
        if s.name == "tokenbus.deliver"
        and (s.attributes or {}).get("tokenbus.request_id") == request_id
    ]
    trace_id = deliver.context.trace_id
    return [s for s in spans if s.context.trace_id == trace_id]


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    chain = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        chain.append(span)
    return chain


def _check_one_trace(trace: list[ReadableSpan], path: str, answer: str, tokens: int) -> None:
    by_id = {s.context.span_id: s for s in trace}
    [http] = [s for s in trace if s.kind == SpanKind.SERVER and path in s.name]
    # FastStream's publish of ChatRequested ("<topic> create", with its "publish" inside).
    [publish] = [
        s for s in trace if s.kind == SpanKind.PRODUCER and s.name.endswith("requests create")
    ]
    consume = [s for s in trace if s.kind == SpanKind.CONSUMER and "requests" in s.name]
    [backend] = [s for s in trace if s.kind == SpanKind.CLIENT and s.name.startswith("chat ")]
    [deliver] = [s for s in trace if s.name == "tokenbus.deliver"]
    # The chain: HTTP -> publish -> (Kafka) -> consume -> backend call; HTTP -> delivery.
    assert http in _ancestors(publish, by_id)
    assert consume and set(consume) & set(_ancestors(backend, by_id))
    assert publish in _ancestors(backend, by_id)
    assert http in _ancestors(deliver, by_id)
    attributes = backend.attributes or {}
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == attributes["gen_ai.response.model"]
    assert attributes["gen_ai.usage.output_tokens"] == tokens
    assert (deliver.attributes or {})["gen_ai.usage.output_tokens"] == tokens
    # Models and counts, never text: no attribute of any span holds the prompt or answer.
    for span in trace:
        for value in (span.attributes or {}).values():
            text = str(value)
            assert PROMPT not in text and (len(answer) < 8 or answer not in text), span.name


async def test_chat_and_responses_each_make_one_trace_across_gateway_and_worker(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with running(kafka_bootstrap, topic_prefix, tmp_path, provider) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        async with client:
            stream = await client.chat.completions.create(
                model="small",
                messages=[{"role": "user", "content": PROMPT}],
                max_tokens=6,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]
            chat_id = chunks[0].id
            answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            response = await client.responses.create(
                model="small", input=PROMPT, max_output_tokens=5
            )

        def ended(request_id: str) -> Any:
            async def check() -> bool:
                return any(
                    s.name == "tokenbus.deliver"
                    and (s.attributes or {}).get("tokenbus.request_id") == request_id
                    for s in exporter.get_finished_spans()
                )

            return check

        await eventually(ended(chat_id), within=10)
        spans = list(exporter.get_finished_spans())
        _check_one_trace(_trace_of(spans, chat_id), "/v1/chat/completions", answer, 6)

        [message] = [item for item in response.output if item.type == "message"]
        text = "".join(part.text for part in message.content if part.type == "output_text")
        response_request = next(
            (s.attributes or {}).get("tokenbus.request_id")
            for s in exporter.get_finished_spans()
            if s.name == "tokenbus.deliver"
            and (s.attributes or {}).get("tokenbus.request_id") != chat_id
        )
        spans = list(exporter.get_finished_spans())
        _check_one_trace(_trace_of(spans, str(response_request)), "/v1/responses", text, 5)
