"""What each protocol adapter does that the others do not: URLs, dialects, body
translation, protocol-specific errors, and the shared transport's pool behaviour."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys

import pytest

from engine.endpoints import Endpoint, Timeouts
from engine.errors import (
    AuthenticationError,
    ContentFilteredError,
    InvalidRequestError,
    ModelNotFoundError,
    ProviderTimeoutError,
    RateLimitedError,
    UnavailableError,
)
from engine.messages import ProviderResponse, Request, parse_request
from engine.providers import aclose_all, get_adapter
from engine.providers.sse import iter_sse
from engine.testing.fakes import (
    FakeAnthropic,
    FakeAzure,
    FakeGemini,
    FakeOllama,
    FakeOpenAI,
    Fault,
)

from .conftest import WEATHER_TOOL, chat, collect, endpoint, tool_conversation, tool_turns


async def _drain(protocol: str, request: Request, ep: Endpoint) -> ProviderResponse:
    return (await collect(get_adapter(protocol).stream(request, ep)))[0]


# ---------------------------------------------------------------- OpenAI dialects


async def test_openai_token_field_follows_caller_or_option() -> None:
    """max_tokens vs max_completion_tokens: the caller's field, unless the option forces one."""
    async with FakeOpenAI() as up:
        adapter = get_adapter("openai")
        await adapter.complete(chat(max_tokens=9), endpoint(up.url))
        assert up.last.body["max_tokens"] == 9 and "max_completion_tokens" not in up.last.body
        await adapter.complete(
            chat(max_tokens=9), endpoint(up.url, max_tokens_field="max_completion_tokens")
        )
        assert up.last.body["max_completion_tokens"] == 9 and "max_tokens" not in up.last.body


async def test_openai_stream_usage_option() -> None:
    """Streams ask for usage by default; stream_usage=false leaves stream_options out."""
    async with FakeOpenAI() as up:
        answer = await _drain("openai", chat(), endpoint(up.url))
        assert up.last.body["stream_options"] == {"include_usage": True}
        assert answer.usage.output_tokens > 0
        answer = await _drain("openai", chat(), endpoint(up.url, stream_usage="false"))
        assert "stream_options" not in up.last.body
        assert answer.usage.output_tokens == 0


@pytest.mark.dialect
async def test_mistral_and_groq_dialects() -> None:
    """Mistral gets tool_choice "any" and random_seed; Groq gets no messages[].name."""
    request = parse_request(
        {
            "messages": [{"role": "user", "content": "hi", "name": "ann"}],
            "tools": [WEATHER_TOOL],
            "tool_choice": "required",
            "seed": 3,
        }
    )
    async with FakeOpenAI() as up:
        await get_adapter("openai").complete(request, endpoint(up.url, dialect="mistral"))
        assert up.last.body["tool_choice"] == "any" and up.last.body["random_seed"] == 3
        assert "seed" not in up.last.body
        await get_adapter("openai").complete(request, endpoint(up.url, dialect="groq"))
        assert "name" not in up.last.body["messages"][0] and up.last.body["seed"] == 3


async def test_extra_headers_option() -> None:
    """`header:<Name>` options are sent as headers (OpenRouter attribution)."""
    async with FakeOpenAI() as up:
        await get_adapter("openai").complete(chat(), endpoint(up.url, **{"header:X-Title": "demo"}))
    assert up.last.headers["x-title"] == "demo"


async def test_numeric_code_in_stream_error_is_the_status() -> None:
    """An OpenRouter-style in-stream error with a numeric code maps by that status."""
    async with FakeOpenAI() as up:
        up.script([Fault(stream_error_after=1, code="429", message="slow down")])
        with pytest.raises(RateLimitedError):
            await _drain("openai", chat("a b c d e f"), endpoint(up.url))


async def test_per_request_fault_header() -> None:
    """A fault can be asked for per request with the x-fake-fault header."""
    async with FakeOpenAI() as up:
        ep = endpoint(up.url, **{"header:x-fake-fault": '{"status": 503}'})
        with pytest.raises(UnavailableError):
            await get_adapter("openai").complete(chat(), ep)


# ---------------------------------------------------------------- Azure


