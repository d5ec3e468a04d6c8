"""Embeddings on every protocol that has them, against its fake: one vector per text, in
order, the same text the same vector, token usage, and errors translated like chat's."""

from __future__ import annotations

import pytest

from engine.embedding import EmbeddingRequest, parse_embedding_request
from engine.errors import AuthenticationError, RequestError
from engine.providers import get_adapter
from engine.providers.base import EmbeddingAdapter
from engine.providers.embeddings import mock_vector
from engine.testing.fakes import FakeAzure, FakeGemini, FakeOllama, FakeOpenAI

from .cases import CASES, Case
from .conftest import endpoint

EMBEDDING_CASES = [c for c in CASES if c.fake in (FakeOpenAI, FakeAzure, FakeGemini, FakeOllama)]
REQUEST = EmbeddingRequest(input=["alpha", "beta", "alpha"], dimensions=6)


@pytest.mark.parametrize("case", EMBEDDING_CASES, ids=str)
async def test_embed_returns_one_vector_per_text(case: Case) -> None:
    """Vectors come back in input order, sized as asked, equal for equal texts."""
    async with case.fake() as up:
        adapter = get_adapter(case.protocol)
        assert isinstance(adapter, EmbeddingAdapter)
        result = await adapter.embed(REQUEST, case.endpoint(up))
    assert result.vectors == (
        mock_vector("alpha", 6),
        mock_vector("beta", 6),
        mock_vector("alpha", 6),
    )
    assert result.usage.input_tokens > 0 and result.usage.output_tokens == 0


@pytest.mark.parametrize("case", EMBEDDING_CASES, ids=str)
async def test_embed_wrong_key_is_an_authentication_error(case: Case) -> None:
    """A rejected key is the same AuthenticationError as on chat, without the key."""
    async with case.fake(api_key="the-right-key-000") as up:
        with pytest.raises(AuthenticationError) as info:
            await get_adapter(case.protocol).embed(REQUEST, case.endpoint(up))  # type: ignore[attr-defined]
    assert "CANARY" not in str(info.value)


async def test_anthropic_has_no_embeddings() -> None:
    """The Anthropic adapter does not claim an embed operation."""
    assert not isinstance(get_adapter("anthropic"), EmbeddingAdapter)


async def test_mock_embeddings_are_deterministic_unit_vectors() -> None:
    """The mock's vectors are unit length and stable."""
    result = await get_adapter("mock").embed(REQUEST, endpoint("mock://", "mock", "embed"))  # type: ignore[attr-defined]
    assert all(abs(sum(x * x for x in v) - 1) < 1e-4 for v in result.vectors)


def test_token_arrays_and_unknown_fields_are_refused() -> None:
    """Token-id input and a misspelt field are RequestErrors naming the problem."""
    with pytest.raises(RequestError, match="token arrays"):
        parse_embedding_request({"input": [[1, 2, 3]]})
    with pytest.raises(RequestError, match="dimension"):
        parse_embedding_request({"input": "x", "dimension": 3})
