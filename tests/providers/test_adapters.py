"""Every HTTP adapter against its fake upstream: answers, streams, tool calls and failures."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from engine.endpoints import Timeouts
from engine.errors import (
    AuthenticationError,
    ContentFilteredError,
    ContextWindowExceededError,
    ModelNotFoundError,
    PermissionDeniedError,
    ProtocolError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
    UnavailableError,
)
from engine.messages import Chunk, ProviderResponse, Request
from engine.providers import get_adapter
from engine.testing.fakes import REFUSAL, FakeUpstream, Fault

from .cases import CASES, Case
from .conftest import CANARY, WEATHER_TOOL, chat, collect, tool_conversation

pytestmark = pytest.mark.parametrize("case", CASES, ids=str)


async def _stream(
    case: Case, up: FakeUpstream, request: Request, **kw: Any
) -> tuple[ProviderResponse, list[Chunk]]:
    return await collect(get_adapter(case.protocol).stream(request, case.endpoint(up, **kw)))


async def test_complete_answers_from_the_request(case: Case) -> None:
    """A plain call returns the upstream's text, usage and finish reason."""
    async with case.fake() as up:
        resp = await get_adapter(case.protocol).complete(chat("bonjour"), case.endpoint(up))
    assert resp.content is not None and resp.content.endswith("heard: bonjour")
    assert resp.finish_reason == "stop"
    assert resp.usage.input_tokens > 0 and resp.usage.output_tokens > 0


async def test_stream_reassembles_the_same_answer(case: Case) -> None:
    """Streaming yields text pieces, a finish reason and usage equal to the plain call."""
    async with case.fake() as up:
        plain = await get_adapter(case.protocol).complete(
            chat("a longer sentence to split"), case.endpoint(up)
        )
        streamed, chunks = await _stream(case, up, chat("a longer sentence to split"))
    assert len([c for c in chunks if c.content]) > 1
    assert streamed.content == plain.content
    assert streamed.usage == plain.usage
    assert streamed.finish_reason == "stop"


async def test_tool_call_comes_back_normalised(case: Case) -> None:
    """Offering a tool yields a tool call with JSON arguments, plain and streamed alike."""
    request = chat("Paris", tools=[WEATHER_TOOL])
    async with case.fake() as up:
        plain = await get_adapter(case.protocol).complete(request, case.endpoint(up))
        streamed, _ = await _stream(case, up, request)
    assert plain.finish_reason == "tool_calls" == streamed.finish_reason
    expected = [("get_weather", {"city": "Paris"})]
    assert [(c.name, json.loads(c.arguments)) for c in plain.tool_calls] == expected
    assert [(c.name, json.loads(c.arguments)) for c in streamed.tool_calls] == expected
    assert all(c.id for c in streamed.tool_calls)


async def test_tool_result_round_trip(case: Case) -> None:
    """A conversation holding a tool call and its result is accepted and answered from the result."""
    async with case.fake() as up:
        plain = await get_adapter(case.protocol).complete(tool_conversation(), case.endpoint(up))
        streamed, _ = await _stream(case, up, tool_conversation())
    assert plain.content is not None and "21" in plain.content
    assert streamed.content == plain.content


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, "InvalidRequestError"),
        (401, AuthenticationError.__name__),
        (403, PermissionDeniedError.__name__),
        (404, ModelNotFoundError.__name__),
        (429, RateLimitedError.__name__),
        (500, UnavailableError.__name__),
        (503, UnavailableError.__name__),
    ],
)
async def test_status_maps_to_error_class(case: Case, status: int, error: str) -> None:
    """Each HTTP failure status becomes the matching engine error, streaming or not."""
    async with case.fake() as up:
        up.script([Fault(status=status), Fault(status=status)])
        with pytest.raises(ProviderError) as plain:
            await get_adapter(case.protocol).complete(chat(), case.endpoint(up))
        with pytest.raises(ProviderError) as streamed:
            await _stream(case, up, chat())
    assert type(plain.value).__name__ == error == type(streamed.value).__name__


async def test_rate_limit_carries_retry_after(case: Case) -> None:
    """A 429 with Retry-After raises RateLimitedError with retry_after and rate_limit set."""
    async with case.fake() as up:
        up.script([Fault(status=429, retry_after=7)])
        with pytest.raises(RateLimitedError) as info:
            await get_adapter(case.protocol).complete(chat(), case.endpoint(up))
    assert info.value.retryable and info.value.retry_after == 7
    limits = info.value.rate_limit
    assert limits is not None and limits.retry_after_s == 7
    if case.rate_headers:
        assert limits.remaining_requests == 0  # the 429 also says the limit is exhausted


async def test_context_window_is_recognised(case: Case) -> None:
    """The provider's context-length error becomes ContextWindowExceededError."""
    async with case.fake() as up:
        up.script(
            [
                Fault(
                    status=400,
                    code="context_length_exceeded",
                    message="This model's maximum context length is 8192 tokens.",
                )
            ]
        )
        with pytest.raises(ContextWindowExceededError):
            await get_adapter(case.protocol).complete(chat(), case.endpoint(up))


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault(reset=True), UnavailableError),
        (Fault(truncate_after=2), ProtocolError),
        (Fault(reset_after=2), ProtocolError),
        (Fault(malformed=True), ProtocolError),
        (Fault(stream_error_after=1), UnavailableError),
    ],
    ids=["reset", "truncated", "reset-mid-stream", "malformed", "error-in-stream"],
)
async def test_stream_faults(case: Case, fault: Fault, error: type[ProviderError]) -> None:
    """Broken streams raise the right retryable error instead of ending quietly."""
    async with case.fake() as up:
        up.script([fault])
        with pytest.raises(error) as info:
            await _stream(case, up, chat("one two three four five six seven"))
    assert info.value.retryable


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault(reset=True), UnavailableError),
        (Fault(malformed=True), ProtocolError),
        (Fault(truncate_after=0), ProtocolError),
    ],
    ids=["reset", "malformed", "truncated"],
)
async def test_complete_faults(case: Case, fault: Fault, error: type[ProviderError]) -> None:
    """Broken plain answers raise the right retryable error."""
    async with case.fake() as up:
        up.script([fault])
        with pytest.raises(error):
            await get_adapter(case.protocol).complete(chat(), case.endpoint(up))


