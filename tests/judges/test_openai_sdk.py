"""The official openai SDK against the real server process: chat (sync and async, streaming
with usage, tools, multi-turn by appending the returned message), parse(), Responses,
legacy Completions, models.retrieve, the whole request schema, and reasoning-model rules."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from tests.providers.test_request_surface import SAMPLES

from .conftest import Stack

MSG: list[Any] = [{"role": "user", "content": "hello there"}]
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.v1, api_key="sk-test", max_retries=0)


@pytest.mark.parametrize("policy", ["chat", "oai", "claude", "gem"])
def test_multi_turn_by_appending_the_returned_message(stack: Stack, policy: str) -> None:
    """resp.choices[0].message goes back into the history as the SDK returned it."""
    history: list[Any] = [{"role": "user", "content": "first"}]
    with client(stack) as c:
        first = c.chat.completions.create(model=policy, messages=history)
        history += [first.choices[0].message, {"role": "user", "content": "second"}]
        second = c.chat.completions.create(model=policy, messages=history)
        history[1] = first.choices[0].message.model_dump()  # the dumped form too
        third = c.chat.completions.create(model=policy, messages=history)
    assert (second.choices[0].message.content or "").endswith("heard: second")
    assert third.choices[0].message.content == second.choices[0].message.content


@pytest.mark.parametrize("policy", ["chat", "oai", "claude", "gem"])
def test_tool_loop_appending_the_returned_message(stack: Stack, policy: str) -> None:
    """A tool call comes back, its message and the result are appended, the model answers."""
    history: list[Any] = [{"role": "user", "content": "Paris"}]
    with client(stack) as c:
        first = c.chat.completions.create(model=policy, messages=history, tools=TOOLS)
        call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
        assert first.choices[0].finish_reason == "tool_calls"
        assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
        history += [
            first.choices[0].message,
            {"role": "tool", "tool_call_id": call.id, "content": "21C"},
        ]
        final = c.chat.completions.create(model=policy, messages=history, tools=TOOLS)
    content = final.choices[0].message.content or ""  # Gemini wraps a result in an object
    assert content.startswith("The tool said: ") and "21C" in content


async def test_async_stream_with_usage(stack: Stack) -> None:
    """Async streaming relays the text and ends with a usage chunk when asked."""
    async with openai.AsyncOpenAI(base_url=stack.v1, api_key="sk", max_retries=0) as c:
        stream = await c.chat.completions.create(
            model="oai", messages=MSG, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "gpt-4o-mini heard: hello there"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


class Person(BaseModel):
    name: str
    age: int
    tags: list[str]


@pytest.mark.parametrize("policy", ["chat", "oai", "claude", "gem"])
def test_parse_with_a_pydantic_model(stack: Stack, policy: str) -> None:
    """chat.completions.parse returns a validated object from every provider."""
    with client(stack) as c:
        done = c.chat.completions.parse(model=policy, messages=MSG, response_format=Person)
    person = done.choices[0].message.parsed
    assert isinstance(person, Person) and "hello there" in person.name


def test_every_schema_field_is_accepted_over_http(stack: Stack) -> None:
    """The whole chat request schema in one body: 200, and what was dropped is named."""
    body = {k: v for k, v in SAMPLES.items() if k not in ("functions", "function_call", "audio")}
    body |= {"model": "oai", "stream": False, "modalities": ["text"]}
    with client(stack) as c:
        raw = c.chat.completions.with_raw_response.create(**body)
        assert "n (" not in raw.headers.get("x-engine-dropped", "")
        done = raw.parse()
        assert len(done.choices) == SAMPLES["n"]
        assert done.choices[0].logprobs is not None  # a tool call: no text tokens
        with pytest.raises(openai.BadRequestError, match="temprature"):
            c.chat.completions.create(model="oai", messages=MSG, extra_body={"temprature": 1})


def test_reasoning_model_gets_what_it_accepts(stack: Stack) -> None:
    """gpt-5-nano with max_tokens and temperature: sent as its rules say, so no 400."""
    with client(stack) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="reasoner", messages=MSG, max_tokens=40, temperature=0.7, reasoning_effort="low"
        )
    assert raw.parse().choices[0].message.content == "gpt-5-nano heard: hello there"
    assert (
        raw.headers["x-engine-dropped"] == "temperature (the model takes only its default sampling)"
    )


def test_legacy_functions_get_function_call(stack: Stack) -> None:
    """`functions` callers read message.function_call and finish_reason function_call."""
    functions = [
        {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        }
    ]
    with client(stack) as c:
        done = c.chat.completions.create(model="chat", messages=MSG, functions=functions)  # type: ignore[call-overload]
    assert done.choices[0].finish_reason == "function_call"
    assert done.choices[0].message.function_call.name == "lookup"  # type: ignore[union-attr]


@pytest.mark.parametrize("policy", ["chat", "oai", "claude"])
def test_streamed_legacy_functions_get_function_call_deltas(stack: Stack, policy: str) -> None:
    """A streamed `functions` request gets delta.function_call (name, then the arguments in
    pieces) and finish_reason function_call, never tool_calls, as OpenAI streams it."""
    functions = [{"name": "get_weather", "parameters": TOOLS[0]["function"]["parameters"]}]
    with client(stack) as c:
        stream = c.chat.completions.create(  # type: ignore[call-overload]
            model=policy, messages=[{"role": "user", "content": "Paris"}], functions=functions,
            stream=True,
        )  # fmt: skip
        chunks = [ch for ch in stream if ch.choices]
    deltas = [ch.choices[0].delta for ch in chunks]
    assert all(d.tool_calls is None for d in deltas)
    calls = [d.function_call for d in deltas if d.function_call is not None]
    assert calls and calls[0].name == "get_weather"
    assert json.loads("".join(f.arguments or "" for f in calls)) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "function_call"


@pytest.mark.parametrize("policy", ["chat", "claude"])
def test_responses_create_and_function_tools(stack: Stack, policy: str) -> None:
    """responses.create answers text; with a function tool, a function_call item, and the
    call's output sent back yields the final text."""
    tool: Any = {
        "type": "function",
        "name": "get_weather",
        "parameters": TOOLS[0]["function"]["parameters"],
    }
    with client(stack) as c:
        plain = c.responses.create(model=policy, input="hi", instructions="be brief")
        assert plain.output_text.endswith("heard: hi")
        called = c.responses.create(model=policy, input="Rome", tools=[tool])
        call = next(i for i in called.output if i.type == "function_call")
        assert json.loads(call.arguments) == {"city": "Rome"}
        follow = c.responses.create(
            model=policy,
            input=[
                {"role": "user", "content": "Rome"},
                call.model_dump(),
                {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
            ],
            tools=[tool],
        )
    assert follow.output_text == "The tool said: sunny"
    assert follow.usage is not None and follow.usage.total_tokens > 0


def test_responses_stream_typed_events(stack: Stack) -> None:
    """responses.stream yields typed deltas and a completed response."""
    with client(stack) as c, c.responses.stream(model="gem", input="stream me") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert final.output_text == "gemini-test heard: stream me"


def test_previous_response_id_is_refused_clearly(stack: Stack) -> None:
    """No stored state: a 400 that says to send the history."""
    with client(stack) as c, pytest.raises(openai.BadRequestError, match="send the whole history"):
        c.responses.create(model="chat", input="x", previous_response_id="resp_1")


def test_legacy_completions(stack: Stack) -> None:
    """completions.create answers text_completion, also streamed."""
    with client(stack) as c:
        done = c.completions.create(model="oai", prompt="Say hi", max_tokens=30)
        streamed = "".join(
            ch.choices[0].text
            for ch in c.completions.create(model="chat", prompt="Say hi", stream=True)
            if ch.choices
        )
    assert done.object == "text_completion" and done.choices[0].text == "gpt-4o-mini heard: Say hi"
    assert streamed == "m heard: Say hi"


def test_models_retrieve(stack: Stack) -> None:
    """models.retrieve finds policies and provider/name ids; an unknown id is a 404."""
    with client(stack) as c:
        assert c.models.retrieve("oai/gpt-4o-mini").owned_by == "oai"
        assert c.models.retrieve("chat").id == "chat"
        with pytest.raises(openai.NotFoundError):
            c.models.retrieve("nope/nothing")


def test_n_choices_and_logprobs_through_the_sdk(stack: Stack) -> None:
    """n=3 with logprobs on OpenAI: three choices, each with its token logprobs, usage for
    all three; on Anthropic (no `n`): one choice and the header naming why."""
    with client(stack) as c:
        one = c.chat.completions.create(model="oai", messages=MSG)
        done = c.chat.completions.create(
            model="oai", messages=MSG, n=3, logprobs=True, top_logprobs=2
        )
        claude = c.chat.completions.with_raw_response.create(model="claude", messages=MSG, n=3)
    assert [ch.index for ch in done.choices] == [0, 1, 2]
    for ch in done.choices:
        tokens = ch.logprobs.content  # type: ignore[union-attr]
        assert "".join(t.token for t in tokens or []) == ch.message.content
        assert all(len(t.top_logprobs) == 2 for t in tokens or [])
    assert done.usage and one.usage
    assert done.usage.completion_tokens == 3 * one.usage.completion_tokens
    assert len(claude.parse().choices) == 1
    assert "n (anthropic answers one choice)" in claude.headers["x-engine-dropped"]


async def test_streamed_logprobs_and_choices_through_the_sdk(stack: Stack) -> None:
    """A stream with n=2 and logprobs: each chunk's logprobs cover its text, per index."""
    async with openai.AsyncOpenAI(base_url=stack.v1, api_key="sk", max_retries=0) as c:
        stream = await c.chat.completions.create(
            model="oai", messages=MSG, stream=True, n=2, logprobs=True, top_logprobs=1
        )
        chunks = [ch async for ch in stream if ch.choices]
    text: dict[int, str] = {}
    for ch in chunks:
        choice = ch.choices[0]
        if choice.delta.content:
            assert choice.logprobs is not None and choice.logprobs.content
            assert "".join(t.token for t in choice.logprobs.content) == choice.delta.content
            text[choice.index] = text.get(choice.index, "") + choice.delta.content
    assert text == {0: "gpt-4o-mini heard: hello there", 1: "gpt-4o-mini heard: hello there"}
