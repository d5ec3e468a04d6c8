"""Typed, frozen config models (`*Spec`): the shape of models.yaml and of one route file.

These are the single source of truth for the config language: the JSON Schemas in
`schema/` are generated from them (`python -m engine schema --write`), validation errors
are reported against them, and the compiler reads only these, never raw dicts. Every model
forbids unknown keys, so a typo is an error with a hint, never silently dropped.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.vocab import ErrorKind, ProtocolName, StrategyName

Capability = Literal[
    "chat",
    "code",
    "reasoning",
    "tools",
    "vision",
    "json",
    "streaming",
    "long_context",
    "audio",
    "embeddings",
]
PROVIDER_ID = r"^[a-z][a-z0-9_-]{0,63}$"
MODEL_ID = r"^[a-z][a-z0-9_-]{0,63}/[^\s]{1,200}$"
POLICY_NAME = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
FEATURE = (
    r"^(task_type|capabilities|input_tokens|output_tokens|tags|workspace|budget_usd"
    r"|metadata\.[A-Za-z0-9_.-]+)$"
)

Count = Annotated[int, Field(ge=1, le=10**9)]
Seconds = Annotated[float, Field(gt=0, le=86_400)]
Usd = Annotated[float, Field(ge=0, le=1_000_000)]
PricePerM = Annotated[float, Field(ge=0, le=10_000)]
Scalar = str | int | float | bool


class Spec(BaseModel):
    """Base of every spec: frozen, unknown keys rejected, aliases accepted by name too."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


# --- models.yaml ---------------------------------------------------------------------------


class LimitsSpec(Spec):
    """Per-key limits the provider enforces; the rate limiter keeps under them."""

    rpm: Count | None = Field(None, description="requests per minute")
    input_tpm: Count | None = Field(None, description="input tokens per minute")
    output_tpm: Count | None = Field(None, description="output tokens per minute")


class KeySpec(LimitsSpec):
    """One API key of a pool, with its own limits (default: the provider's `limits`)."""

    key: str = Field(description="the key, normally `${ENV_VAR}`")


class TimeoutsSpec(Spec):
    connect_s: Seconds | None = None
    total_s: Seconds | None = None
    first_token_s: Seconds | None = None


class ProviderSpec(Spec):
    """One upstream service: how to reach it and with which keys."""

    protocol: ProtocolName
    base_url: str = Field("", description="`${<ID>_BASE_URL}` always overrides this")
    api_key: str | None = Field(None, description="a single key; use `keys` for a pool")
    keys: list[KeySpec | str] = Field(default_factory=list, description="a key pool")
    requires_key: bool | None = Field(None, description="default: false for ollama/mock")
    limits: LimitsSpec | None = None
    timeouts: TimeoutsSpec | None = None
    pool_size: Annotated[int, Field(ge=1, le=10_000)] = 100
    transport: Literal["engine", "aiohttp"] = Field(
        "engine",
        description="HTTP client: the engine's own (default) or aiohttp, an escape hatch "
        "for an upstream the engine's client handles badly",
    )
    local: bool = False
    implicit: bool | None = Field(
        None,
        description="whether its models join policies that list no candidates "
        "(default: true, false for mock)",
    )
    options: dict[str, Scalar] = Field(default_factory=dict)
    price_source: str | None = Field(None, description="genai-prices provider id")
    description: str | None = None


ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]


class ParametersSpec(Spec):
    """What the model's API accepts, so adapters never send what it rejects (OpenAI's
    gpt-5 and o-series answer 400 to `max_tokens` and to a non-default temperature)."""

    token_limit: Literal["max_tokens", "max_completion_tokens"] | None = Field(
        None, description="the field the output cap is sent in (default: the caller's)"
    )
    temperature: bool = Field(
        True,
        description="accepts temperature, top_p, penalties, logprobs and logit_bias "
        "(false: only its default sampling; they are left out and reported)",
    )
    reasoning: bool = Field(
        False,
        description="reasons: reasoning_effort is sent (OpenAI), or translated to a thinking "
        "budget (Anthropic, Gemini) or think (Ollama); otherwise it is left out",
    )
    reasoning_efforts: list[ReasoningEffort] | None = Field(
        None, description="the efforts it takes (default: any); others are left out"
    )


