"""Parity: for the same logical call our adapter sends what the official SDK sends.

Both clients hit the same fake, which records the wire request; the bodies are compared
field by field and every difference is named. The only differences allowed are listed in
`ACCEPTED` with the reason each one is harmless.
"""

from __future__ import annotations

from typing import Any

import anthropic
import ollama
import openai
import pytest
from google import genai
from google.genai import types as gtypes

from engine.messages import parse_request
from engine.providers import get_adapter
from engine.testing.fakes import (
    FakeAnthropic,
    FakeAzure,
    FakeGemini,
    FakeOllama,
    FakeOpenAI,
    FakeUpstream,
    RecordedRequest,
)

from .conftest import collect, endpoint, tool_turns

pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession")

KEY = "parity-key-123"
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
ARGS = {"city": "Paris"}
RESULT = {"temp_c": 21}
# The logical call's one tool, as each SDK that does not take OpenAI's shape spells it.
ANTHROPIC_TOOLS: list[dict[str, Any]] = [
    {"name": "get_weather", "description": "Weather", "input_schema": SCHEMA}
]
GEMINI_TOOLS = [
    gtypes.Tool(
        function_declarations=[
            gtypes.FunctionDeclaration(
                name="get_weather", description="Weather", parameters_json_schema=SCHEMA
            )
        ]
    )
]


def gemini_client(up: FakeUpstream) -> genai.Client:
    """A google-genai client pointed at the fake."""
    return genai.Client(api_key=KEY, http_options=gtypes.HttpOptions(base_url=up.url))


# One logical call, written the engine's way (OpenAI-shaped).
LOGICAL: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "weather in Paris?"},
        *tool_turns("call_1", "get_weather", '{"city":"Paris"}', '{"temp_c":21}'),
    ],
    "temperature": 0.2,
    "max_tokens": 50,
    "stop": ["END"],
    "tools": [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": "Weather", "parameters": SCHEMA},
        }
    ],
    "tool_choice": "auto",
}


def diff(ours: Any, theirs: Any, path: str = "$") -> list[str]:
    """Every path where the two JSON values differ, with both values."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out: list[str] = []
        for key in sorted(set(ours) | set(theirs)):
            if key not in ours:
                out.append(f"{path}.{key}: missing in ours (sdk: {theirs[key]!r})")
            elif key not in theirs:
                out.append(f"{path}.{key}: extra in ours ({ours[key]!r})")
            else:
                out += diff(ours[key], theirs[key], f"{path}.{key}")
        return out
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        return [
            d
            for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
            for d in diff(a, b, f"{path}[{i}]")
        ]
    return [] if ours == theirs else [f"{path}: ours {ours!r} != sdk {theirs!r}"]


async def ours(
    up: FakeUpstream, protocol: str, model: str, stream: bool, **options: str
) -> RecordedRequest:
    """Send the logical call through our adapter and return what the fake received."""
    request = parse_request({**LOGICAL, "stream": stream})
    adapter = get_adapter(protocol)
    ep = endpoint(up.url, protocol, model, KEY, **options)
    if stream:
        await collect(adapter.stream(request, ep))
    else:
        await adapter.complete(request, ep)
    return up.last


def headers_match(
    ours_req: RecordedRequest, sdk_req: RecordedRequest, names: list[str]
) -> list[str]:
    """Header names whose values differ between the two requests."""
    return [n for n in names if ours_req.headers.get(n) != sdk_req.headers.get(n)]


async def openai_sdk_call(client: openai.AsyncOpenAI, model: str, stream: bool) -> None:
    """Send the logical call through an openai SDK client (AzureOpenAI too), read it all."""
    extra: dict[str, Any] = (
        {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
    )
    result = await client.chat.completions.create(
        model=model,
        messages=LOGICAL["messages"],
        temperature=0.2,
        max_tokens=50,
        stop=["END"],
        tools=LOGICAL["tools"],
        tool_choice="auto",
        **extra,
    )
    if stream:
        async for _ in result:  # type: ignore[union-attr]
            pass
    await client.close()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_openai_parity(stream: bool) -> None:
    """Our OpenAI body equals the openai SDK's for the same call, streaming included."""
    async with FakeOpenAI() as up:
        client = openai.AsyncOpenAI(base_url=up.url, api_key=KEY, max_retries=0)
        await openai_sdk_call(client, "gpt-p", stream)
        sdk = up.last
        mine = await ours(up, "openai", "gpt-p", stream)
    assert diff(mine.body, sdk.body) == []
    assert mine.path == sdk.path
    assert headers_match(mine, sdk, ["authorization", "content-type"]) == []


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_azure_parity(stream: bool) -> None:
    """Our Azure request (URL, api-version, api-key, body) equals AzureOpenAI's."""
    async with FakeAzure() as up:
        client = openai.AsyncAzureOpenAI(
            azure_endpoint=up.url, api_key=KEY, api_version="2024-10-21", max_retries=0
        )
        await openai_sdk_call(client, "dep-p", stream)
        sdk = up.last
        mine = await ours(up, "azure", "dep-p", stream, api_version="2024-10-21")
    assert diff(mine.body, sdk.body) == []
    assert (mine.path, dict(mine.query)) == (sdk.path, dict(sdk.query))
    assert headers_match(mine, sdk, ["api-key", "content-type"]) == []


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_anthropic_parity(stream: bool) -> None:
    """Our Messages body (top-level system, tool_use/tool_result blocks...) equals the SDK's."""
    async with FakeAnthropic() as up:
        client = anthropic.AsyncAnthropic(base_url=up.url, api_key=KEY, max_retries=0)
        kwargs: dict[str, Any] = {
            "model": "claude-p",
            "max_tokens": 50,
            "system": "You are terse.",
            "messages": [
                {"role": "user", "content": "weather in Paris?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": ARGS}
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "call_1", "content": '{"temp_c":21}'}
                    ],
                },
            ],
            # anthropic 2.x no longer exposes `temperature` as an argument; the API field
            # is unchanged, so the SDK is given it the SDK's own way for extra fields.
            "extra_body": {"temperature": 0.2},
            "stop_sequences": ["END"],
            "tools": ANTHROPIC_TOOLS,
            "tool_choice": {"type": "auto"},
        }
        if stream:
            async with client.messages.stream(**kwargs) as s:
                await s.get_final_message()
        else:
            await client.messages.create(**kwargs)
        await client.close()
        sdk = up.last
        mine = await ours(up, "anthropic", "claude-p", stream)
    assert diff(mine.body, sdk.body) == []
    assert mine.path == sdk.path
    assert headers_match(mine, sdk, ["content-type"]) == []
    # Named differences: anthropic 2.12 sends the key as `Authorization: Bearer` and pins
    # `anthropic-version: 2026-10-21`; we send the documented `x-api-key` header and the
    # long-stable `2023-06-01` (configurable: options `auth: bearer`, `anthropic_version`).
    assert mine.headers["x-api-key"] == KEY
    assert sdk.headers.get("x-api-key", sdk.headers["authorization"].removeprefix("Bearer ")) == KEY
    assert mine.headers["anthropic-version"] == "2023-06-01" and sdk.headers["anthropic-version"]


