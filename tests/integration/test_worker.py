"""The inference worker on a real broker: commit only after finish, DLQ for poison messages."""

import json

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from contracts import STREAM_EVENT, ChatRequested, DeadLetter, Message, Topics
from services.inference.app import create_app
from services.inference.settings import InferenceSettings
from services.llmsim import LlmsimSettings
from services.llmsim import create_app as create_llmsim
from tests.fakes import eventually, serve
from tests.kafka_records import read_topic

pytestmark = pytest.mark.kafka

GROUP = "inference"


async def _run_worker(kafka_bootstrap: str, prefix: str, llmsim_url: str):
    settings = InferenceSettings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=prefix,
        models="sim",
        llmsim_url=f"{llmsim_url}/v1",
        port=0,
    )
    app = create_app(settings)
    return app.router.lifespan_context(app)


async def _committed(bootstrap: str, tp: TopicPartition) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(GROUP, partitions=[tp])
        meta = offsets.get(tp)
        return meta.offset if meta is not None else -1
    finally:
        await admin.close()


def _request(request_id: str) -> ChatRequested:
    return ChatRequested(
        request_id=request_id,
        tenant_id="t",
        model="small",
        messages=(Message(role="user", content=f"hello {request_id}"),),
        params={"max_tokens": 8},
        reply_partition=0,
    )


class TestCommitAfterFinish:
    async def test_offset_is_committed_only_after_the_request_completed(
        self, kafka_bootstrap: str, topic_prefix: str, topics: Topics, producer: AIOKafkaProducer
    ):
        llmsim = create_llmsim(LlmsimSettings(ttft_ms=1500, tokens_per_second=0))
        async with (
            serve(llmsim) as llmsim_url,
            await _run_worker(kafka_bootstrap, topic_prefix, llmsim_url),
        ):
            meta = await (
                await producer.send(
                    topics.requests.name,
                    _request("r-commit").model_dump_json().encode(),
                    key=b"r-commit",
                    partition=3,
                )
            )
            tp = TopicPartition(topics.requests.name, 3)

            def has(kind: str):
                return lambda recs: any(
                    STREAM_EVENT.validate_json(r.value).type == kind for r in recs
                )

            await read_topic(kafka_bootstrap, topics.tokens.name, until=has("started"))
            # Generating (waiting for the first token): nothing committed past the request.
            assert await _committed(kafka_bootstrap, tp) <= meta.offset
            await read_topic(kafka_bootstrap, topics.tokens.name, until=has("completed"))

            async def committed_past_it() -> bool:
                return await _committed(kafka_bootstrap, tp) == meta.offset + 1

            await eventually(committed_past_it, within=10)


class TestPoisonMessages:
    @pytest.mark.parametrize("raw", [b"{not json", b'{"type": "chat_requested"}', b"\xff\xfe\x00"])
    async def test_invalid_request_goes_to_dlq_with_reason_and_the_next_is_served(
        self,
        raw: bytes,
        kafka_bootstrap: str,
        topic_prefix: str,
        topics: Topics,
        producer: AIOKafkaProducer,
    ):
        llmsim = create_llmsim(LlmsimSettings(ttft_ms=0, tokens_per_second=0))
        async with (
            serve(llmsim) as llmsim_url,
            await _run_worker(kafka_bootstrap, topic_prefix, llmsim_url),
        ):
            bad = await (await producer.send(topics.requests.name, raw, key=b"bad", partition=0))
            good = await (
                await producer.send(
                    topics.requests.name,
                    _request("r-good").model_dump_json().encode(),
                    key=b"r-good",
                    partition=0,
                )
            )
            letters = await read_topic(kafka_bootstrap, topics.requests_dlq.name, until=1)
            letter = DeadLetter.model_validate_json(letters[0].value)
            assert (
                letter.source_offset == bad.offset and letter.source_topic == topics.requests.name
            )
            assert letter.value == raw.decode("utf-8", errors="backslashreplace")
            assert letter.reason and letter.consumer == "inference"
            events = await read_topic(
                kafka_bootstrap,
                topics.tokens.name,
                until=lambda recs: any(json.loads(r.value)["type"] == "completed" for r in recs),
            )
            assert {json.loads(r.value)["request_id"] for r in events} == {"r-good"}
            tp = TopicPartition(topics.requests.name, 0)

            async def both_committed() -> bool:
                return await _committed(kafka_bootstrap, tp) == good.offset + 1

            await eventually(both_committed, within=10)
