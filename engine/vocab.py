"""Names defined once: strategies, wire protocols and error kinds.

The config language (engine.config.specs), the compiled plan (engine.plan), the strategy
registry (engine.plan.strategies), the provider registry (engine.providers) and the error
tree (engine.errors) all read these; the import contracts keep those packages apart, so
the names live in this leaf module instead of being listed in each and pinned together by
a test. Adding a strategy: its name here and its module in engine/plan/strategies/.
"""

from __future__ import annotations

from typing import Literal, get_args

StrategyName = Literal[
    "cost_optimized",
    "latency_optimized",
    "quality_optimized",
    "balanced",
    "round_robin",
    "weighted",
    "least_loaded",
    "local_first",
    "capability_match",
    "ordered",
]
STRATEGIES: tuple[StrategyName, ...] = get_args(StrategyName)

ProtocolName = Literal["openai", "azure", "anthropic", "gemini", "ollama", "mock"]
PROTOCOLS: tuple[ProtocolName, ...] = get_args(ProtocolName)
#: Protocols whose servers take no API key (a local Ollama, the built-in mock).
KEYLESS_PROTOCOLS: frozenset[ProtocolName] = frozenset({"ollama", "mock"})

ErrorKind = Literal[
    "rate_limited", "unavailable", "timeout", "protocol_error", "authentication",
    "permission_denied", "model_not_found", "context_window_exceeded", "content_filtered",
    "invalid_request", "circuit_open",
]  # fmt: skip
ERROR_KINDS: tuple[ErrorKind, ...] = get_args(ErrorKind)
#: The kinds a route retries when its `retries.retry_on` is not set.
RETRY_ON_DEFAULT: frozenset[ErrorKind] = frozenset(
    {"rate_limited", "unavailable", "timeout", "protocol_error"}
)
