"""llmsim under real uvicorn, spoken to by the official OpenAI SDK, including disconnects."""

from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from services.llmsim import answer_tokens, create_app

from .conftest import eventually, fast_settings, serve

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is a partition?"},
]


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    async with serve(create_app(fast_settings())) as url:
        yield url


async def test_openai_sdk_stream_and_completion(base_url: str) -> None:
    expected = "".join(answer_tokens(MESSAGES, None, 64))
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x") as client:
        stream = await client.chat.completions.create(
            model="llmsim-small",
            messages=MESSAGES,
            stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == expected
        assert chunks[-2].choices[0].finish_reason == "stop"
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 64

        completion = await client.chat.completions.create(
            model="llmsim-large",
            messages=MESSAGES,  # type: ignore[arg-type]
        )
        assert completion.choices[0].message.content == expected
        assert completion.usage is not None
        assert completion.usage.total_tokens == completion.usage.prompt_tokens + 64
        models = await client.models.list()
        assert [m.id for m in models.data] == ["llmsim-small", "llmsim-large"]


async def test_openai_sdk_max_tokens(base_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x") as client:
        stream = await client.chat.completions.create(
            model="llmsim-small",
            messages=MESSAGES,
            stream=True,  # type: ignore[arg-type]
            max_tokens=7,
        )
        chunks = [chunk async for chunk in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        assert text == "".join(answer_tokens(MESSAGES, 7, 64))
        assert chunks[-1].choices[0].finish_reason == "length"


async def test_openai_sdk_sees_400(base_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="m", messages=[])
    assert caught.value.code == "empty_array"
    assert caught.value.param == "messages"


async def test_client_closing_a_stream_early_is_counted() -> None:
    # Slow enough that the stream is certainly still running when the client leaves.
    app = create_app(fast_settings(tokens_per_second=50))
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:

        async def stats() -> dict[str, int]:
            return (await http.get("/stats")).json()

        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x") as client:
            stream = await client.chat.completions.create(
                model="m",
                messages=MESSAGES,
                stream=True,
                max_tokens=1000,  # type: ignore[arg-type]
            )
            received = 0
            async for _ in stream:
                received += 1
                if received == 3:
                    break
            assert (await stats())["open_streams"] == 1
            await stream.close()

        async def closed() -> bool:
            s = await stats()
            return s["open_streams"] == 0 and s["streams_closed_early"] == 1

        await eventually(closed)
        final = await stats()
        assert final["streams_completed"] == 0
        assert final["peak_open_streams"] == 1
        assert final["tokens_total"] < 1000  # the generator stopped, it did not run to the end
