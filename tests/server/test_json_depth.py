"""Deeply nested JSON in a request is a clear 400 at the boundary, never a 500 (issue 14)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.assemble import Engine
from engine.errors import RequestError
from engine.messages import MAX_JSON_DEPTH, parse_request
from engine.state.cache import cache_key
from tests.server.conftest import serving

ROOT = Path(__file__).resolve().parents[2]
MSG = [{"role": "user", "content": "hi"}]


def nested(depth: int) -> dict[str, Any]:
    """A JSON object `depth` levels deep."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize("field", ["metadata", "variables"])
async def test_deep_metadata_or_variables_is_a_400_on_a_caching_policy(field: str) -> None:
    """Depth 300 in metadata/variables of a caching policy (`default`) answers 400 naming the
    field; depth MAX_JSON_DEPTH is still served."""
    engine = Engine.from_config(ROOT)
    assert "cache: {enabled: true" in (ROOT / "routes" / "default.yaml").read_text()
    async with serving(engine) as running, running.http() as http:
        deep = await http.post(
            "/v1/chat/completions", json={"model": "default", "messages": MSG, field: nested(300)}
        )
        fine = await http.post(
            "/v1/chat/completions",
            json={"model": "default", "messages": MSG, field: nested(MAX_JSON_DEPTH)},
        )
    assert deep.status_code == 400, deep.text
    error = deep.json()["error"]
    assert field in error["message"] and "nested deeper than" in error["message"]
    assert fine.status_code == 200, fine.text


def test_deep_tool_parameters_are_refused_too() -> None:
    """A tool's `parameters` schema nested 300 deep is a RequestError (400), not a crash."""
    tool = {"type": "function", "function": {"name": "f", "parameters": nested(300)}}
    with pytest.raises(RequestError, match="nested deeper than"):
        parse_request({"messages": MSG, "tools": [tool]})


def test_cache_key_of_a_request_made_deep_after_validation_is_a_request_error() -> None:
    """cache_key never raises a bare ValueError: metadata mutated past the serializer's
    depth after validation becomes a RequestError."""
    req = parse_request({"messages": MSG, "metadata": {"m": 1}})
    req.metadata["m"] = nested(300)
    with pytest.raises(RequestError, match="nested too deeply"):
        cache_key(req, "default")