async def test_azure_url_key_and_deployment_option() -> None:
    """Azure calls the deployment URL with api-version and the api-key header."""
    async with FakeAzure() as up:
        ep = endpoint(up.url, "azure", "gpt-4o", deployment="prod-4o", api_version="2024-06-01")
        await get_adapter("azure").complete(chat(), ep)
    assert up.last.path == "/openai/deployments/prod-4o/chat/completions"
    assert up.last.query == {"api-version": "2024-06-01"}
    assert "api-key" in up.last.headers and "authorization" not in up.last.headers


async def test_azure_content_filter_and_missing_deployment() -> None:
    """Azure's content_filter 400 is ContentFilteredError; a missing deployment is a 404 model."""
    async with FakeAzure(deployments=("known",)) as up:
        up.script([Fault(status=400, code="content_filter", message="The response was filtered")])
        with pytest.raises(ContentFilteredError):
            await get_adapter("azure").complete(chat(), endpoint(up.url, "azure", "known"))
        with pytest.raises(ModelNotFoundError):
            await get_adapter("azure").complete(chat(), endpoint(up.url, "azure", "unknown"))


# ---------------------------------------------------------------- Anthropic


async def test_anthropic_body_translation() -> None:
    """System goes top-level, max_tokens defaults, required becomes any, parallel flag maps."""
    request = chat(
        "x", tools=[WEATHER_TOOL], tool_choice="required", parallel_tool_calls=False, stop="END"
    )
    async with FakeAnthropic() as up:
        await get_adapter("anthropic").complete(request, endpoint(up.url, "anthropic", "c"))
    body = up.last.body
    assert body["system"] == "You are terse." and body["messages"][0]["role"] == "user"
    assert body["max_tokens"] == 4096 and body["stop_sequences"] == ["END"]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["tools"][0]["input_schema"] == WEATHER_TOOL["function"]["parameters"]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_anthropic_overloaded(stream: bool) -> None:
    """529 overloaded, and `event: error` overloaded inside a 200 stream, are UnavailableError."""
    async with FakeAnthropic() as up:
        up.script([Fault(status=529), Fault(stream_error_after=2)])
        ep = endpoint(up.url, "anthropic", "c")
        with pytest.raises(UnavailableError) as first:
            if stream:
                await _drain("anthropic", chat(), ep)
            else:
                await get_adapter("anthropic").complete(chat(), ep)
        assert first.value.status == 529
        with pytest.raises(UnavailableError):
            await _drain("anthropic", chat("one two three four five"), ep)


async def test_anthropic_stream_usage_is_combined() -> None:
    """Input tokens from message_start and output tokens from message_delta add up as plain."""
    async with FakeAnthropic() as up:
        ep = endpoint(up.url, "anthropic", "c")
        plain = await get_adapter("anthropic").complete(chat("count me"), ep)
        streamed = await _drain("anthropic", chat("count me"), ep)
    assert streamed.usage == plain.usage and plain.usage.input_tokens > 1


# ---------------------------------------------------------------- Gemini


