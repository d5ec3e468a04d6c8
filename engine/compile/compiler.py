"""Compile a loaded configuration into a frozen `Plan`: every static decision made here.

Pipeline: load (engine.config.project) -> link (references, cycles) -> registry (keys,
prices, defaults) -> per policy: resolve `extends`, build each route's leaf (eligible
candidates in static order, every default resolved), compile rule conditions into a
decision tree. The runtime only ever sees the result.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from engine.compile.analysis import check_rules, compares
from engine.compile.candidates import eligible, static_order, stray_weights
from engine.compile.indexes import build_indexes
from engine.compile.predicates import check_compare, compile_condition, describe
from engine.compile.registry import build_models, build_providers, timeouts_of
from engine.compile.templates import check_template
from engine.compile.workspaces import compile_wallets
from engine.config.link import link, merge_route, resolve, route_fields
from engine.config.load import Document, join_path
from engine.config.project import ConfigSet, load_data, load_dir
from engine.config.specs import (
    Condition,
    ModelsSpec,
    PolicySpec,
    RouteSpec,
    RuleSpec,
    WeightsSpec,
)
from engine.errors import ConfigError, Diagnostic
from engine.plan.compiled import Plan, routes_of
from engine.plan.strategies import REGISTRY, Strategy
from engine.plan.tree import (
    Candidate,
    Goto,
    Leaf,
    PolicyTree,
    Predicate,
    PricedRow,
    Rule,
    Target,
    candidate,
)
from engine.plan.values import (
    BreakerPlan,
    BudgetPlan,
    CachePlan,
    Features,
    ModelPlan,
    ProviderPlan,
    RateLimitPlan,
    RetryPlan,
    RoutePlan,
    StrategyPlan,
    TemplatePlan,
)
from engine.vocab import StrategyName

DEFAULT_POLICY = "default"


@dataclass(frozen=True, slots=True)
class Registry:
    """The compiled registry a policy's routes choose from."""

    models: Mapping[str, ModelPlan]
    providers: Mapping[str, ProviderPlan]
    implicit: frozenset[str]  # providers whose models join policies listing no candidates


def build_plan(config_dir: Path | str, *, env: Mapping[str, str] | None = None) -> Plan:
    """Load and compile `<dir>/models.yaml` + `<dir>/routes/`; raises ConfigError on errors."""
    plan, _ = load_plan(config_dir, env=env)
    return plan


def load_plan(
    config_dir: Path | str, *, env: Mapping[str, str] | None = None
) -> tuple[Plan, list[Diagnostic]]:
    """Like build_plan, also returning the warnings (unset variables, disabled providers)."""
    environ = os.environ if env is None else env
    with collector_paused():
        return compile_config(load_dir(config_dir, environ), environ)


def build_plan_from_data(
    models: Mapping[str, Any],
    routes: Mapping[str, Mapping[str, Any]],
    source: str = "<memory>",
    *,
    env: Mapping[str, str] | None = None,
) -> Plan:
    """Compile in-memory config (models.yaml as a dict, {policy name: route dict})."""
    environ = os.environ if env is None else env
    with collector_paused():
        plan, _ = compile_config(load_data(models, routes, source, environ), environ)
    return plan


@contextmanager
def collector_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector while a plan is built.

    Why: compiling allocates hundreds of thousands of long-lived objects and no cycles
    worth collecting, so the collector's passes over the growing heap are pure overhead
    (about a third of compile time for 500 models x 200 policies). It is switched back on
    afterwards only if it was on before, so nesting and callers who disabled it are safe.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def compile_config(cs: ConfigSet, env: Mapping[str, str]) -> tuple[Plan, list[Diagnostic]]:
    """Compile a loaded ConfigSet; raises ConfigError listing every error found."""
    plan, found = check_config(cs, env)
    if plan is None or any(d.severity == "error" for d in found):
        raise ConfigError(found or [Diagnostic("invalid configuration", file=cs.source)])
    return plan, found


def check_config(cs: ConfigSet, env: Mapping[str, str]) -> tuple[Plan | None, list[Diagnostic]]:
    """Every diagnostic for `cs`, and a Plan whenever the registry loaded.

    The Plan may be partial when there are errors (validate wants every problem, not just
    the first file's); compile_config is the gate that refuses such a plan.
    """
    found = list(cs.diagnostics)
    found += link(cs)
    if cs.models is None or cs.models_doc is None:
        return None, sort_diagnostics(found)
    providers = build_providers(cs, env)
    models, problems = build_models(cs, providers)
    found += problems
    reg = Registry(models, providers, _implicit(cs.models))
    policies: dict[str, PolicyTree] = {}
    for name, spec in resolve(cs).items():
        doc = cs.policies[name].doc
        found += check_rules(doc, spec)
        policies[name], problems = _compile_policy(name, spec, doc, reg)
        found += problems
    wallets, problems = compile_wallets(cs.models, cs.models_doc, routes_of(policies))
    found += problems
    plan = Plan(
        models=MappingProxyType(models),
        providers=MappingProxyType(providers),
        policies=MappingProxyType(policies),
        default_policy=DEFAULT_POLICY if DEFAULT_POLICY in policies else None,
        source=cs.source,
        wallets=wallets,
    )
    return plan, sort_diagnostics(found)