async def test_anthropic_options_match_the_sdk_headers_exactly() -> None:
    """With `auth: bearer` and the SDK's version pinned, our headers equal the SDK's."""
    async with FakeAnthropic() as up:
        client = anthropic.AsyncAnthropic(base_url=up.url, api_key=KEY, max_retries=0)
        await client.messages.create(
            model="c", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
        await client.close()
        sdk = up.last
        version = sdk.headers["anthropic-version"]
        await get_adapter("anthropic").complete(
            parse_request({"messages": [{"role": "user", "content": "x"}], "max_tokens": 5}),
            endpoint(up.url, "anthropic", "c", KEY, auth="bearer", anthropic_version=version),
        )
        mine = up.last
    assert diff(mine.body, sdk.body) == []
    assert (
        headers_match(
            mine, sdk, ["authorization", "x-api-key", "anthropic-version", "content-type"]
        )
        == []
    )


def _camel(value: Any, verbatim: bool = False) -> Any:
    """Proto-JSON field names in camelCase (the API accepts both spellings)."""
    if isinstance(value, list):
        return [_camel(v, verbatim) for v in value]
    if not isinstance(value, dict) or verbatim:
        return value
    out = {}
    for key, item in value.items():
        head, *rest = key.split("_")
        name = head + "".join(r.title() for r in rest)
        out[name] = _camel(item, verbatim=name in ("parametersJsonSchema", "args", "response"))
    return out


# Gemini differences and why they are harmless.
ACCEPTED_GEMINI = [
    # The SDK tags the system instruction with role "user"; the API ignores a role there.
    "$.systemInstruction.role: missing in ours (sdk: 'user')",
]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_gemini_parity(stream: bool) -> None:
    """Our generateContent body equals google-genai's, up to proto-JSON spelling; named rest."""
    async with FakeGemini() as up:
        client = gemini_client(up)
        contents = [
            gtypes.Content(role="user", parts=[gtypes.Part(text="weather in Paris?")]),
            gtypes.Content(
                role="model",
                parts=[
                    gtypes.Part(function_call=gtypes.FunctionCall(name="get_weather", args=ARGS))
                ],
            ),
            gtypes.Content(
                role="user",
                parts=[
                    gtypes.Part(
                        function_response=gtypes.FunctionResponse(
                            name="get_weather", response=RESULT
                        )
                    )
                ],
            ),
        ]
        config = gtypes.GenerateContentConfig(
            system_instruction="You are terse.",
            temperature=0.2,
            max_output_tokens=50,
            stop_sequences=["END"],
            tools=GEMINI_TOOLS,
            tool_config=gtypes.ToolConfig(
                function_calling_config=gtypes.FunctionCallingConfig(mode="AUTO")
            ),
            automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True),
        )
        if stream:
            async for _ in await client.aio.models.generate_content_stream(
                model="gemini-p",
                contents=contents,
                config=config,  # type: ignore[arg-type]
            ):
                pass
        else:
            await client.aio.models.generate_content(
                model="gemini-p",
                contents=contents,
                config=config,  # type: ignore[arg-type]
            )
        sdk = up.last
        mine = await ours(up, "gemini", "gemini-p", stream, api_version=sdk.path.split("/")[1])
    assert diff(_camel(mine.body), _camel(sdk.body)) == ACCEPTED_GEMINI
    assert (mine.path, mine.query) == (sdk.path, sdk.query)
    assert headers_match(mine, sdk, ["x-goog-api-key", "content-type"]) == []


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_ollama_parity(stream: bool) -> None:
    """Our /api/chat body (options, tool calls as objects, tool_name) equals the ollama SDK's."""
    async with FakeOllama() as up:
        client = ollama.AsyncClient(host=up.url)
        messages = [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "weather in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "get_weather", "arguments": ARGS}}],
            },
            {"role": "tool", "content": '{"temp_c":21}', "tool_name": "get_weather"},
        ]
        tools = [
            {
                "type": "function",
                "function": {"name": "get_weather", "description": "Weather", "parameters": SCHEMA},
            }
        ]
        options = {"temperature": 0.2, "num_predict": 50, "stop": ["END"]}
        result = await client.chat(
            model="llama-p", messages=messages, tools=tools, options=options, stream=stream
        )
        if stream:
            async for _ in result:  # type: ignore[union-attr]
                pass
        sdk = up.last
        mine = await ours(up, "ollama", "llama-p", stream)
    assert diff(mine.body, sdk.body) == []
    assert mine.path == sdk.path


