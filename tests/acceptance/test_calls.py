"""Seed features: completion, chat, streaming, tools, conversation, batch, mock mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import engine
from engine import Conversation, Engine
from engine.testing.clock import FakeClock
from engine.testing.fakes import FakeAnthropic, FakeAzure, FakeGemini, FakeOllama, FakeOpenAI, Fault
from tests.acceptance.conftest import MOCK_MODELS, ask, shipped_config, write_config

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get current weather",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}


def wire_config(tmp_path: Path, oa_url: str, an_url: str) -> Path:
    """OpenAI fake first, Anthropic fake second, both with tools and streaming."""
    models = f"""
providers:
  openai:
    protocol: openai
    base_url: {oa_url}
    api_key: sk-acceptance-openai-0001
  anthropic:
    protocol: anthropic
    base_url: {an_url}
    api_key: sk-ant-acceptance-0002
models:
  openai/gpt-4o-mini:
    capabilities: [chat, tools, streaming, code]
    context_window: 128000
    max_output: 16384
    input_price: 0.15
    output_price: 0.6
  anthropic/claude-haiku:
    capabilities: [chat, tools, streaming, code]
    context_window: 200000
    max_output: 8192
    input_price: 0.8
    output_price: 4.0
"""
    route = "strategy: ordered\ncandidates: [openai/gpt-4o-mini, anthropic/claude-haiku]\n"
    return write_config(tmp_path / "cfg", models, {"default": route})


async def test_completion_from_a_prompt(tmp_path: Path) -> None:
    """Simple completion: a prompt in, text, tokens, cost, latency, provider and model out."""
    async with FakeOpenAI() as oa, FakeAnthropic() as an:
        eng = Engine.from_config(wire_config(tmp_path, oa.url, an.url), clock=FakeClock())
        resp = await eng.arun(
            {"prompt": "What is the capital of France?", "max_tokens": 100, "temperature": 0.7}
        )
        await eng.aclose()
        body = oa.requests[-1].body
    assert body["messages"] == [{"role": "user", "content": "What is the capital of France?"}]
    assert body["temperature"] == 0.7 and body["max_tokens"] == 100
    assert "capital of France" in (resp.content or "")
    assert (resp.provider, resp.model) == ("openai", "openai/gpt-4o-mini")
    assert resp.usage.input_tokens > 0 and resp.usage.output_tokens > 0
    assert resp.cost_usd is not None and resp.cost_usd > 0
    assert (
        resp.latency_ms == 0.0 and resp.attempts[0].latency_ms == 0.0
    )  # FakeClock: no time passes


def test_sync_chat_with_a_system_prompt(tmp_path: Path) -> None:
    """Chat: system + user messages reach the upstream as sent, through the sync API."""
    with FakeOpenAI.in_thread() as oa, FakeAnthropic.in_thread() as an:
        eng = Engine.from_config(wire_config(tmp_path, oa.url, an.url))
        messages = [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What's the weather like?"},
        ]
        resp = eng.run({"messages": messages, "temperature": 0.5, "max_tokens": 100})
        eng.close()
        sent = oa.requests[-1].body["messages"]
    assert sent == messages
    assert "weather" in (resp.content or "")
    assert resp.to_openai()["choices"][0]["message"]["content"] == resp.content


async def test_streaming_yields_text_chunks_then_usage(tmp_path: Path) -> None:
    """Streaming: chunks arrive one by one and join into the answer; the last has cost."""
    async with FakeOpenAI() as oa, FakeAnthropic() as an:
        eng = Engine.from_config(wire_config(tmp_path, oa.url, an.url), clock=FakeClock())
        events = [e async for e in eng.astream(ask("Write a short story about a robot"))]
        await eng.aclose()
    text = "".join(e.content for e in events)
    assert len([e for e in events if e.content]) > 1
    assert "robot" in text
    assert events[-1].chunk.usage is not None and events[-1].cost_usd is not None
    assert oa.requests[-1].body["stream"] is True


def test_sync_streaming_through_the_module_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """engine.stream (sync) over the config named by $ENGINE_CONFIG, mock provider."""
    cfg = write_config(
        tmp_path / "cfg", MOCK_MODELS, {"default": "strategy: ordered\ncandidates: [mock/fast]\n"}
    )
    monkeypatch.setenv("ENGINE_CONFIG", str(cfg))
    monkeypatch.setattr("engine.assemble._default", None)
    text = "".join(e.content for e in engine.stream(ask("stream me a long answer please")))
    engine.default_engine().close()
    assert "stream me a long answer please" in text


@pytest.mark.parametrize("first_fails", [False, True])
async def test_tool_calling_on_openai_and_anthropic(tmp_path: Path, first_fails: bool) -> None:
    """Function calling: the tool call comes back normalised from OpenAI or (failover) Anthropic."""
    async with FakeOpenAI() as oa, FakeAnthropic() as an:
        if first_fails:
            oa.script([401])
        eng = Engine.from_config(wire_config(tmp_path, oa.url, an.url), clock=FakeClock())
        resp = await eng.arun(ask("What's the weather in Paris?", tools=[WEATHER]))
        await eng.aclose()
    assert resp.provider == ("anthropic" if first_fails else "openai")
    assert resp.finish_reason == "tool_calls"
    (call,) = resp.tool_calls
    assert call.name == "get_weather"
    assert isinstance(json.loads(call.arguments), dict)
    assert (
        resp.to_openai()["choices"][0]["message"]["tool_calls"][0]["function"]["name"]
        == "get_weather"
    )


async def test_streamed_tool_call_is_reassembled(tmp_path: Path) -> None:
    """Function calling while streaming: argument fragments reassemble into one valid call."""
    async with FakeOpenAI() as oa, FakeAnthropic() as an:
        oa.script([401])  # answered by Anthropic's named-event stream
        eng = Engine.from_config(wire_config(tmp_path, oa.url, an.url), clock=FakeClock())
        seen: list[Any] = []

        async def keep(_req: Any, resp: Any) -> None:
            seen.append(resp)

        eng.add_hook("after_response", keep)
        events = [e async for e in eng.astream(ask("weather in NYC?", tools=[WEATHER]))]
        await eng.aclose()
    assert any(e.chunk.tool_calls for e in events)
    (call,) = seen[0].tool_calls
    assert call.name == "get_weather" and isinstance(json.loads(call.arguments), dict)


async def test_conversation_keeps_history_across_turns(tmp_path: Path) -> None:
    """Conversation with history: the second turn sends the first turn and its answer."""
    async with FakeOpenAI() as oa, FakeAnthropic() as an:
        eng = Engine.from_config(wire_config(tmp_path, oa.url, an.url), clock=FakeClock())
        chat = Conversation(eng, policy="default", system="You are a helpful coding assistant")
        first = await chat.asend("My name is Alice")
        await chat.asend("What's my name?")
        await eng.aclose()
        sent = oa.requests[-1].body["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[1]["content"] == "My name is Alice"
    assert sent[2]["content"] == first.content
    assert [m["role"] for m in chat.messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]


async def test_parallel_batch_keeps_order_and_failures(tmp_path: Path) -> None:
    """Parallel processing: 50 prompts at bounded concurrency, answers in input order."""
    cfg = write_config(
        tmp_path / "cfg", MOCK_MODELS, {"default": "strategy: ordered\ncandidates: [mock/fast]\n"}
    )
    eng = Engine.from_config(cfg, clock=FakeClock())
    prompts: list[Any] = [ask(f"Question {i}") for i in range(50)]
    prompts[7] = ask("Question 7", model="nope/missing")
    ticks: list[tuple[int, int]] = []
    results = await eng.abatch(prompts, concurrency=8, progress=lambda d, t: ticks.append((d, t)))
    await eng.aclose()
    assert len(results) == 50 and ticks[-1] == (50, 50)
    assert isinstance(results[7], engine.UnknownModelError)
    for i, r in enumerate(results):
        if i != 7:
            assert isinstance(r, engine.Response) and f"Question {i}" in (r.content or "")


async def test_mock_mode_needs_no_network_or_key(tmp_path: Path) -> None:
    """Mock mode: the built-in mock provider answers deterministically, offline, for free."""
    cfg = write_config(
        tmp_path / "cfg", MOCK_MODELS, {"default": "strategy: ordered\ncandidates: [mock/fast]\n"}
    )
    first = Engine.from_config(cfg, clock=FakeClock())
    second = Engine.from_config(cfg, clock=FakeClock())
    a = await first.arun(ask("Test prompt"))
    b = await second.arun(ask("Test prompt"))
    await first.aclose()
    await second.aclose()
    assert a.content == b.content and "Test prompt" in (a.content or "")
    assert a.provider == "mock" and a.usage.total_tokens > 0


async def test_mock_mode_failure_rate_is_configurable(tmp_path: Path) -> None:
    """Mock mode for tests: fail_rate 1 makes every call fail with a typed error."""
    models = MOCK_MODELS.replace("fail_rate: 0", "fail_rate: 1")
    cfg = write_config(
        tmp_path / "cfg",
        models,
        {"default": "strategy: ordered\ncandidates: [mock/fast]\nretries: {max_retries: 0}\n"},
    )
    eng = Engine.from_config(cfg, clock=FakeClock())
    with pytest.raises(engine.AllCandidatesFailedError) as info:
        await eng.arun(ask())
    await eng.aclose()
    assert [a.outcome for a in info.value.attempts] == ["unavailable"]


FAKES = {
    "openai": FakeOpenAI,
    "azure": FakeAzure,
    "anthropic": FakeAnthropic,
    "gemini": FakeGemini,
    "groq": FakeOpenAI,
    "deepseek": FakeOpenAI,
    "mistral": FakeOpenAI,
    "together": FakeOpenAI,
    "huggingface": FakeOpenAI,
    "openrouter": FakeOpenAI,
    "ollama": FakeOllama,
}
KEY_VARS = {
    "openai": "OPENAI_API_KEY",
    "azure": "AZURE_OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "groq": "GROQ_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "together": "TOGETHER_API_KEY",
    "huggingface": "HF_TOKEN",
    "openrouter": "OPENROUTER_API_KEY",
}


@pytest.mark.parametrize("provider", sorted(FAKES))
async def test_every_shipped_provider_answers_over_its_protocol(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, provider: str
) -> None:
    """Multi-provider support: each shipped provider, keyed by its usual env var, answers."""
    async with FAKES[provider]() as up:
        if provider in KEY_VARS:
            monkeypatch.setenv(KEY_VARS[provider], f"sk-acc-{provider}-0013")
        if provider == "azure":
            monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", up.url)
        else:
            monkeypatch.setenv(f"{provider.upper()}_BASE_URL", up.url)
        eng = Engine.from_config(shipped_config(tmp_path / "shipped"), clock=FakeClock())
        model = eng.list_models(provider)[0]
        resp = await eng.arun(ask("hello from the acceptance suite", model=model))
        events = [e async for e in eng.astream(ask("and streamed", model=model))]
        await eng.aclose()
    assert (resp.provider, resp.model) == (provider, model)
    assert "hello from the acceptance suite" in (resp.content or "")
    assert "and streamed" in "".join(e.content for e in events)
    assert len(up.requests) == 2


async def test_tool_result_round_trip_in_a_conversation(tmp_path: Path) -> None:
    """Tools in a conversation: the model calls a tool, the result goes back, it answers."""
    async with FakeOpenAI() as oa, FakeAnthropic() as an:
        oa.default_fault = Fault(status=401)  # every turn is answered by Anthropic
        eng = Engine.from_config(wire_config(tmp_path, oa.url, an.url), clock=FakeClock())
        chat = Conversation(eng, tools=[WEATHER])
        first = await chat.asend("What's the weather in Paris?")
        (call,) = first.tool_calls
        final = await chat.asend('{"temperature_c": 21}', role="tool", tool_call_id=call.id)
        await eng.aclose()
        sent = an.requests[-1].body["messages"]
    assert final.provider == "anthropic" and not final.tool_calls
    assert "21" in (final.content or "")
    blocks = [b for m in sent if isinstance(m["content"], list) for b in m["content"]]
    assert {"tool_use", "tool_result"} <= {b["type"] for b in blocks}


async def test_legacy_functions_parameter_is_function_calling(tmp_path: Path) -> None:
    """Function calling with the older `functions` list: sent as tools, answered as a call."""
    functions = [WEATHER["function"]]
    async with FakeOpenAI() as oa, FakeAnthropic() as an:
        eng = Engine.from_config(wire_config(tmp_path, oa.url, an.url), clock=FakeClock())
        resp = await eng.arun(
            ask("What's the weather in NYC?", functions=functions, function_call="auto")
        )
        with pytest.raises(engine.RequestError, match="either functions"):
            await eng.arun(ask("both", functions=functions, tools=[WEATHER]))
        await eng.aclose()
        body = oa.requests[-1].body
    assert body["tools"] == [WEATHER] and body["tool_choice"] == "auto"
    assert resp.tool_calls[0].name == "get_weather"