def _implicit(spec: ModelsSpec) -> frozenset[str]:
    """Providers whose models join policies without `candidates` (mock only if it says so)."""
    return frozenset(
        pid
        for pid, p in spec.providers.items()
        if p.implicit or (p.implicit is None and p.protocol != "mock")
    )


def sort_diagnostics(found: list[Diagnostic]) -> list[Diagnostic]:
    unique = list(dict.fromkeys(found))
    return sorted(
        unique, key=lambda d: (d.file or "", d.line or 0, d.column or 0, d.path, d.message)
    )


def _compile_policy(
    name: str,
    spec: PolicySpec,
    doc: Document,
    reg: Registry,
) -> tuple[PolicyTree, list[Diagnostic]]:
    base = route_fields(spec)
    problems: list[Diagnostic] = []
    default, found = _leaf(name, RouteSpec.model_validate(base), "", doc, reg)
    problems += found
    rules: list[Rule] = []
    for i, rule in enumerate(spec.rules):
        target, found = _rule_target(name, base, rule, join_path("rules", i), doc, reg)
        problems += found
        label = rule.name or f"rules[{i}]"
        text = describe(rule.when)
        step = f"{name}: rule `{label}` matched ({text})"
        rules.append(Rule(i, label, _predicate(rule.when), target, text, step))
    indexes = build_indexes([r.when if _meaningful(r.when) else None for r in spec.rules], rules)
    step = f"{name}: no rule matched, default route"
    tree = PolicyTree(name, indexes, default, tuple(rules), step)
    return tree, problems


def _meaningful(cond: Condition) -> bool:
    """False for conditions check_rules reports (`gt` on tags, a broken regex, ...)."""
    return not any(check_compare(c) for c in compares(cond))


def _predicate(cond: Condition) -> Predicate:
    # A meaningless condition is an error already reported; the plan is never returned, but
    # compiling the rest of the policy still finds that policy's other problems.
    return compile_condition(cond) if _meaningful(cond) else _never


def _never(features: Features) -> bool:
    return False


def _rule_target(
    policy: str,
    base: dict[str, Any],
    rule: RuleSpec,
    path: str,
    doc: Document,
    reg: Registry,
) -> tuple[Target, list[Diagnostic]]:
    if rule.policy is not None:
        return Goto(rule.policy), []
    own = route_fields(rule)
    route = RouteSpec.model_validate(merge_route(base, own))
    return _leaf(policy, route, path, doc, reg, own_weights="candidate_weights" in own)


def _leaf(
    policy: str,
    route: RouteSpec,
    path: str,
    doc: Document,
    reg: Registry,
    own_weights: bool = True,  # this level wrote `candidate_weights` (not inherited)
) -> tuple[Leaf, list[Diagnostic]]:
    strategy: StrategyName = route.strategy or "balanced"
    weights = dict(route.candidate_weights or {})
    models, providers = reg.models, reg.providers
    elig = eligible(route, models, providers, reg.implicit)
    problems: list[Diagnostic] = []
    if own_weights:
        problems += [
            doc.diagnostic(
                join_path(join_path(path, "candidate_weights"), mid),
                f"`{mid}` is not a candidate of this route, so its weight is never used",
                hint="add it to `candidates` or remove the weight",
            )
            for mid in stray_weights(route, models, reg.implicit)
        ]
    unknown = [m for m in route.candidates or [] if m not in models]
    if elig.filtered_out and models and not unknown:  # unknown ids: link reported them
        problems.append(_no_candidate(doc, path, elig.last_filter, route))
    w = route.weights or WeightsSpec()
    blend = (w.cost, w.quality, w.latency)
    candidates = REGISTRY[strategy].prepare(static_order(strategy, elig.candidates, weights), blend)
    chain_ids, chain, chain_elim = _chain(
        route, models, providers, {c.model.id for c in candidates}
    )
    fallback_policy = route.fallback.policy if route.fallback else None
    if not elig.filtered_out and not candidates and not chain and fallback_policy is None:
        prefix = "provider disabled: "
        reasons = {w.removeprefix(prefix) for _, w in elig.eliminated if w.startswith(prefix)}
        msg = "every candidate's provider is disabled: " + "; ".join(sorted(reasons))
        problems.append(doc.diagnostic(path, msg, severity="warning"))
    plan = RoutePlan(
        policy=policy,
        candidates=tuple(c.model.id for c in candidates),
        strategy=_strategy(strategy, route, weights),
        chain=chain_ids,
        fallback_policy=route.fallback.policy if route.fallback else None,
        max_attempts=(route.fallback.max_attempts if route.fallback else None) or 5,
        retry=_section(RetryPlan, route.retries, retry_on=frozenset),
        breaker=_section(BreakerPlan, route.breaker),
        rate_limit=_section(RateLimitPlan, route.rate_limit),
        budget=_section(BudgetPlan, route.budget),
        cache=_section(CachePlan, route.cache),
        template=_template(route, doc, path, problems),
        timeouts=timeouts_of(route.timeouts) if route.timeouts else None,
        default_max_tokens=route.default_max_tokens or 1024,
    )
    cost_share = w.cost / (sum(blend) or 1.0)
    leaf = Leaf(
        route=plan,
        candidates=candidates,
        chain=chain,
        eliminated=elig.eliminated + chain_elim,
        weights=blend,
        min_context=min((c.context_window for c in candidates), default=0),
        priced=_priced(candidates, REGISTRY[strategy], cost_share, plan.default_max_tokens),
        cost_share=cost_share,
    )
    return leaf, problems