CHOICES = {
    "required": ({"type": "any"}, "ANY"),
    "none": ({"type": "none"}, "NONE"),
    "named": ({"type": "tool", "name": "get_weather"}, "ANY"),
}


def _choice(name: str) -> Any:
    return {"type": "function", "function": {"name": "get_weather"}} if name == "named" else name


@pytest.mark.parametrize("name", CHOICES)
async def test_tool_choice_parity(name: str) -> None:
    """tool_choice required/none/named translates as the Anthropic and Gemini SDKs send it."""
    request = parse_request(
        {
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 20,
            "tools": LOGICAL["tools"],
            "tool_choice": _choice(name),
        }
    )
    anthropic_choice, gemini_mode = CHOICES[name]
    async with FakeAnthropic() as up:
        client = anthropic.AsyncAnthropic(base_url=up.url, api_key=KEY, max_retries=0)
        await client.messages.create(
            model="c",
            max_tokens=20,
            messages=[{"role": "user", "content": "x"}],
            tools=ANTHROPIC_TOOLS,  # type: ignore[arg-type]
            tool_choice=anthropic_choice,  # type: ignore[arg-type]
        )
        await client.close()
        sdk = up.last
        await get_adapter("anthropic").complete(request, endpoint(up.url, "anthropic", "c", KEY))
        assert diff(up.last.body, sdk.body) == []
    async with FakeGemini() as up:
        client_g = gemini_client(up)
        calling = gtypes.FunctionCallingConfig(
            mode=gemini_mode,  # type: ignore[arg-type]
            allowed_function_names=["get_weather"] if name == "named" else None,
        )
        config = gtypes.GenerateContentConfig(
            max_output_tokens=20,
            tools=GEMINI_TOOLS,
            tool_config=gtypes.ToolConfig(function_calling_config=calling),
            automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True),
        )
        await client_g.aio.models.generate_content(model="g", contents="x", config=config)
        sdk = up.last
        await get_adapter("gemini").complete(request, endpoint(up.url, "gemini", "g", KEY))
        assert diff(_camel(up.last.body), _camel(sdk.body)) == []
