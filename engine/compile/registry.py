"""models.yaml specs -> ProviderPlan and ModelPlan: keys, base URLs, prices, every default.

Why separate from policy compilation: the registry is shared by every policy and is where
the environment enters (keys, `<ID>_BASE_URL`), so it is resolved exactly once. A provider
without its key is disabled with a stated reason (a warning, not an error), so a config
with no keys at all still compiles and can route to local and mock models.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

from engine.config.env import base_url_variable
from engine.config.load import Document, join_path
from engine.config.project import ConfigSet
from engine.config.specs import KeySpec, LimitsSpec, ModelSpec, ProviderSpec, TimeoutsSpec
from engine.endpoints import Timeouts
from engine.errors import Diagnostic
from engine.plan.values import KeyPlan, ModelPlan, ProviderPlan
from engine.pricing import PriceSchedule, Rates, parse_as_of, schedule_for
from engine.secrets import ProviderOptions, ProviderURL, Secret
from engine.vocab import KEYLESS_PROTOCOLS

DEFAULT_MAX_OUTPUT = 4096
MOCK_BASE_URL = "mock://local"


def build_providers(cs: ConfigSet, env: Mapping[str, str]) -> dict[str, ProviderPlan]:
    assert cs.models is not None
    return {pid: _provider(pid, spec, cs, env) for pid, spec in cs.models.providers.items()}


def build_models(
    cs: ConfigSet, providers: Mapping[str, ProviderPlan]
) -> tuple[dict[str, ModelPlan], list[Diagnostic]]:
    assert cs.models is not None and cs.models_doc is not None
    models: dict[str, ModelPlan] = {}
    problems: list[Diagnostic] = []
    for mid, spec in cs.models.models.items():
        provider_id, name = mid.split("/", 1)
        if provider_id not in providers:
            continue  # link reports the unknown provider
        pspec = cs.models.providers[provider_id]
        as_of = parse_as_of(cs.models.prices_as_of)
        model, found = _model(mid, name, spec, pspec, providers[provider_id], cs.models_doc, as_of)
        problems += found
        if model is not None:
            models[mid] = model
    return models, problems


def timeouts_of(spec: TimeoutsSpec | None, base: Timeouts | None = None) -> Timeouts:
    base = base or Timeouts()
    if spec is None:
        return base
    return Timeouts(
        connect_s=spec.connect_s if spec.connect_s is not None else base.connect_s,
        total_s=spec.total_s if spec.total_s is not None else base.total_s,
        first_token_s=spec.first_token_s if spec.first_token_s is not None else base.first_token_s,
    )


def _provider(pid: str, spec: ProviderSpec, cs: ConfigSet, env: Mapping[str, str]) -> ProviderPlan:
    keys = tuple(_keys(pid, spec, cs.refs))
    base_url = env.get(base_url_variable(pid)) or spec.base_url
    if spec.protocol == "mock" and not base_url:
        base_url = MOCK_BASE_URL
    reason = _disabled_reason(pid, spec, keys, base_url, cs)
    if not keys and spec.limits is not None:
        keys = (_keyless(pid, spec.limits),)
    return ProviderPlan(
        id=pid,
        protocol=spec.protocol,
        base_url=ProviderURL(base_url.rstrip("/")),
        keys=keys,
        timeouts=timeouts_of(spec.timeouts),
        local=spec.local or spec.protocol == "mock",  # the mock is always local and free
        enabled=reason is None,
        disabled_reason=reason,
        pool_size=spec.pool_size,
        options=ProviderOptions(_options(spec)),
    )


def _options(spec: ProviderSpec) -> dict[str, str]:
    """The provider's options; a non-default `transport` rides along for the adapter."""
    options = {k: _option(v) for k, v in spec.options.items()}
    if spec.transport != "engine":
        options["transport"] = spec.transport
    return options


