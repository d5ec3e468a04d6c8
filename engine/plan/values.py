"""The compiled plan: frozen plain data, every default resolved. The runtime sees only this.

This module is the contract between compile time (`engine.config`, `engine.compile`) and
run time (`engine.runtime`). It holds types only; building a Plan is `engine.compile`'s job
and walking it is `engine.plan.select`:

    select(plan, policy_name, features) -> Selection      pure, no I/O, microseconds

The runtime then applies live state (breakers, rate limits, budgets, measured latency,
in-flight counts, round-robin counters) to `Selection.ranked`, in that order.

Prices are USD per million tokens; `None` means unknown (never silently zero).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from engine.endpoints import Timeouts
from engine.pricing import PriceSchedule, Rates
from engine.secrets import Secret
from engine.vocab import RETRY_ON_DEFAULT, ErrorKind, ProtocolName, StrategyName


@dataclass(frozen=True, slots=True)
class ModelPlan:
    id: str  # "provider/name", what users type
    provider: str
    upstream: str  # the name sent on the wire (Azure: the deployment)
    capabilities: frozenset[str]
    context_window: int
    max_output: int
    input_price: float | None  # USD per 1M input tokens
    output_price: float | None  # USD per 1M output tokens
    quality: float  # 0..1
    latency_ms: float  # prior, replaced at run time by measurements
    local: bool
    #: The endpoint options of this model: its provider's, plus its parameter rules
    #: (engine.providers.support); None when it has no rules (the provider's apply).
    options: Mapping[str, str] | None = None
    prices: PriceSchedule | None = None  # over time, with cache and tier prices; None: unknown

    def __post_init__(self) -> None:
        # A plan built by hand with flat prices only (tests, stand-ins) is billed at them.
        if self.prices is None and self.input_price is not None and self.output_price is not None:
            flat = Rates(self.input_price, self.output_price, self.input_price, self.input_price)
            object.__setattr__(self, "prices", PriceSchedule.flat(flat))

    def cost(self, input_tokens: int, output_tokens: int) -> float | None:
        """Estimated USD for a call of this size at the compiled prices, None when unknown."""
        if self.input_price is None or self.output_price is None:
            return None
        return cost(self.input_price, self.output_price, input_tokens, output_tokens)


def cost(input_price: float, output_price: float, input_tokens: int, output_tokens: int) -> float:
    """USD for a call of this size at these prices (USD per 1M tokens): the one formula."""
    return (input_tokens * input_price + output_tokens * output_price) / 1e6


@dataclass(frozen=True, slots=True)
class KeyPlan:
    id: str  # "openai#0": a label, never the key
    secret: Secret | None
    rpm: int | None = None
    input_tpm: int | None = None
    output_tpm: int | None = None
    #: The environment variable the key was read from (`${OPENAI_API_KEY}`), re-read when
    #: the provider rejects the key, so a rotated key is used without a restart.
    env: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderPlan:
    id: str
    protocol: ProtocolName
    base_url: str
    keys: tuple[KeyPlan, ...]
    timeouts: Timeouts = field(default_factory=Timeouts)
    local: bool = False
    enabled: bool = True
    disabled_reason: str | None = None
    pool_size: int = 100
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RetryPlan:
    max_retries: int = 2  # retries on the same candidate after the first try
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0
    multiplier: float = 2.0
    jitter: bool = True
    retry_on: frozenset[ErrorKind] = RETRY_ON_DEFAULT
    max_retry_after_s: float = 30.0
    after_first_token: bool = False


@dataclass(frozen=True, slots=True)
class BreakerPlan:
    failures: int = 5
    window_s: float = 60.0
    cooldown_s: float = 30.0


@dataclass(frozen=True, slots=True)
class RateLimitPlan:
    on_limited: Literal["wait", "skip"] = "wait"
    max_wait_ms: int = 2000


@dataclass(frozen=True, slots=True)
class BudgetPlan:
    max_cost_per_request: float | None = None
    daily_usd: float | None = None  # per workspace
    monthly_usd: float | None = None  # per workspace


@dataclass(frozen=True, slots=True)
class CachePlan:
    enabled: bool = False
    ttl_s: float = 3600.0
    max_entries: int = 1000


@dataclass(frozen=True, slots=True)
class TemplatePlan:
    """Jinja2 sources, rendered by the runtime in a sandbox with StrictUndefined."""

    system: str | None = None
    user: str | None = None
    variables: frozenset[str] = frozenset()
    defaults: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StrategyPlan:
    name: StrategyName
    weights: Mapping[str, float] = field(default_factory=dict)  # balanced: cost/quality/latency
    candidate_weights: Mapping[str, float] = field(default_factory=dict)  # weighted: model->w
    seed: int = 0


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """A leaf of a policy's tree: how to route once the rules have decided."""

    policy: str
    candidates: tuple[str, ...]  # statically eligible model ids, in static order
    strategy: StrategyPlan
    chain: tuple[str, ...] = ()  # explicit fallback model ids, tried after the ranking
    fallback_policy: str | None = None  # tried after `chain` is exhausted
    max_attempts: int = 5  # across all candidates and retries
    retry: RetryPlan = field(default_factory=RetryPlan)
    breaker: BreakerPlan = field(default_factory=BreakerPlan)
    rate_limit: RateLimitPlan = field(default_factory=RateLimitPlan)
    budget: BudgetPlan = field(default_factory=BudgetPlan)
    cache: CachePlan = field(default_factory=CachePlan)
    template: TemplatePlan | None = None
    timeouts: Timeouts | None = None  # overrides the providers' when set
    default_max_tokens: int = 1024  # expected output when the request gives none


@dataclass(frozen=True, slots=True)
class Features:
    """What rules and filters look at, extracted once per request."""

    task_type: str | None = None
    capabilities: frozenset[str] = frozenset()  # required (explicit + implied by the body)
    input_tokens: int = 0  # estimated
    output_tokens: int | None = None  # the caller's cap, if any
    tags: frozenset[str] = frozenset()
    workspace: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    budget_usd: float | None = None


class Scored(NamedTuple):
    """One ranked candidate of a Selection, with its estimated costs for this request.

    A named tuple rather than a frozen dataclass: select builds one per candidate on every
    request, and a tuple is built about three times faster. Same fields, same positional
    constructor, equally immutable.
    """

    model: ModelPlan
    score: float
    est_cost_usd: float | None  # expected (estimated input + expected output)
    worst_cost_usd: float | None  # input + max output: what budgets reserve


class Selection(NamedTuple):
    """One routing decision. A named tuple for the reason given at Scored: one per request."""

    policy: str
    rule: str | None  # the rule that decided, None for the policy's default
    path: tuple[str, ...]  # human-readable steps through the tree
    route: RoutePlan
    ranked: tuple[Scored, ...]
    eliminated: tuple[tuple[str, str], ...]  # (model id, the filter that removed it)
    # The explicit fallback chain (route.chain) that passed this request's checks, minus
    # anything already in `ranked`: try `ranked`, then `chain`, then route.fallback_policy.
    chain: tuple[Scored, ...] = ()
