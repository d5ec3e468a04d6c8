"""The whole OpenAI chat request schema is accepted; each protocol carries, translates or
reports each field; model rules shape bodies; structured output works on every fake."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.errors import InvalidRequestError, RequestError
from engine.messages import Request, parse_request
from engine.providers import anthropic, gemini, get_adapter, ollama, openai
from engine.providers.mock import MockAdapter
from engine.providers.support import OPTIONAL, dropped
from engine.testing.fakes import FakeOpenAI

from . import openapi
from .cases import CASES, Case
from .conftest import chat, endpoint

USER = [{"role": "user", "content": "hi"}]

#: One schema-valid value for every top-level field of CreateChatCompletionRequest.
SAMPLES: dict[str, Any] = {
    "messages": USER,
    "model": "gpt-4o",
    "audio": {"voice": "alloy", "format": "mp3"},
    "frequency_penalty": 0.5,
    "function_call": "auto",
    "functions": [{"name": "f", "parameters": {"type": "object", "properties": {}}}],
    "logit_bias": {"50256": -100},
    "logprobs": True,
    "max_completion_tokens": 50,
    "max_tokens": 50,
    "metadata": {"team": "a"},
    "modalities": ["text"],
    "moderation": None,
    "n": 2,
    "parallel_tool_calls": False,
    "prediction": {"type": "content", "content": "old text"},
    "presence_penalty": -0.5,
    "prompt_cache_key": "k-1",
    "prompt_cache_options": {},
    "prompt_cache_retention": "24h",
    "reasoning_effort": "low",
    "response_format": {"type": "json_object"},
    "safety_identifier": "user-hash",
    "seed": 7,
    "service_tier": "flex",
    "stop": ["END"],
    "store": False,
    "stream": None,
    "stream_options": {"include_usage": True, "include_obfuscation": False},
    "temperature": 0.2,
    "tool_choice": "auto",
    "tools": [{"type": "function", "function": {"name": "g"}}],
    "top_logprobs": 3,
    "top_p": 0.9,
    "user": "u-1",
    "verbosity": "low",
    "web_search_options": {"search_context_size": "low"},
}


def test_samples_cover_every_field_of_the_official_schema() -> None:
    """The samples name exactly the schema's fields, so a new field fails here."""
    assert set(SAMPLES) == openapi.properties("CreateChatCompletionRequest")


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_schema_field_is_accepted(name: str) -> None:
    """Each field, with a value the official schema accepts, is accepted (not a 400)."""
    body = {"messages": USER, name: SAMPLES[name]}
    if name in ("function_call",):
        body["functions"] = SAMPLES["functions"]
    assert openapi.problems("CreateChatCompletionRequest", {"model": "m", **body}) == []
    parse_request(body)


def test_all_fields_at_once_are_accepted() -> None:
    """Everything but the legacy pair together (the schema allows it; so do we)."""
    body = {k: v for k, v in SAMPLES.items() if k not in ("functions", "function_call")}
    assert openapi.problems("CreateChatCompletionRequest", body) == []
    req = parse_request(body)
    assert req.reasoning_effort == "low" and req.n == 2 and req.logit_bias == {"50256": -100}


def test_fields_outside_the_schema_still_fail() -> None:
    """A misspelt field is a RequestError naming it."""
    with pytest.raises(RequestError, match="temprature"):
        parse_request({"messages": USER, "temprature": 0.2})


def test_assistant_message_echoed_back_as_returned_is_accepted() -> None:
    """The SDK's `message.model_dump()` (refusal, annotations, audio, function_call: null)."""
    echoed = {
        "role": "assistant",
        "content": "hello",
        "refusal": None,
        "annotations": [],
        "audio": None,
        "function_call": None,
        "tool_calls": None,
    }
    req = parse_request({"messages": [*USER, echoed, {"role": "user", "content": "more"}]})
    assert req.messages[1].content == "hello"
    body = openai.build_body(req, endpoint("http://x"), False)
    assert body["messages"][1] == {"role": "assistant", "content": "hello"}


def test_legacy_function_turns_become_a_tool_call_and_its_result() -> None:
    """An assistant `function_call` and a `function` message map to tool_calls / tool."""
    req = parse_request(
        {
            "messages": [
                *USER,
                {
                    "role": "assistant",
                    "content": None,
                    "function_call": {"name": "f", "arguments": "{}"},
                },
                {"role": "function", "name": "f", "content": "42"},
            ],
            "functions": SAMPLES["functions"],
        }
    )
    call = req.messages[1].tool_calls[0]  # type: ignore[index]
    assert call.function.name == "f"
    assert req.messages[2].role == "tool" and req.messages[2].tool_call_id == call.id


def test_audio_and_file_parts_are_accepted_and_translated() -> None:
    """input_audio and file parts: OpenAI as sent, Gemini inline data, Anthropic a document."""
    parts = [
        {"type": "text", "text": "listen"},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
        },
    ]
    req = parse_request({"messages": [{"role": "user", "content": parts}]})
    assert openai.build_body(req, endpoint("http://x"), False)["messages"][0]["content"] == parts
    gem = gemini.build_body(req, endpoint("http://x", "gemini"))["contents"][0]["parts"]
    assert [p.get("inlineData", {}).get("mimeType") for p in gem] == [
        None,
        "audio/wav",
        "application/pdf",
    ]
    blocks = anthropic.build_body(req, endpoint("http://x", "anthropic"), False)["messages"][0][
        "content"
    ]
    assert [b["type"] for b in blocks] == ["text", "document"]


