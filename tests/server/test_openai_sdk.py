"""The official openai SDK pointed at the server: chat, streaming, tools and each error class."""

from __future__ import annotations

import openai
import pytest

from engine.errors import (
    AllCandidatesFailedError,
    AttemptRecord,
    BudgetExceededError,
    RequestError,
    UnservableRequestError,
    all_failed,
)
from tests.server.conftest import Running

MSG = [{"role": "user", "content": "hello there"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


async def test_chat_returns_answer_and_routing_headers(server: Running) -> None:
    """A plain chat call returns the engine's answer and headers naming provider, model, cost."""
    async with server.client() as client:
        raw = await client.chat.completions.with_raw_response.create(model="fast", messages=MSG)
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hello there"
    assert completion.usage is not None and completion.usage.total_tokens == 5
    assert raw.headers["x-engine-provider"] == "mock"
    assert raw.headers["x-engine-model"] == "mock/fast"
    assert raw.headers["x-engine-attempts"] == "1"
    assert raw.headers["x-engine-cache"] == "miss"
    assert float(raw.headers["x-engine-cost-usd"]) == pytest.approx(0.25)


async def test_stream_yields_chunks_and_usage_when_asked(server: Running) -> None:
    """Streaming relays every chunk and adds a usage chunk when include_usage is set."""
    async with server.client() as client:
        stream = await client.chat.completions.create(
            model="fast", messages=MSG, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello there"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3
    assert len({c.id for c in chunks}) == 1


async def test_stream_omits_usage_unless_asked(server: Running) -> None:
    """Without stream_options.include_usage no usage-only chunk is sent."""
    async with server.client() as client:
        stream = await client.chat.completions.create(model="fast", messages=MSG, stream=True)
        chunks = [c async for c in stream]
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


async def test_tools_round_trip(server: Running) -> None:
    """Tools reach the engine and tool calls come back in OpenAI shape."""
    async with server.client() as client:
        completion = await client.chat.completions.create(model="fast", messages=MSG, tools=TOOLS)
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"
    assert call.function.arguments == '{"city": "Paris"}'
    assert completion.choices[0].finish_reason == "tool_calls"


async def test_streamed_tool_call_fragments_reassemble(server: Running) -> None:
    """Streamed tool-call fragments arrive with one index and concatenate to valid JSON."""
    async with server.client() as client:
        stream = await client.chat.completions.create(
            model="fast", messages=MSG, tools=TOOLS, stream=True
        )
        chunks = [c async for c in stream]
    deltas = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].function.name == "get_weather"
    assert "".join(d.function.arguments or "" for d in deltas) == '{"city": "Paris"}'


async def test_policy_header_and_metadata_headers_reach_engine(server: Running) -> None:
    """x-engine-policy picks the policy; x-engine-* headers fill metadata; body metadata wins."""
    async with server.client() as client:
        await client.chat.completions.create(
            model="fast", messages=MSG, metadata={"task_type": "code"},
            extra_headers={
                "x-engine-policy": "cheap", "x-engine-workspace": "team-a",
                "x-engine-task-type": "chat", "x-engine-tags": "a, b",
            },
        )  # fmt: skip
    request, policy = server.engine.calls[-1]
    assert policy == "cheap"
    assert request.metadata == {"workspace": "team-a", "task_type": "code", "tags": ["a", "b"]}


async def test_response_format_is_passed_through(server: Running) -> None:
    """response_format reaches the engine as a validated field."""
    async with server.client() as client:
        await client.chat.completions.create(
            model="fast", messages=MSG, response_format={"type": "json_object"}
        )
    request, _ = server.engine.calls[-1]
    assert request.response_format is not None and request.response_format.type == "json_object"


async def test_unknown_policy_is_not_found(server: Running) -> None:
    """An unknown policy or model is a 404 NotFoundError with code model_not_found."""
    async with server.client() as client:
        with pytest.raises(openai.NotFoundError) as info:
            await client.chat.completions.create(model="nope", messages=MSG)
    assert info.value.code == "model_not_found"


async def test_unknown_policy_on_stream_is_not_found(server: Running) -> None:
    """A stream that fails before its first chunk gets a real HTTP status, not an SSE error."""
    async with server.client() as client:
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="nope", messages=MSG, stream=True)


@pytest.mark.parametrize(
    ("error", "sdk_error", "status"),
    [
        (RequestError("bad"), openai.BadRequestError, 400),
        (BudgetExceededError("over budget"), openai.RateLimitError, 429),
        (
            AllCandidatesFailedError([AttemptRecord("a", "a/x", "unavailable", status=503)]),
            openai.InternalServerError, 503,
        ),
        (
            AllCandidatesFailedError([AttemptRecord("a", "a/x", "timeout")]),
            openai.InternalServerError, 504,
        ),
        (
            AllCandidatesFailedError([AttemptRecord("a", "a/x", "protocol_error")]),
            openai.InternalServerError, 502,
        ),
        (
            AllCandidatesFailedError([AttemptRecord("a", "a/x", "rate_limited", status=429)]),
            openai.RateLimitError, 429,
        ),
        # the typed final errors (errors.all_failed) keep the same statuses
        (
            all_failed([AttemptRecord("a", "a/x", "rate_limited", status=429, key_id="a#0")] * 2),
            openai.RateLimitError, 429,
        ),
        (
            all_failed([AttemptRecord("a", "a/x", "timeout", key_id="a#0")]),
            openai.InternalServerError, 504,
        ),
        (
            all_failed([AttemptRecord("a", "a/x", "authentication", status=401, key_id="a#0")]),
            openai.InternalServerError, 502,
        ),
        (UnservableRequestError("no candidate can serve: vision"), openai.BadRequestError, 400),
    ],
)  # fmt: skip
async def test_engine_errors_map_to_sdk_errors(
    server: Running, error: Exception, sdk_error: type[Exception], status: int
) -> None:
    """Each engine error class reaches the SDK as the matching exception and status."""
    server.engine.fail_with = error
    async with server.client() as client:
        with pytest.raises(sdk_error) as info:
            await client.chat.completions.create(model="fast", messages=MSG)
    assert info.value.status_code == status  # type: ignore[attr-defined]
    assert "Traceback" not in str(info.value)


async def test_unexpected_exception_is_a_bare_500(server: Running) -> None:
    """A bug inside the engine is a 500 with a generic message, never a traceback."""
    server.engine.fail_with = ZeroDivisionError("secret internals")
    async with server.client() as client:
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(model="fast", messages=MSG)
    assert "secret internals" not in str(info.value.body)
