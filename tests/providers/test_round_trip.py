"""Tool calls survive any provider: a call produced by one protocol, answered with a tool
result, continues on every other protocol and comes back in the same normalised shape."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.messages import ProviderResponse, Request, parse_request
from engine.providers import get_adapter
from engine.testing.fakes import FakeUpstream

from .cases import CASES, Case
from .conftest import WEATHER_TOOL, collect, tool_turns


async def _call(case: Case, up: FakeUpstream, request: Request, stream: bool) -> ProviderResponse:
    adapter = get_adapter(case.protocol)
    if not stream:
        return await adapter.complete(request, case.endpoint(up))
    return (await collect(adapter.stream(request, case.endpoint(up))))[0]


def _continue(first: ProviderResponse, result: dict[str, Any]) -> Request:
    """The conversation after the model's tool call, with the tool's result appended."""
    call = first.tool_calls[0]
    return parse_request(
        {
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Quito"},
                *tool_turns(call.id, call.name, call.arguments, json.dumps(result)),
            ],
            "tools": [WEATHER_TOOL],
        }
    )


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("first", CASES, ids=str)
async def test_tool_call_round_trip_across_protocols(first: Case, stream: bool) -> None:
    """A tool call from `first` continues on every protocol; each answers from the result."""
    async with first.fake() as up:
        opened = await _call(
            first,
            up,
            parse_request(
                {"messages": [{"role": "user", "content": "Quito"}], "tools": [WEATHER_TOOL]}
            ),
            stream,
        )
    assert opened.finish_reason == "tool_calls"
    assert [(c.name, json.loads(c.arguments)) for c in opened.tool_calls] == [
        ("get_weather", {"city": "Quito"})
    ]
    follow_up = _continue(opened, {"temp_c": 14, "sky": "clear"})
    for second in CASES:
        async with second.fake() as up:
            answer = await _call(second, up, follow_up, stream)
        assert answer.finish_reason == "stop", second.protocol
        assert answer.tool_calls == ()
        assert (
            answer.content is not None and "14" in answer.content and "clear" in answer.content
        ), second.protocol