def _priced(
    cands: tuple[Candidate, ...], strategy: Strategy, cost_share: float, default_out: int
) -> tuple[PricedRow, ...] | None:
    """Leaf.priced: the candidates' hot figures, when all are priced and the sort allows.

    Output tokens times output price, for the route's expected output and for the model's
    maximum, are the very floats ModelPlan.cost computes on each call, so precompiling them
    changes no figure. The last figure is the strategy's `priced_part` (None: the strategy
    has no fast path).
    """
    rows: list[PricedRow] = []
    for c in cands:
        part = strategy.priced_part(c, cost_share)
        if c.input_price is None or c.output_price is None or part is None:
            return None
        pout = c.output_price
        rows.append((c.model, c.input_price, pout, default_out * pout, c.max_output * pout, part))
    return tuple(rows)


def _no_candidate(doc: Document, path: str, last: str | None, route: RouteSpec) -> Diagnostic:
    if last is None and route.candidates is None:
        msg = "no candidate: no registry model joins implicitly (mock models must be listed)"
        return doc.diagnostic(path, msg, hint="list models under `candidates`")
    if last is None:
        return doc.diagnostic(join_path(path, "candidates"), "no candidate: the list is empty")
    where = join_path(join_path(path, "filters"), last)
    return doc.diagnostic(
        where, f"filters leave no candidate: `filters.{last}` removed the last one"
    )


def _chain(
    route: RouteSpec,
    models: Mapping[str, ModelPlan],
    providers: Mapping[str, ProviderPlan],
    taken: set[str],
) -> tuple[tuple[str, ...], tuple[Candidate, ...], tuple[tuple[str, str], ...]]:
    ids = route.fallback.chain if route.fallback and route.fallback.chain else []
    kept: list[Candidate] = []
    elim: list[tuple[str, str]] = []
    for mid in dict.fromkeys(ids):
        model = models.get(mid)
        if model is None or mid in taken:
            continue
        provider = providers[model.provider]
        if not provider.enabled:
            elim.append((mid, f"provider disabled: {provider.disabled_reason}"))
            continue
        kept.append(candidate(model, 0.0, len(kept)))
    return tuple(c.model.id for c in kept), tuple(kept), tuple(elim)


def _strategy(name: StrategyName, route: RouteSpec, weights: dict[str, float]) -> StrategyPlan:
    w = route.weights
    balance = {"cost": w.cost, "quality": w.quality, "latency": w.latency} if w else {}
    return StrategyPlan(
        name=name,
        weights=MappingProxyType(balance),
        candidate_weights=MappingProxyType(weights),
        seed=route.seed or 0,
    )


def _section(cls: Any, spec: Any, **convert: Any) -> Any:
    """A plan section from an optional spec: set fields override the plan's defaults."""
    if spec is None:
        return cls()
    values = {k: v for k, v in spec.model_dump().items() if v is not None}
    for key, fn in convert.items():
        if key in values:
            values[key] = fn(values[key])
    return cls(**values)


def _template(
    route: RouteSpec, doc: Document, path: str, problems: list[Diagnostic]
) -> TemplatePlan | None:
    t = route.template
    if t is None:
        return None
    problems += check_template(doc, join_path(path, "template"), t)
    return TemplatePlan(
        system=t.system,
        user=t.user,
        variables=frozenset(t.variables),
        defaults=MappingProxyType(dict(t.defaults)),
    )
