"""Embeddings over each protocol that has them: build body, send once, parse. Each
adapter's `embed` delegates here, so the chat modules stay about chat.

- OpenAI and every OpenAI-compatible server (Mistral, Together...), Azure: `POST
  .../embeddings` (Azure: at the deployment URL), `{model, input, dimensions?}`.
- Gemini: `POST models/{m}:batchEmbedContents`, one request per text
  (`outputDimensionality` for dimensions); Gemini reports no token count, so usage is
  estimated at four characters a token.
- Ollama: `POST /api/embed` `{model, input}`; `prompt_eval_count` is the token count.
- mock: a deterministic unit vector per text (a hash of it), 8 dimensions by default.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from engine.embedding import EmbeddingRequest, ProviderEmbedding
from engine.endpoints import Endpoint
from engine.messages import Usage

from .exchange import HttpAdapter
from .failures import ObjectErrors, protocol_error

__all__ = ["embed_gemini", "embed_mock", "embed_ollama", "embed_openai", "mock_vector"]


def _vectors(endpoint: Endpoint, rows: Any, count: int) -> tuple[tuple[float, ...], ...]:
    if not isinstance(rows, list) or len(rows) != count:
        raise protocol_error(endpoint, "embedding answer does not hold one vector per input")
    out = []
    for row in rows:
        if not isinstance(row, list) or not all(isinstance(x, int | float) for x in row):
            raise protocol_error(endpoint, "embedding vector is not a list of numbers")
        out.append(tuple(float(x) for x in row))
    return tuple(out)


def _estimate(texts: list[str]) -> int:
    return sum(math.ceil(len(t) / 4) for t in texts)


async def embed_openai(
    adapter: HttpAdapter, url: str, headers: dict[str, str], errors: ObjectErrors,
    request: EmbeddingRequest, endpoint: Endpoint,
) -> ProviderEmbedding:  # fmt: skip
    """OpenAI's /embeddings (`url` is the adapter's chat URL, so Azure's shape is kept)."""
    body: dict[str, Any] = {"model": endpoint.upstream_model, "input": request.input}
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    if request.user is not None:
        body["user"] = request.user
    target = url.replace("/chat/completions", "/embeddings")
    data, _ = await adapter._post_json(endpoint, target, headers, body, errors)
    rows = sorted(
        (d for d in data.get("data") or () if isinstance(d, dict)), key=lambda d: d.get("index", 0)
    )
    vectors = _vectors(endpoint, [d.get("embedding") for d in rows], len(request.input))
    usage = data.get("usage") or {}
    tokens = int(usage.get("prompt_tokens") or 0) or _estimate(request.input)
    return ProviderEmbedding(vectors, Usage(tokens, 0), str(data.get("model") or ""))


async def embed_gemini(
    adapter: HttpAdapter, url: str, headers: dict[str, str], errors: ObjectErrors,
    request: EmbeddingRequest, endpoint: Endpoint,
) -> ProviderEmbedding:  # fmt: skip
    """Gemini's batchEmbedContents (`url` is the adapter's generateContent URL)."""
    model = "models/" + endpoint.upstream_model.removeprefix("models/")
    requests = []
    for text in request.input:
        one: dict[str, Any] = {"model": model, "content": {"parts": [{"text": text}]}}
        if request.dimensions is not None:
            one["outputDimensionality"] = request.dimensions
        requests.append(one)
    target = url.replace(":generateContent", ":batchEmbedContents")
    data, _ = await adapter._post_json(endpoint, target, headers, {"requests": requests}, errors)
    rows = [e.get("values") for e in data.get("embeddings") or () if isinstance(e, dict)]
    vectors = _vectors(endpoint, rows, len(request.input))
    return ProviderEmbedding(vectors, Usage(_estimate(request.input), 0), endpoint.upstream_model)


async def embed_ollama(
    adapter: HttpAdapter, url: str, headers: dict[str, str], errors: ObjectErrors,
    request: EmbeddingRequest, endpoint: Endpoint,
) -> ProviderEmbedding:  # fmt: skip
    """Ollama's /api/embed (`url` is the adapter's /api/chat URL)."""
    body: dict[str, Any] = {"model": endpoint.upstream_model, "input": request.input}
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    target = url.removesuffix("/api/chat") + "/api/embed"
    data, _ = await adapter._post_json(endpoint, target, headers, body, errors)
    vectors = _vectors(endpoint, data.get("embeddings"), len(request.input))
    tokens = int(data.get("prompt_eval_count") or 0) or _estimate(request.input)
    return ProviderEmbedding(vectors, Usage(tokens, 0), str(data.get("model") or ""))


def mock_vector(text: str, dimensions: int = 8) -> tuple[float, ...]:
    """A deterministic unit vector for `text` (the same text, the same vector)."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = [(digest[i % len(digest)] - 127.5) / 127.5 for i in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return tuple(round(x / norm, 6) for x in raw)


def embed_mock(request: EmbeddingRequest, endpoint: Endpoint) -> ProviderEmbedding:
    """The mock provider's embeddings (see `mock_vector`)."""
    size = request.dimensions or 8
    vectors = tuple(mock_vector(t, size) for t in request.input)
    return ProviderEmbedding(vectors, Usage(_estimate(request.input), 0), endpoint.upstream_model)
