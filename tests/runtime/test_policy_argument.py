"""The `policy=` argument: an empty or non-string value is a RequestError, never the default."""

import pytest

import engine
from engine.errors import RequestError

MODELS = {
    "providers": {"mock": {"protocol": "mock", "options": {"latency_ms": 0}}},
    "models": {"mock/fast": {"context_window": 8000}},
}
ROUTES = {"main": {"strategy": "ordered", "candidates": ["mock/fast"]}}
ASK = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("bad", ["", "  ", 5])
async def test_bad_policy_argument_is_a_request_error(bad: object) -> None:
    """arun, astream and explain all refuse a blank or non-string policy by name."""
    eng = engine.Engine.from_data(MODELS, ROUTES)
    try:
        with pytest.raises(RequestError, match="policy must be"):
            await eng.arun(ASK, policy=bad)  # type: ignore[arg-type]
        with pytest.raises(RequestError, match="policy must be"):
            async for _ in eng.astream(ASK, policy=bad):  # type: ignore[arg-type]
                pass
        with pytest.raises(RequestError, match="policy must be"):
            eng.explain(ASK, policy=bad)  # type: ignore[arg-type]
        assert (await eng.arun(ASK, policy="main")).model == "mock/fast"
    finally:
        await eng.aclose()