def _chat_only() -> list[Capability]:
    return ["chat"]


class ModelSpec(Spec):
    """One model, addressed as `provider/name`; unset prices come from genai-prices."""

    upstream: str | None = Field(None, description="name sent on the wire; default: the name")
    capabilities: list[Capability] = Field(default_factory=_chat_only)
    context_window: Annotated[int, Field(ge=1, le=100_000_000)] | None = None
    max_output: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    input_price: PricePerM | None = Field(None, description="USD per 1M input tokens")
    output_price: PricePerM | None = Field(None, description="USD per 1M output tokens")
    quality: Annotated[float, Field(ge=0, le=1)] = 0.5
    latency_ms: Annotated[float, Field(ge=0, le=600_000)] = 1000.0
    price_ref: str | None = Field(None, description="genai-prices model name, if different")
    local: bool | None = None
    parameters: ParametersSpec | None = None
    description: str | None = None


#: `prices_as_of`: a day, or a day and time with an optional UTC offset.
AS_OF = r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?$"


#: A workspace name in `workspaces:`: printable, at most 128 characters; `*` is the pool of
#: every workspace not listed.
WORKSPACE_NAME = r"^[^\x00-\x1f\x7f]{1,128}$"


class WorkspaceSpec(Spec):
    """One workspace's budget: caps on what every call in it may spend (one at least)."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    daily_usd: Usd | None = Field(None, description="cap per UTC day, every call included")
    monthly_usd: Usd | None = Field(None, description="cap per UTC month, every call included")


class ModelsSpec(Spec):
    """models.yaml: the registry of providers and models."""

    schema_: str | None = Field(None, alias="$schema")
    prices_as_of: Annotated[str, Field(pattern=AS_OF)] | None = Field(
        None,
        description="price every call as of this UTC day (YYYY-MM-DD) or ISO instant, for "
        "reproducible plans and tests; default: the prices in force when each call is made",
    )
    providers: dict[Annotated[str, Field(pattern=PROVIDER_ID)], ProviderSpec]
    models: dict[Annotated[str, Field(pattern=MODEL_ID)], ModelSpec] = Field(default_factory=dict)
    workspaces: dict[Annotated[str, Field(pattern=WORKSPACE_NAME)], WorkspaceSpec] | None = Field(
        None,
        description="budgets that bind every call of a workspace (policy, pin, bare name, "
        "fallback); `*` is one pool shared by every workspace not listed",
    )


# --- routes/*.yaml -----------------------------------------------------------------------


class Compare(Spec):
    """One comparison on a request feature; exactly one operator besides `feature`."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 2, "maxProperties": 2})

    feature: Annotated[str, Field(pattern=FEATURE)]
    eq: Scalar | None = None
    ne: Scalar | None = None
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    in_: list[Scalar] | None = Field(None, alias="in")
    not_in: list[Scalar] | None = None
    contains: str | None = None
    exists: bool | None = None
    matches: str | None = None

    @model_validator(mode="after")
    def _one_operator(self) -> Compare:
        if len(self.model_fields_set - {"feature"}) != 1:
            raise ValueError("a comparison needs exactly one operator besides `feature`")
        return self

    @property
    def operator(self) -> tuple[str, Any]:
        for name in self.model_fields_set:  # exactly one besides `feature` (validated)
            if name != "feature":
                return ("in" if name == "in_" else name, getattr(self, name))
        raise AssertionError("unreachable: a Compare always has one operator")


class AllOf(Spec):
    all_: list[Condition] = Field(alias="all", min_length=1)


class AnyOf(Spec):
    any_: list[Condition] = Field(alias="any", min_length=1)


class NotOf(Spec):
    not_: Condition = Field(alias="not")


Condition = Compare | AllOf | AnyOf | NotOf


class WeightsSpec(Spec):
    """`balanced`: how much each normalised criterion counts (they need not sum to 1)."""

    cost: Annotated[float, Field(ge=0, le=1000)] = 1.0
    quality: Annotated[float, Field(ge=0, le=1000)] = 1.0
    latency: Annotated[float, Field(ge=0, le=1000)] = 1.0