async def test_gemini_url_and_body() -> None:
    """Model and method are in the URL (alt=sse to stream); config is camelCase."""
    request = chat(
        "x",
        temperature=0.5,
        max_tokens=20,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    async with FakeGemini() as up:
        ep = endpoint(up.url, "gemini", "gemini-2.5-flash")
        await get_adapter("gemini").complete(request, ep)
        assert up.last.path == "/v1beta/models/gemini-2.5-flash:generateContent"
        body = up.last.body
        assert body["systemInstruction"] == {"parts": [{"text": "You are terse."}]}
        assert body["generationConfig"] == {"temperature": 0.5, "maxOutputTokens": 20}
        assert body["toolConfig"]["functionCallingConfig"] == {
            "mode": "ANY",
            "allowedFunctionNames": ["get_weather"],
        }
        await _drain("gemini", chat(), ep)
        assert up.last.path.endswith(":streamGenerateContent") and up.last.query == {"alt": "sse"}


async def test_gemini_errors() -> None:
    """A wrong key (400 API_KEY_INVALID) is AuthenticationError; RetryInfo sets retry_after."""
    async with FakeGemini(api_key="right") as up:
        with pytest.raises(AuthenticationError):
            await get_adapter("gemini").complete(
                chat(), endpoint(up.url, "gemini", "g", key="wrong")
            )
        up.script([Fault(status=429, retry_after=33)])
        with pytest.raises(RateLimitedError) as info:
            await get_adapter("gemini").complete(
                chat(), endpoint(up.url, "gemini", "g", key="right")
            )
    assert info.value.retry_after == 33


# ---------------------------------------------------------------- Ollama


async def test_ollama_body_and_errors() -> None:
    """stream is always explicit, options use Modelfile names, a missing model is a 404."""
    async with FakeOllama(models=("llama3",)) as up:
        ep = endpoint(up.url, "ollama", "llama3", key=None)
        await get_adapter("ollama").complete(chat(max_tokens=7, temperature=0.1, stop="X"), ep)
        body = up.last.body
        assert body["stream"] is False
        assert body["options"] == {"temperature": 0.1, "num_predict": 7, "stop": ["X"]}
        assert "authorization" not in up.last.headers
        with pytest.raises(ModelNotFoundError, match="not found"):
            await get_adapter("ollama").complete(
                chat(), endpoint(up.url, "ollama", "mistral", key=None)
            )


# ---------------------------------------------------------------- transport and SSE


async def test_pool_size_bounds_connections() -> None:
    """A pool of 2 never has more than 2 requests in flight, and still serves all 8."""
    async with FakeOpenAI() as up:
        ep = endpoint(up.url)
        ep = type(ep)(**{**{f: getattr(ep, f) for f in ep.__dataclass_fields__}, "pool_size": 2})
        up.default_fault = Fault(latency=0.01)
        results = await asyncio.gather(
            *(get_adapter("openai").complete(chat(str(i)), ep) for i in range(8))
        )
    assert [r.content for r in results] == [f"gpt-test heard: {i}" for i in range(8)]
    assert 1 <= up.peak_in_flight <= 2


def test_threaded_fake_with_asyncio_run_per_call() -> None:
    """A fake in a thread serves sync code that runs one event loop per call."""

    async def once(url: str) -> str | None:
        try:
            return (await get_adapter("openai").complete(chat("sync"), endpoint(url))).content
        finally:
            await aclose_all()

    with FakeOpenAI.in_thread() as up:
        assert [asyncio.run(once(up.url)) for _ in range(2)] == ["gpt-test heard: sync"] * 2
    assert len(up.requests) == 2


async def test_sse_decoder_rules() -> None:
    """Comments and blank keep-alives are skipped, multi-line data joins, a final open event counts."""

    async def lines():  # type: ignore[no-untyped-def]
        for line in [
            b": OPENROUTER PROCESSING",
            b"",
            b"event: a",
            b"data: 1",
            b"data: 2",
            b"",
            b"data:",
            b"",
            b"data:x",
            b"",
            b"data: last",
        ]:
            yield line

    events = [(e.event, e.data) async for e in iter_sse(lines())]
    assert events == [("a", "1\n2"), ("message", "x"), ("message", "last")]


async def test_connect_timeout_has_connect_phase() -> None:
    """A listener whose accept queue is full never completes the handshake: phase=connect."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):  # fill the accept queue so further SYNs are dropped
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        ep = endpoint(f"http://127.0.0.1:{port}/v1", timeouts=Timeouts(connect_s=0.05, total_s=5))
        with pytest.raises(ProviderTimeoutError) as info:
            await get_adapter("openai").complete(chat(), ep)
        assert info.value.phase == "connect" and info.value.retryable
    finally:
        for s in [*fillers, server]:
            s.close()


async def test_bad_fault_header_is_a_precise_400() -> None:
    """A malformed x-fake-fault header gets a 400 naming the problem, not a server crash."""
    async with FakeOpenAI() as up:
        ep = endpoint(up.url, **{"header:x-fake-fault": '{"stauts": 500}'})
        with pytest.raises(InvalidRequestError, match="stauts"):
            await get_adapter("openai").complete(chat(), ep)


IMAGE = "data:image/png;base64,iVBORw0KGgo="


async def test_images_translate_per_protocol() -> None:
    """Data-URL images become Anthropic base64 blocks, Gemini inlineData and Ollama images."""
    request = parse_request(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is it?"},
                        {"type": "image_url", "image_url": {"url": IMAGE}},
                    ],
                }
            ]
        }
    )
    async with FakeAnthropic() as a, FakeGemini() as g, FakeOllama() as o:
        await get_adapter("anthropic").complete(request, endpoint(a.url, "anthropic", "c"))
        await get_adapter("gemini").complete(request, endpoint(g.url, "gemini", "g"))
        await get_adapter("ollama").complete(request, endpoint(o.url, "ollama", "l", key=None))
    assert a.last.body["messages"][0]["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    assert g.last.body["contents"][0]["parts"][1] == {
        "inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}
    }
    assert o.last.body["messages"][0]["images"] == ["iVBORw0KGgo="]


async def test_ollama_rejects_linked_images_precisely() -> None:
    """Ollama takes only inline images: a link is an InvalidRequestError before any request."""
    request = parse_request(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
                    ],
                }
            ]
        }
    )
    async with FakeOllama() as o:
        with pytest.raises(InvalidRequestError, match="base64"):
            await get_adapter("ollama").complete(request, endpoint(o.url, "ollama", "l", key=None))
        assert o.requests == []


@pytest.mark.parametrize("protocol", ["anthropic", "gemini", "ollama"])
async def test_unparseable_tool_arguments_are_a_precise_error(protocol: str) -> None:
    """Protocols that need arguments as an object reject non-JSON arguments by call id."""
    request = parse_request(
        {
            "messages": [
                {"role": "user", "content": "x"},
                *tool_turns("call_9", "f", "{oops", "r"),
            ]
        }
    )
    with pytest.raises(InvalidRequestError, match="call_9"):
        await get_adapter(protocol).complete(request, endpoint("http://127.0.0.1:9", protocol, "m"))


async def test_azure_v1_api_style() -> None:
    """api_style=v1 calls /openai/v1/chat/completions with the deployment as the model."""
    async with FakeAzure(deployments=("prod-4o",)) as up:
        resp = await get_adapter("azure").complete(
            chat("v1"), endpoint(up.url, "azure", "prod-4o", api_style="v1")
        )
    assert up.last.path == "/openai/v1/chat/completions" and up.last.query == {}
    assert up.last.body["model"] == "prod-4o" and resp.content == "prod-4o heard: v1"


async def test_gemini_thought_signatures_round_trip() -> None:
    """A signed Gemini call goes back with its signature; a foreign call needs the bypass one."""
    from engine.testing.fakes.gemini import SKIP_SIGNATURE

    async with FakeGemini(thought_signatures=True) as up:
        ep = endpoint(up.url, "gemini", "g")
        first = await get_adapter("gemini").complete(chat("Lima", tools=[WEATHER_TOOL]), ep)
        call = first.tool_calls[0]
        follow = parse_request(
            {
                "messages": [
                    {"role": "user", "content": "Lima"},
                    *tool_turns(call.id, call.name, call.arguments, '{"temp_c": 19}'),
                ],
                "tools": [WEATHER_TOOL],
            }
        )
        answer = await get_adapter("gemini").complete(follow, ep)
        assert answer.content == 'The tool said: {"temp_c": 19}'
        assert "thoughtSignature" in up.last.body["contents"][1]["parts"][0]
        with pytest.raises(InvalidRequestError, match="thought_signature"):
            await get_adapter("gemini").complete(tool_conversation(), ep)
        ok = await get_adapter("gemini").complete(
            tool_conversation(),
            endpoint(up.url, "gemini", "g", foreign_call_signature=SKIP_SIGNATURE),
        )
    assert ok.content is not None and "21" in ok.content


async def test_fake_runs_from_the_command_line() -> None:
    """`python -m engine.testing.fakes openai` prints its URL and serves our adapter."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine.testing.fakes",
        "openai",
        "--key",
        "demo-key",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        url = (await proc.stdout.readline()).decode().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        resp = await get_adapter("openai").complete(chat("cli"), endpoint(url, key="demo-key"))
        assert resp.content == "gpt-test heard: cli"
    finally:
        proc.terminate()
        await proc.wait()
