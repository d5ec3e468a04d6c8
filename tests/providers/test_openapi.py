"""Our OpenAI bodies and the fake's answers against the official OpenAPI document; the
validator itself rejects what the spec rejects (so the suite-wide check can fail)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.messages import parse_request
from engine.providers.openai import build_body

from . import openapi
from .conftest import WEATHER_TOOL, endpoint

REQUESTS: list[dict[str, Any]] = [
    {
        "messages": [
            {"role": "developer", "content": "be exact"},
            {"role": "user", "content": "hi"},
        ],
        "max_completion_tokens": 30,
        "n": 1,
        "user": "u-1",
        "seed": 4,
    },
    {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"},
                    },
                ],
            }
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object"}},
        },
    },
    {
        "messages": [{"role": "user", "content": "weather"}],
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "stop": "END",
        "top_p": 0.9,
        "presence_penalty": 0.5,
    },
]


@pytest.mark.parametrize("data", REQUESTS)
@pytest.mark.parametrize("stream", [False, True])
def test_adapter_bodies_validate(data: dict[str, Any], stream: bool) -> None:
    """Bodies built by the OpenAI adapter conform to CreateChatCompletionRequest."""
    body = build_body(parse_request(data), endpoint("http://127.0.0.1:1/v1"), stream)
    assert openapi.problems("CreateChatCompletionRequest", body) == []


def test_validator_rejects_bad_documents() -> None:
    """A wrong type, a missing field and a bad chunk are all reported with their paths."""
    bad_request = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "temperature": "hot",
    }
    assert any(
        "temperature" in p for p in openapi.problems("CreateChatCompletionRequest", bad_request)
    )
    assert openapi.problems(
        "CreateChatCompletionResponse", {"id": "x", "object": "chat.completion"}
    )
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": 5}, "finish_reason": None}],
    }
    assert openapi.problems("CreateChatCompletionStreamResponse", chunk)
