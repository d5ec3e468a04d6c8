"""The protocols under test: each pairs an adapter protocol with its fake upstream."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from engine.endpoints import Endpoint, Timeouts
from engine.testing.fakes import (
    FakeAnthropic,
    FakeAzure,
    FakeGemini,
    FakeOllama,
    FakeOpenAI,
    FakeUpstream,
)

from .conftest import CANARY, endpoint


@dataclass(frozen=True)
class Case:
    protocol: str
    fake: Callable[..., FakeUpstream]
    model: str
    options: dict[str, str] = field(default_factory=dict)
    rate_headers: bool = True  # whether the real service sends rate-limit headers
    refusal: str = "finish"  # how a refusal shows: "finish" reason, "error", or "none"

    def endpoint(
        self, up: FakeUpstream, key: str | None = CANARY, timeouts: Timeouts | None = None
    ) -> Endpoint:
        return endpoint(up.url, self.protocol, self.model, key, timeouts, **self.options)

    def __str__(self) -> str:
        return self.protocol


CASES = [
    Case("openai", FakeOpenAI, "gpt-test"),
    Case("azure", FakeAzure, "my-deployment", {"api_version": "2024-10-21"}),
    Case("anthropic", FakeAnthropic, "claude-test"),
    Case("gemini", FakeGemini, "gemini-test", rate_headers=False, refusal="error"),
    Case("ollama", FakeOllama, "llama-test", rate_headers=False, refusal="none"),
]
HTTP_PROTOCOLS = [c for c in CASES]