REASONING = {
    "max_tokens_field": "max_completion_tokens",
    "temperature": "false",
    "reasoning": "true",
}


def test_reasoning_model_gets_max_completion_tokens_and_no_sampling() -> None:
    """gpt-5 rules: the cap goes in max_completion_tokens; temperature is left out."""
    req = chat(max_tokens=20, temperature=0.7, reasoning_effort="high", verbosity="low")
    body = openai.build_body(req, endpoint("http://x", model="gpt-5-nano", **REASONING), False)
    assert body["max_completion_tokens"] == 20 and "max_tokens" not in body
    assert "temperature" not in body
    assert body["reasoning_effort"] == "high" and body["verbosity"] == "low"
    plain = openai.build_body(req, endpoint("http://x", model="gpt-4o"), False)
    assert plain["temperature"] == 0.7 and "reasoning_effort" not in plain


async def test_fake_rejects_what_the_real_api_rejects_for_reasoning_models() -> None:
    """Without its rules, a gpt-5 call with max_tokens/temperature is a 400, as upstream."""
    req = chat(max_tokens=20, temperature=0.7)
    async with FakeOpenAI() as up:
        with pytest.raises(InvalidRequestError, match="max_completion_tokens"):
            await get_adapter("openai").complete(req, endpoint(up.url, model="gpt-5-nano"))
        ruled = endpoint(up.url, model="gpt-5-nano", **REASONING)
        resp = await get_adapter("openai").complete(req, ruled)
    assert resp.content and "heard" in resp.content


def test_reasoning_effort_translates_to_thinking_budgets() -> None:
    """Anthropic thinking budget (temperature dropped), Gemini thinkingConfig, Ollama think."""
    req = chat(max_tokens=100, temperature=0.5, reasoning_effort="medium")
    body = anthropic.build_body(req, endpoint("http://x", "anthropic", reasoning="true"), False)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert body["max_tokens"] > 8192 and "temperature" not in body
    assert "thinking" not in anthropic.build_body(req, endpoint("http://x", "anthropic"), False)
    config = gemini.build_body(req, endpoint("http://x", "gemini", reasoning="true"))[
        "generationConfig"
    ]
    assert config["thinkingConfig"] == {"thinkingBudget": 8192}
    assert (
        ollama.build_body(req, endpoint("http://x", "ollama", reasoning="true"), False)["think"]
        is True
    )


def test_dropped_names_each_field_and_why() -> None:
    """What a protocol cannot carry is named with its reason; what it carries is not."""
    req = parse_request(
        {**{k: SAMPLES[k] for k in ("seed", "logit_bias", "stop", "n")}, "messages": USER}
    )
    assert dropped(req, "anthropic", {}) == [
        "seed (anthropic has no equivalent)",
        "logit_bias (anthropic has no equivalent)",
        "n (anthropic answers one choice)",
    ]
    assert dropped(req, "openai", {}) == []
    assert dropped(chat(temperature=0.3), "openai", REASONING) == [
        "temperature (the model takes only its default sampling)"
    ]
    assert dropped(chat(), "gemini", {}) == []


def test_dropped_sees_fields_set_after_parsing() -> None:
    """`dropped` looks only at the fields a request was given: every field it names
    defaults to None, and a field set later (a template's `model_copy`) still counts."""
    defaults = {name: Request.model_fields[name] for name in OPTIONAL}
    assert all(f.default is None and f.default_factory is None for f in defaults.values())
    given = chat().model_copy(update={"seed": 7})
    assert dropped(given, "anthropic", {}) == ["seed (anthropic has no equivalent)"]
    # The OpenAI body reads its pass-through fields the same way (engine.providers.openai).
    later = chat().model_copy(update={"temperature": 0.5, "user": "u1"})
    body = openai.build_body(later, endpoint("http://x"), False)
    assert (body["temperature"], body["user"]) == (0.5, "u1")


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 3},
        "tags": {"type": "array", "items": {"type": "string"}},
        "kind": {"enum": ["friend", "foe"]},
    },
    "required": ["name", "age", "tags", "kind"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("case", CASES, ids=str)
async def test_structured_output_conforms_on_every_protocol(case: Case, stream: bool) -> None:
    """json_schema is honoured end to end: the answer is a conforming object, finish stop."""
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": PERSON, "strict": True},
    }
    req = chat("Ada", response_format=fmt)
    async with case.fake() as up:
        adapter = get_adapter(case.protocol)
        if stream:
            text = "".join([c.content async for c in adapter.stream(req, case.endpoint(up))])
        else:
            text = (await adapter.complete(req, case.endpoint(up))).content or ""
    value = json.loads(text)
    assert value["age"] == 3 and value["kind"] == "friend" and "Ada" in value["name"]


async def test_mock_answers_json_mode_with_an_object() -> None:
    """json_object on the mock: a JSON object quoting the prompt."""
    resp = await MockAdapter().complete(
        chat("hey", response_format={"type": "json_object"}), endpoint("mock://", "mock", "m")
    )
    assert json.loads(resp.content or "") == {"answer": "m heard: hey"}
