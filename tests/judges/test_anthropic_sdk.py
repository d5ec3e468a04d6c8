"""The official anthropic SDK against /v1/messages of the real server process, routed to
the Anthropic fake and to providers that are not Anthropic (mock, OpenAI, Gemini)."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from engine.messages import parse_request
from engine.providers.anthropic import build_body
from engine.server.anthropic_messages import AnthropicMessages
from tests.providers.conftest import endpoint

from .conftest import Stack

POLICIES = ["chat", "oai", "claude", "gem"]
TOOL: Any = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def client(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key="sk-ant-test", max_retries=0)


@pytest.mark.parametrize("policy", POLICIES)
def test_messages_create(stack: Stack, policy: str) -> None:
    """messages.create with a system prompt returns a message with text and usage."""
    with client(stack) as c:
        message = c.messages.create(
            model=policy,
            max_tokens=200,
            system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            messages=[{"role": "user", "content": "bonjour"}],
        )
    assert message.content[0].type == "text" and message.content[0].text.endswith("heard: bonjour")
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0


@pytest.mark.parametrize("policy", POLICIES)
def test_messages_stream(stack: Stack, policy: str) -> None:
    """messages.stream: text deltas and a final message the SDK assembles."""
    with (
        client(stack) as c,
        c.messages.stream(
            model=policy,
            max_tokens=200,
            messages=[{"role": "user", "content": "stream this please"}],
        ) as stream,
    ):
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.endswith("heard: stream this please")
    assert final.content[0].text == text and final.usage.output_tokens > 0  # type: ignore[union-attr]


@pytest.mark.parametrize("policy", POLICIES)
def test_tool_use_round_trip(stack: Stack, policy: str) -> None:
    """A tool_use block comes back; its tool_result turn yields the final answer."""
    messages: list[Any] = [{"role": "user", "content": "Oslo"}]
    with client(stack) as c:
        first = c.messages.create(model=policy, max_tokens=200, tools=[TOOL], messages=messages)
        use = next(b for b in first.content if b.type == "tool_use")
        assert first.stop_reason == "tool_use" and use.input == {"city": "Oslo"}  # type: ignore[union-attr]
        messages += [
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "cold"}],
            },  # type: ignore[union-attr]
        ]
        final = c.messages.create(model=policy, max_tokens=200, tools=[TOOL], messages=messages)
    text = final.content[0].text  # type: ignore[union-attr]
    assert text.startswith("The tool said: ") and "cold" in text


def test_streamed_tool_use(stack: Stack) -> None:
    """A streamed tool call arrives as input_json_delta events the SDK reassembles."""
    with (
        client(stack) as c,
        c.messages.stream(
            model="oai",
            max_tokens=200,
            tools=[TOOL],
            messages=[{"role": "user", "content": "Lima"}],
        ) as stream,
    ):
        final = stream.get_final_message()
    use = next(b for b in final.content if b.type == "tool_use")
    assert use.input == {"city": "Lima"} and final.stop_reason == "tool_use"  # type: ignore[union-attr]


def test_unknown_field_is_an_anthropic_error(stack: Stack) -> None:
    """A field the Messages API does not have is a 400 in Anthropic's error shape."""
    with client(stack) as c, pytest.raises(anthropic.BadRequestError, match="bogus"):
        c.messages.create(
            model="chat",
            max_tokens=10,
            messages=[{"role": "user", "content": "x"}],
            extra_body={"bogus": 1},
        )


def test_cache_control_reaches_anthropic_and_nothing_else() -> None:
    """cache_control on system and tools is sent to Anthropic and left out for OpenAI."""
    from engine.providers.openai import build_body as openai_body

    chat = AnthropicMessages().to_chat(
        {
            "model": "claude",
            "max_tokens": 50,
            "system": [
                {"type": "text", "text": "Long context.", "cache_control": {"type": "ephemeral"}}
            ],
            "tools": [{**TOOL, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "hi"}],
        }
    )
    req = parse_request(chat)
    body = build_body(req, endpoint("http://x", "anthropic"), False)
    assert body["system"] == [
        {"type": "text", "text": "Long context.", "cache_control": {"type": "ephemeral"}}
    ]
    assert body["tools"][0]["cache_control"] == {"type": "ephemeral"}
    sent = openai_body(req, endpoint("http://x"), False)
    assert "cache_control" not in str(sent)