class FiltersSpec(Spec):
    """Static eligibility: a registry model must pass all of these to be a candidate."""

    capabilities: list[Capability] | None = None
    providers: list[str] | None = Field(None, description="allow list of provider ids")
    exclude_providers: list[str] | None = None
    exclude_models: list[str] | None = None
    local_only: bool | None = None
    min_context: Annotated[int, Field(ge=1, le=100_000_000)] | None = None
    max_input_price: PricePerM | None = None
    max_output_price: PricePerM | None = None
    max_latency_ms: Annotated[float, Field(ge=0, le=600_000)] | None = None
    min_quality: Annotated[float, Field(ge=0, le=1)] | None = None


class FallbackSpec(Spec):
    chain: list[str] | None = Field(None, description="model ids tried after the ranking")
    policy: str | None = Field(None, description="policy tried after the chain")
    max_attempts: Annotated[int, Field(ge=1, le=100)] | None = None


class RetrySpec(Spec):
    max_retries: Annotated[int, Field(ge=0, le=20)] | None = None
    backoff_initial_s: Annotated[float, Field(ge=0, le=3600)] | None = None
    backoff_max_s: Annotated[float, Field(ge=0, le=3600)] | None = None
    multiplier: Annotated[float, Field(ge=1, le=10)] | None = None
    jitter: bool | None = None
    retry_on: list[ErrorKind] | None = None
    max_retry_after_s: Annotated[float, Field(ge=0, le=3600)] | None = None
    after_first_token: bool | None = None


class BreakerSpec(Spec):
    failures: Annotated[int, Field(ge=1, le=10_000)] | None = None
    window_s: Seconds | None = None
    cooldown_s: Seconds | None = None


class RateLimitSpec(Spec):
    on_limited: Literal["wait", "skip"] | None = None
    max_wait_ms: Annotated[int, Field(ge=0, le=600_000)] | None = None


class BudgetSpec(Spec):
    max_cost_per_request: Usd | None = None
    daily_usd: Usd | None = Field(None, description="per workspace")
    monthly_usd: Usd | None = Field(None, description="per workspace")


class CacheSpec(Spec):
    enabled: bool | None = None
    ttl_s: Seconds | None = None
    max_entries: Annotated[int, Field(ge=1, le=10_000_000)] | None = None


class TemplateSpec(Spec):
    """Jinja2 sources rendered in a sandbox with StrictUndefined; variables must be declared."""

    system: str | None = None
    user: str | None = None
    variables: list[str] = Field(default_factory=list)
    defaults: dict[str, Any] = Field(default_factory=dict)


class RouteSpec(Spec):
    """How to route: every field optional so rules and `extends` can override piecewise."""

    strategy: StrategyName | None = None
    weights: WeightsSpec | None = None
    candidate_weights: dict[str, Annotated[float, Field(ge=0, le=1_000_000)]] | None = None
    seed: Annotated[int, Field(ge=0, le=2**31)] | None = None
    candidates: list[str] | None = Field(None, description="explicit model ids, in order")
    filters: FiltersSpec | None = None
    fallback: FallbackSpec | None = None
    retries: RetrySpec | None = None
    timeouts: TimeoutsSpec | None = None
    breaker: BreakerSpec | None = None
    rate_limit: RateLimitSpec | None = None
    budget: BudgetSpec | None = None
    cache: CacheSpec | None = None
    template: TemplateSpec | None = None
    default_max_tokens: Annotated[int, Field(ge=1, le=10_000_000)] | None = None


class RuleSpec(RouteSpec):
    """`when` the condition holds: either override route fields or go to another `policy`."""

    name: str | None = None
    when: Condition
    policy: str | None = Field(None, description="hand the request to this policy")


class PolicySpec(RouteSpec):
    """One route file: a policy (name defaults to the file stem)."""

    schema_: str | None = Field(None, alias="$schema")
    name: Annotated[str, Field(pattern=POLICY_NAME)] | None = None
    description: str | None = None
    extends: str | None = None
    rules: list[RuleSpec] = Field(default_factory=list)


ROUTE_FIELDS: tuple[str, ...] = tuple(RouteSpec.model_fields)

for _model in (AllOf, AnyOf, NotOf, RuleSpec, PolicySpec):
    _model.model_rebuild()
