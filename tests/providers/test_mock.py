"""The in-process mock provider: deterministic, request-derived, configurable by options."""

from __future__ import annotations

import pytest

from engine.endpoints import Endpoint
from engine.errors import InvalidRequestError, RateLimitedError, UnavailableError
from engine.providers import get_adapter

from .conftest import WEATHER_TOOL, chat, collect, tool_conversation


def mock(**options: str) -> Endpoint:
    """An endpoint of the in-process mock model with these options."""
    return Endpoint("mock", "mock", "", "mock/fast", options=options)


async def test_answer_quotes_the_request() -> None:
    """The mock answer is derived from the last user message, with realistic usage."""
    resp = await get_adapter("mock").complete(chat("what is two plus two"), mock())
    assert resp.content == "mock/fast heard: what is two plus two"
    assert resp.usage.input_tokens > 5 and resp.usage.output_tokens == 10


async def test_stream_chunks_by_chunk_size() -> None:
    """Streaming splits the same answer into chunk_size pieces and ends with usage."""
    adapter = get_adapter("mock")
    plain = await adapter.complete(chat("abc"), mock())
    streamed, chunks = await collect(adapter.stream(chat("abc"), mock(chunk_size="4")))
    assert next(c.content for c in chunks if c.content) == "mock"
    assert streamed.content == plain.content and streamed.usage == plain.usage


async def test_tools_produce_a_tool_call_and_results_are_quoted() -> None:
    """Offered tools get called; a tool result is answered from the result."""
    adapter = get_adapter("mock")
    called = await adapter.complete(chat("Oslo", tools=[WEATHER_TOOL]), mock())
    assert called.finish_reason == "tool_calls"
    assert (
        called.tool_calls[0].name == "get_weather"
        and called.tool_calls[0].arguments == '{"city": "Oslo"}'
    )
    answered = await adapter.complete(tool_conversation(), mock())
    assert answered.content == 'The tool said: {"temp_c": 21}'


async def test_streamed_tool_call_reassembles() -> None:
    """Streamed tool-call fragments rebuild the same call as the plain answer."""
    adapter = get_adapter("mock")
    request = chat("Oslo", tools=[WEATHER_TOOL])
    streamed, _ = await collect(adapter.stream(request, mock(chunk_size="3")))
    assert streamed.tool_calls == (await adapter.complete(request, mock())).tool_calls


async def test_fail_rate_is_seeded_and_reproducible() -> None:
    """fail_rate draws a seeded sequence: the same seed fails on the same calls."""

    async def outcomes(seed: str) -> list[bool]:
        from engine.providers.mock import MockAdapter

        adapter = MockAdapter()
        result = []
        for _ in range(20):
            try:
                await adapter.complete(chat(), mock(fail_rate="0.5", seed=seed))
                result.append(True)
            except UnavailableError:
                result.append(False)
        return result

    first = await outcomes("7")
    assert first == await outcomes("7")
    assert True in first and False in first


async def test_fail_kind_selects_the_error() -> None:
    """fail_kind=rate_limited makes failures RateLimitedError."""
    with pytest.raises(RateLimitedError):
        await get_adapter("mock").complete(chat(), mock(fail_rate="1", fail_kind="rate_limited"))


async def test_bad_option_is_a_precise_error() -> None:
    """A non-numeric option names the option and its value."""
    with pytest.raises(InvalidRequestError, match="latency_ms='soon'"):
        await get_adapter("mock").complete(chat(), mock(latency_ms="soon"))


async def test_max_tokens_truncates_with_length() -> None:
    """An output cap shorter than the answer cuts it and reports finish_reason=length."""
    resp = await get_adapter("mock").complete(
        chat("a very long question " * 5, max_tokens=2), mock()
    )
    assert resp.finish_reason == "length" and resp.content is not None and len(resp.content) == 8
