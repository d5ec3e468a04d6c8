"""Shared fixtures for the provider tests: fakes, endpoints, and pool cleanup per test."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from engine.endpoints import Endpoint, Timeouts
from engine.messages import Chunk, ProviderResponse, Request, StreamAccumulator, parse_request
from engine.providers import aclose_all
from engine.secrets import Secret
from engine.testing.fakes import FakeOpenAI

from . import openapi

CANARY = "CANARY-key-7f3a9c1e5b"


@pytest.fixture(autouse=True)
async def _close_pools() -> AsyncIterator[None]:
    """Every test gets fresh pools on its own event loop."""
    yield
    await aclose_all()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "dialect: the test sends a non-OpenAI dialect (Mistral) to the OpenAI fake"
    )


@pytest.fixture(autouse=True)
def _openai_wire_validates(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[None]:
    """Every OpenAI-format body sent or received by an OpenAI/Azure fake in any test
    validates against the official OpenAPI document (requests from our adapter and from
    the SDKs; responses, stream chunks and errors of the OpenAI fake)."""
    started: list[FakeOpenAI] = []
    original = FakeOpenAI.start

    async def start(self: FakeOpenAI, port: int = 0) -> FakeOpenAI:
        started.append(self)
        return await original(self, port)

    monkeypatch.setattr(FakeOpenAI, "start", start)
    yield
    if not started or request.node.get_closest_marker("dialect"):
        return
    found = []
    for fake in started:
        for req in fake.requests:
            if req.body is not None:
                schema = (
                    "CreateEmbeddingRequest"
                    if req.path.endswith("/embeddings")
                    else "CreateChatCompletionRequest"
                )
                found += [f"request {p}" for p in openapi.problems(schema, req.body)]
        if type(fake) is not FakeOpenAI:
            continue  # Azure's own additions (prompt-filter chunks) are not in OpenAI's spec
        for kind, data in fake.sent:
            schema = {
                "response": "CreateChatCompletionResponse",
                "chunk": "CreateChatCompletionStreamResponse",
                "error": "ErrorResponse",
            }[kind]
            found += [f"{kind} {p}" for p in openapi.problems(schema, data)]
    assert found == []


def endpoint(
    url: str,
    protocol: str = "openai",
    model: str = "gpt-test",
    key: str | None = CANARY,
    timeouts: Timeouts | None = None,
    **options: str,
) -> Endpoint:
    """An endpoint for a fake upstream."""
    return Endpoint(
        provider=f"fake-{protocol}",
        protocol=protocol,
        base_url=url,
        upstream_model=model,
        api_key=Secret(key) if key is not None else None,
        timeouts=timeouts or Timeouts(connect_s=2, total_s=10),
        options=options,
    )


WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def chat(text: str = "hello there", **extra: Any) -> Request:
    """A one-turn chat request with a system prompt."""
    return parse_request(
        {
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": text},
            ],
            **extra,
        }
    )


def tool_turns(call_id: str, name: str, arguments: str, result: str) -> list[dict[str, Any]]:
    """An assistant turn calling one tool, and the tool's result, as OpenAI-shaped messages."""
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    return [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": result},
    ]


def tool_conversation() -> Request:
    """A conversation that already holds a tool call and its result."""
    return parse_request(
        {
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "weather in Paris?"},
                *tool_turns("call_abc123", "get_weather", '{"city": "Paris"}', '{"temp_c": 21}'),
            ],
            "tools": [WEATHER_TOOL],
        }
    )


async def collect(chunks: AsyncIterable[Chunk]) -> tuple[ProviderResponse, list[Chunk]]:
    """Read a whole stream: the answer it reassembles to, and the chunks as they came."""
    acc = StreamAccumulator()
    seen = []
    async for chunk in chunks:
        acc.add(chunk)
        seen.append(chunk)
    return acc.result(), seen


Factory = Callable[..., Endpoint]