async def test_stall_hits_total_timeout(case: Case) -> None:
    """An upstream that sends headers then nothing times out with phase=total."""
    async with case.fake() as up:
        up.script([Fault(stall=True)])
        with pytest.raises(ProviderTimeoutError) as info:
            await get_adapter(case.protocol).complete(
                chat(), case.endpoint(up, timeouts=Timeouts(total_s=0.05))
            )
    assert info.value.phase == "total"


async def test_slow_first_token_hits_first_token_timeout(case: Case) -> None:
    """A stream whose first bytes come late times out with phase=first_token."""
    async with case.fake() as up:
        up.script([Fault(first_token_delay=0.5)])
        with pytest.raises(ProviderTimeoutError) as info:
            await _stream(case, up, chat(), timeouts=Timeouts(first_token_s=0.05, total_s=5))
    assert info.value.phase == "first_token"


async def test_stream_cut_by_the_total_deadline_mid_way(case: Case) -> None:
    """A stream whose pieces keep coming, but too slowly for the total deadline, times out
    with phase=total after its first pieces (each read waits on the loop's one timer)."""
    async with case.fake() as up:
        up.script([Fault(trickle=0.05)])
        started = asyncio.get_running_loop().time()
        with pytest.raises(ProviderTimeoutError) as info:
            await _stream(
                case, up, chat("a sentence long enough to trickle"), timeouts=Timeouts(total_s=0.2)
            )
    assert info.value.phase == "total"
    assert asyncio.get_running_loop().time() - started < 2.0


async def test_trickle_within_deadline_completes(case: Case) -> None:
    """A slow trickle that stays within the deadlines is read to the end."""
    async with case.fake() as up:
        up.script([Fault(trickle=0.001, latency=(0.0, 0.002))])
        streamed, _ = await _stream(case, up, chat("slowly now"))
    assert streamed.content is not None and streamed.content.endswith("slowly now")


async def test_connection_refused_is_unavailable(case: Case) -> None:
    """Nothing listening on the port raises UnavailableError."""
    async with case.fake() as up:
        ep = case.endpoint(up)
    with pytest.raises(UnavailableError):
        await get_adapter(case.protocol).complete(chat(), ep)


async def test_wrong_key_never_leaks(case: Case) -> None:
    """A rejected key that the upstream echoes is redacted from the error."""
    async with case.fake(api_key="the-right-key") as up:
        with pytest.raises(AuthenticationError) as info:
            await get_adapter(case.protocol).complete(chat(), case.endpoint(up))
    assert CANARY not in str(info.value) and CANARY not in repr(info.value)


async def test_rate_limit_headers_reach_the_response(case: Case) -> None:
    """Rate-limit headers of a successful answer are parsed onto the response and first chunk."""
    async with case.fake() as up:
        resp = await get_adapter(case.protocol).complete(chat(), case.endpoint(up))
        _, chunks = await _stream(case, up, chat())
    if not case.rate_headers:
        assert resp.rate_limit is None and chunks[0].rate_limit is None
        return
    assert resp.rate_limit is not None and resp.rate_limit.remaining_requests is not None
    assert chunks[0].rate_limit is not None


async def test_warm_opens_a_connection(case: Case) -> None:
    """warm() reaches the upstream's host without sending a chat request."""
    async with case.fake() as up:
        await get_adapter(case.protocol).warm(case.endpoint(up))
        assert up.requests == []


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_refusal(case: Case, stream: bool) -> None:
    """A refusal is finish_reason=content_filter, ContentFilteredError (Gemini) or a stop (Ollama)."""
    async with case.fake() as up:
        up.script([Fault(refuse=True)])
        call = (
            _stream(case, up, chat())
            if stream
            else get_adapter(case.protocol).complete(chat(), case.endpoint(up))
        )
        if case.refusal == "error":
            with pytest.raises(ContentFilteredError):
                await call
            return
        result = await call
    resp = result[0] if stream else result
    assert resp.content == REFUSAL
    assert resp.finish_reason == ("content_filter" if case.refusal == "finish" else "stop")


async def test_first_token_timeout_does_not_cut_plain_answers(case: Case) -> None:
    """A plain (non-streamed) answer has no first token, so only the total deadline applies."""
    async with case.fake() as up:
        up.script([Fault(latency=0.1)])
        ep = case.endpoint(up, timeouts=Timeouts(first_token_s=0.02, total_s=5))
        resp = await get_adapter(case.protocol).complete(chat("patience"), ep)
    assert resp.content is not None and resp.content.endswith("patience")


async def test_pieces_split_mid_line_and_mid_character(case: Case) -> None:
    """A stream sent in 3-byte pieces (split lines and UTF-8 characters) rebuilds the plain answer."""
    text = "héllo wörld 世界 🌍 ok"
    async with case.fake() as up:
        plain = await get_adapter(case.protocol).complete(chat(text), case.endpoint(up))
        up.script([Fault(trickle_bytes=3)])
        streamed, _ = await _stream(case, up, chat(text))
    assert plain.content is not None and plain.content.endswith(text)
    assert streamed.content == plain.content and streamed.usage == plain.usage
