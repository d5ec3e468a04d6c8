"""Where and how to reach one model: the value the runtime hands an adapter per attempt.

Neutral ground between the compiled plan (which holds Timeouts) and the adapters (which
take an Endpoint), so neither package imports the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from engine.secrets import Secret


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect_s: float = 5.0
    total_s: float = 600.0
    first_token_s: float | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Everything an adapter needs to reach one model with one key.

    `options` carries protocol specifics: Azure `api_version` and `deployment`, extra
    headers as `header:<Name>`, mock behaviour (`latency_ms`, `fail_rate`, ...).
    """

    provider: str
    protocol: str
    base_url: str
    upstream_model: str
    api_key: Secret | None = None
    key_id: str = ""
    timeouts: Timeouts = field(default_factory=Timeouts)
    options: Mapping[str, str] = field(default_factory=dict)
    pool_size: int = 100