def _option(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def key_entries(pid: str, spec: ProviderSpec) -> list[tuple[KeySpec | str, str]]:
    """The provider's keys that have a value, with their paths, in the order their labels
    (`<pid>#0`, `#1`, ...) number them."""
    prefix = join_path("providers", pid)
    entries: list[tuple[KeySpec | str, str]] = []
    if spec.api_key is not None:
        entries.append((spec.api_key, join_path(prefix, "api_key")))
    entries += [(e, join_path(join_path(prefix, "keys"), i)) for i, e in enumerate(spec.keys)]
    return [(e, p) for e, p in entries if _key_text(e)]


def _keys(pid: str, spec: ProviderSpec, refs: Mapping[str, str]) -> Iterator[KeyPlan]:
    default = spec.limits
    for i, (entry, path) in enumerate(key_entries(pid, spec)):
        limits = entry if isinstance(entry, KeySpec) else default
        yield KeyPlan(
            id=f"{pid}#{i}",
            secret=Secret(_key_text(entry)),
            rpm=_limit(limits, default, "rpm"),
            input_tpm=_limit(limits, default, "input_tpm"),
            output_tpm=_limit(limits, default, "output_tpm"),
            env=refs.get(join_path(path, "key") if isinstance(entry, KeySpec) else path),
        )


def _key_text(entry: KeySpec | str) -> str:
    """The key without surrounding whitespace: a key read from a file or a .env line often
    ends in a newline, which no HTTP header may carry, and which an upstream echoing the key
    back would drop (so the key could no longer be found to redact it)."""
    return (entry.key if isinstance(entry, KeySpec) else entry).strip()


def _keyless(pid: str, limits: LimitsSpec) -> KeyPlan:
    """A keyless provider's limits (ollama, mock) still apply: they ride on a key with no
    secret, labelled as the runtime labels keyless providers, instead of being dropped."""
    return KeyPlan(
        id=f"{pid}#none",
        secret=None,
        rpm=limits.rpm,
        input_tpm=limits.input_tpm,
        output_tpm=limits.output_tpm,
    )


def _limit(own: object, default: object, name: str) -> int | None:
    value = getattr(own, name, None) if own is not None else None
    if value is None and default is not None:
        value = getattr(default, name, None)
    return value


def _disabled_reason(
    pid: str, spec: ProviderSpec, keys: tuple[KeyPlan, ...], base_url: str, cs: ConfigSet
) -> str | None:
    prefix = join_path("providers", pid)
    if not base_url:
        missing = _unset_under(cs, join_path(prefix, "base_url"))
        return f"{missing} is not set" if missing else "no base_url configured"
    requires = (
        spec.requires_key
        if spec.requires_key is not None
        else spec.protocol not in KEYLESS_PROTOCOLS
    )
    if requires and not keys:
        missing = _unset_under(cs, join_path(prefix, "api_key")) or _unset_under(
            cs, join_path(prefix, "keys")
        )
        return f"{missing} is not set" if missing else "no API key configured"
    return None


def _unset_under(cs: ConfigSet, prefix: str) -> str | None:
    names = [
        n for path, ns in cs.unset.items() if path == prefix or path.startswith(prefix) for n in ns
    ]
    return " / ".join(dict.fromkeys(names)) or None


def _model(
    mid: str,
    name: str,
    spec: ModelSpec,
    pspec: ProviderSpec,
    provider: ProviderPlan,
    doc: Document,
    as_of: float | None,
) -> tuple[ModelPlan | None, list[Diagnostic]]:
    path = join_path("models", mid)
    upstream = spec.upstream or name
    local = spec.local if spec.local is not None else provider.local
    source = pspec.price_source or provider.id
    known, known_window = schedule_for(source, spec.price_ref or upstream)
    prices = _prices(known, spec, local)
    problems: list[Diagnostic] = []
    if prices is None:
        msg = f"no price known for `{mid}`: cost ranking puts it last and budgets cannot admit it"
        problems.append(
            doc.diagnostic(path, msg, hint="set input_price and output_price", severity="warning")
        )
        input_price = output_price = None
    else:
        prices = prices.pinned(as_of)
        # What ranking and worst-case reservations use: the prices in force at compile time
        # (or as of `prices_as_of`); each call is then billed at its own time's prices.
        now = prices.rates_at(as_of if as_of is not None else time.time())
        input_price, output_price = now.input, now.output
    window = spec.context_window or known_window
    if window is None:
        msg = f"context window of `{mid}` is unknown"
        problems.append(doc.diagnostic(path, msg, hint="set context_window"))
        return None, problems
    problems += _parameter_problems(mid, spec, doc, path)
    max_output = min(spec.max_output or DEFAULT_MAX_OUTPUT, window)
    return (
        ModelPlan(
            id=mid,
            provider=provider.id,
            upstream=upstream,
            capabilities=frozenset(spec.capabilities),
            context_window=window,
            max_output=max_output,
            input_price=input_price,
            output_price=output_price,
            quality=spec.quality,
            latency_ms=spec.latency_ms,
            local=local,
            options=_model_options(spec, provider),
            prices=prices,
        ),
        problems,
    )


def _parameter_problems(mid: str, spec: ModelSpec, doc: Document, path: str) -> list[Diagnostic]:
    """Warnings for parameter rules that would silently drop what a caller sends."""
    params = spec.parameters
    reasons = params is not None and params.reasoning
    if "reasoning" in spec.capabilities and not reasons:
        msg = f"`{mid}` has the reasoning capability but reasoning_effort is never sent to it"
        hint = "declare parameters: {reasoning: true}"
        return [doc.diagnostic(path, msg, hint=hint, severity="warning")]
    if params is not None and params.reasoning_efforts and not params.reasoning:
        msg = f"`{mid}` lists reasoning_efforts but is not declared reasoning"
        return [doc.diagnostic(path, msg, hint="set reasoning: true", severity="warning")]
    return []


def _model_options(spec: ModelSpec, provider: ProviderPlan) -> ProviderOptions | None:
    """The provider's options plus the model's parameter rules (None: no rules)."""
    params = spec.parameters
    if params is None:
        return None
    own = {
        "temperature": str(params.temperature).lower(),
        "reasoning": str(params.reasoning).lower(),
    }
    if params.token_limit is not None:
        own["max_tokens_field"] = params.token_limit
    if params.reasoning_efforts is not None:
        own["reasoning_efforts"] = ",".join(params.reasoning_efforts)
    return ProviderOptions({**provider.options, **own})


def _prices(known: PriceSchedule | None, spec: ModelSpec, local: bool) -> PriceSchedule | None:
    """Declared prices win; a local model costs nothing unless the file says otherwise."""
    inp, out = spec.input_price, spec.output_price
    if known is not None:
        return known.with_rates(inp, out)
    if local:
        inp, out = (0.0 if inp is None else inp), (0.0 if out is None else out)
    if inp is None or out is None:
        return None
    return PriceSchedule.flat(Rates(inp, out, inp, inp))
