"""Wire-neutral embedding request and results (what /v1/embeddings and `Engine.aembed` use).

The request is OpenAI's `CreateEmbeddingRequest` (strings only: token arrays are refused
with a clear error) plus the routing inputs chat requests have (`metadata`, `budget_usd`).
An adapter returns a `ProviderEmbedding`; the engine returns an `EmbeddingResponse` with
the routing facts and the cost, which the ledger records like a chat call's.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.errors import AttemptRecord, RequestError
from engine.messages import Request, Usage, parse_request

__all__ = ["EmbeddingRequest", "EmbeddingResponse", "ProviderEmbedding", "parse_embedding_request"]


class EmbeddingRequest(BaseModel):
    """Texts to embed plus their routing inputs. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    input: list[str] = Field(min_length=1, max_length=2048)
    model: str | None = None
    dimensions: int | None = Field(default=None, ge=1)
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    budget_usd: float | None = Field(default=None, ge=0)

    @field_validator("input", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [v]
        if isinstance(v, list) and v and not all(isinstance(x, str) for x in v):
            raise ValueError("token arrays are not supported; send text")
        return v

    def as_chat(self) -> Request:
        """The chat-shaped request the router reads (input size, capability, metadata);
        it is never sent to a provider."""
        chat: dict[str, Any] = {
            "messages": [{"role": "user", "content": "\n".join(self.input)}],
            "max_tokens": 1,
            "metadata": self.metadata,
            "capabilities": ["embeddings"],
            "cache": False,
        }
        if self.model is not None:
            chat["model"] = self.model
        if self.budget_usd is not None:
            chat["budget_usd"] = self.budget_usd
        return parse_request(chat)


def parse_embedding_request(data: EmbeddingRequest | dict[str, Any]) -> EmbeddingRequest:
    """Validate an embeddings body; every problem is named with its path."""
    if isinstance(data, EmbeddingRequest):
        return data
    try:
        return EmbeddingRequest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
        )
        raise RequestError(f"invalid request: {problems}") from None


@dataclass(frozen=True, slots=True)
class ProviderEmbedding:
    """One adapter call's answer: a vector per input, and the tokens billed."""

    vectors: tuple[tuple[float, ...], ...]
    usage: Usage
    upstream_model: str = ""


@dataclass(frozen=True, slots=True)
class EmbeddingResponse:
    """The engine's answer to an embedding call, after routing and failover."""

    vectors: tuple[tuple[float, ...], ...]
    usage: Usage
    cost_usd: float | None
    provider: str
    model: str
    latency_ms: float
    attempts: tuple[AttemptRecord, ...] = ()
    policy: str | None = None

    def to_openai(self, encoding_format: str = "float") -> dict[str, Any]:
        """This answer as OpenAI's `CreateEmbeddingResponse`."""
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _encode(v, encoding_format)}
                for i, v in enumerate(self.vectors)
            ],
            "model": self.model,
            "usage": {
                "prompt_tokens": self.usage.input_tokens,
                "total_tokens": self.usage.input_tokens,
            },
        }


def _encode(vector: tuple[float, ...], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # little-endian float32, as OpenAI sends it
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return list(vector)
