"""embeddings.create of the official openai SDK against the real server process: routed by
policy or pin to OpenAI, Gemini and the mock, failover included, cost in the ledger."""

from __future__ import annotations

import sqlite3
import time

import openai
import pytest

from engine.providers.embeddings import mock_vector

from .conftest import Stack


def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.v1, api_key="sk-test", max_retries=0)


@pytest.mark.parametrize(
    "model", ["embed", "oai/text-embedding-3-small", "gem/gemini-embedding-001", "mock/embed"]
)
def test_embeddings_create(stack: Stack, model: str) -> None:
    """One vector per input, in order, with usage and the engine's routing headers."""
    with client(stack) as c:
        raw = c.embeddings.with_raw_response.create(
            model=model, input=["red", "green"], dimensions=5
        )
    result = raw.parse()
    expected = [*mock_vector("red", 5), *mock_vector("green", 5)]  # float32 on the wire
    assert [x for d in result.data for x in d.embedding] == pytest.approx(expected, abs=1e-6)
    assert result.usage.prompt_tokens > 0
    assert raw.headers["x-engine-model"] in (model, "oai/text-embedding-3-small")


def test_embeddings_base64_encoding(stack: Stack) -> None:
    """The SDK's default base64 encoding decodes to the same floats."""
    with client(stack) as c:
        result = c.embeddings.create(model="mock/embed", input="blue")
    assert result.data[0].embedding == pytest.approx(list(mock_vector("blue")), abs=1e-6)


def test_embedding_cost_reaches_the_ledger(stack: Stack) -> None:
    """A priced embedding call is charged (header) and written to the ledger with its cost."""
    with client(stack) as c:
        raw = c.embeddings.with_raw_response.create(
            model="oai/text-embedding-3-small", input="ledger me"
        )
    assert float(raw.headers["x-engine-cost-usd"]) > 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with sqlite3.connect(stack.config / "ledger.sqlite3") as db:
            rows = db.execute(
                "SELECT cost_usd FROM attempts WHERE model = 'oai/text-embedding-3-small'"
            ).fetchall()
        if rows:
            assert all(r[0] > 0 for r in rows)
            return
        time.sleep(0.1)
    raise AssertionError("no ledger row for the embedding call")


def test_chat_model_cannot_embed_and_says_so(stack: Stack) -> None:
    """Pinning a chat-only Anthropic model for embeddings is a clear error, not a 500."""
    with client(stack) as c, pytest.raises(openai.APIStatusError) as info:
        c.embeddings.create(model="ant/claude-test", input="x")
    assert info.value.status_code < 500 or "embeddings" in str(info.value)
