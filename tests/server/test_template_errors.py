"""A policy template that cannot render with the caller's variables is a TemplateRenderError
(a RequestError, HTTP 400) naming the policy, the template and why, never a TypeError
traceback or a 500 (issue 14). Through `Engine.arun`, `Engine.astream` and the server."""

from __future__ import annotations

from typing import Any

import pytest

from engine import Engine, RequestError, TemplateRenderError
from tests.server.conftest import serving

MODELS = {
    "providers": {"mock": {"protocol": "mock", "options": {"latency_ms": 0}}},
    "models": {"mock/fast": {"capabilities": ["chat", "streaming"], "context_window": 16000}},
}

#: Each template renders for right-typed variables and fails for the ones given.
CASES = [
    ("{{ count + 1 }} {{ input }}", {"count": "x"}, "TypeError"),  # str + int
    ("{{ items | join(', ') }}", {"items": 5}, "TypeError"),  # not iterable
    ("{{ '%d' % count }}", {"count": "x"}, "TypeError"),  # %d of a string
    ("{{ (100 / count) | round }}", {"count": 0}, "ZeroDivisionError"),
    ("{{ input.split(sep) | join('-') }}", {"sep": ""}, "ValueError"),  # empty separator
]


def engine_with(user: str) -> Engine:
    routes = {
        "t": {
            "strategy": "ordered",
            "candidates": ["mock/fast"],
            "template": {
                "user": user,
                "variables": ["count", "items", "sep"],
                "defaults": {"sep": ","},
            },
        }
    }
    return Engine.from_data(MODELS, routes)


def ask(variables: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "hi"}], "variables": variables}


@pytest.mark.parametrize(("user", "variables", "kind"), CASES)
async def test_a_template_failing_on_the_callers_variables_is_a_typed_400(
    user: str, variables: dict[str, Any], kind: str
) -> None:
    """arun and astream raise TemplateRenderError (a RequestError) naming policy, template
    and the reason; nothing was sent upstream (no attempt)."""
    eng = engine_with(user)
    with pytest.raises(TemplateRenderError) as info:
        await eng.arun(ask(variables), policy="t")
    assert isinstance(info.value, RequestError) and info.value.status == 400
    assert str(info.value).startswith(f"policy `t`: template user: {kind}")
    with pytest.raises(TemplateRenderError):
        async for _ in eng.astream(ask(variables), policy="t"):
            pass
    await eng.aclose()


async def test_the_same_template_renders_with_right_variables() -> None:
    """The templates above are fine in themselves: right-typed variables are served."""
    eng = engine_with("{{ count + 1 }} {{ items | join(', ') }} {{ '%d' % count }}")
    resp = await eng.arun(ask({"count": 2, "items": ["a", "b"]}), policy="t")
    assert resp.content
    await eng.aclose()


@pytest.mark.parametrize("stream", [False, True])
async def test_the_server_answers_400_naming_the_template(stream: bool) -> None:
    """Over HTTP the same failure is a 400 invalid_request_error, not a 500."""
    eng = engine_with("{{ count + 1 }} {{ input }}")
    async with serving(eng) as running, running.http() as http:
        body = {"model": "t", "stream": stream, **ask({"count": "x"})}
        resp = await http.post("/v1/chat/completions", json=body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "template user: TypeError" in error["message"] and "`t`" in error["message"]
    await eng.aclose()
