"""The JSON codec a shared cache stores Responses with: exact round trip, no pickle."""

from __future__ import annotations

import pytest

from engine.errors import AttemptRecord
from engine.messages import ToolCallOut, Usage
from engine.result import Metadata, Response
from engine.state.codec import DataclassCodec


def test_a_response_round_trips_exactly() -> None:
    """Every field, nested values and metadata included, comes back equal."""
    original = Response(
        content=None,
        tool_calls=(ToolCallOut("call_1", "lookup", '{"q": 1}'),),
        finish_reason="tool_calls",
        usage=Usage(input_tokens=12, output_tokens=3),
        cost_usd=0.00012,
        provider="openai",
        model="openai/gpt-4o-mini",
        latency_ms=12.5,
        attempts=(AttemptRecord("openai", "openai/gpt-4o-mini", "ok", key_id="openai#0"),),
        cached=False,
        policy="default",
        id="chatcmpl-1",
        created=1700000000,
        metadata=Metadata({"team": "search"}),
    )
    codec = DataclassCodec(Response)
    assert codec.decode(codec.encode(original)) == original


def test_bytes_that_are_not_a_response_are_a_value_error() -> None:
    """Damaged or foreign bytes raise ValueError (the cache reads it as a miss)."""
    codec = DataclassCodec(Response)
    with pytest.raises(ValueError):
        codec.decode(b'{"content": "x"}')
    with pytest.raises(ValueError):
        codec.decode(b"\x80 not json")
