"""Cross-file checks and `extends` resolution: what a schema cannot see.

The schema checks each file alone; linking checks them together: references to models,
providers and policies that do not exist (with "did you mean"), cycles through `extends`
or policy references (which would make routing loop), duplicate names, and budgets or
limits that contradict each other. Each problem is located in the file where it was
written. (Dead and shadowed rules are found by engine.compile.analysis, templates by
engine.compile.templates: both need compiled forms.)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from typing import Any

from engine.config.load import Document, join_path
from engine.config.project import ConfigSet, PolicyEntry
from engine.config.specs import ROUTE_FIELDS, KeySpec, PolicySpec, ProviderSpec, RouteSpec
from engine.errors import Diagnostic

_NESTED = frozenset(
    {
        "weights",
        "filters",
        "fallback",
        "retries",
        "timeouts",
        "breaker",
        "rate_limit",
        "budget",
        "cache",
        "template",
    }
)


def merge_route(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` wins field by field; nested sections (filters, budget, ...) merge key by key."""
    out = dict(base)
    for key, value in over.items():
        if key in _NESTED and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def route_fields(spec: RouteSpec) -> dict[str, Any]:
    """The route fields a spec set explicitly, as plain data (aliases, no defaults)."""
    data = spec.model_dump(exclude_unset=True, by_alias=True)
    return {k: v for k, v in data.items() if k in ROUTE_FIELDS}


def resolve(cs: ConfigSet) -> dict[str, PolicySpec]:
    """Each policy with `extends` applied (parent first; child rules before the parent's).

    Policies on an `extends` cycle or extending an unknown policy are left as written;
    `link` reports those.
    """
    resolved: dict[str, PolicySpec] = {}
    for name in cs.policies:
        resolved[name] = _resolved(name, cs.policies, set())
    return resolved


def _resolved(name: str, entries: dict[str, PolicyEntry], seen: set[str]) -> PolicySpec:
    spec = entries[name].spec
    parent = spec.extends
    if parent is None or parent not in entries or name in seen:
        return spec
    base = _resolved(parent, entries, seen | {name})
    data = base.model_dump(exclude_unset=True, by_alias=True)
    own = spec.model_dump(exclude_unset=True, by_alias=True)
    merged = merge_route({k: v for k, v in data.items() if k in ROUTE_FIELDS}, route_fields(spec))
    merged["rules"] = own.get("rules", []) + data.get("rules", [])
    for key in ("name", "description"):
        if key in own:
            merged[key] = own[key]
    return PolicySpec.model_validate(merged)


def link(cs: ConfigSet) -> list[Diagnostic]:
    """Every cross-reference problem in the loaded configuration."""
    found: list[Diagnostic] = []
    if cs.models is not None and cs.models_doc is not None:
        found += list(_check_models(cs))
    model_ids = set(cs.models.models) if cs.models else set()
    provider_ids = set(cs.models.providers) if cs.models else set()
    for entry in cs.policies.values():
        found += list(
            _check_policy_refs(
                entry, model_ids, provider_ids, set(cs.policies), cs.models is not None
            )
        )
    found += list(_check_cycles(cs))
    return found


def suggest(value: str, options: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(value, list(options), n=1, cutoff=0.5)
    return f"did you mean `{close[0]}`?" if close else None


def _check_models(cs: ConfigSet) -> Iterator[Diagnostic]:
    assert cs.models is not None and cs.models_doc is not None
    doc = cs.models_doc
    providers = cs.models.providers
    for model_id in cs.models.models:
        provider = model_id.split("/", 1)[0]
        if provider not in providers:
            path = join_path("models", model_id)
            hint = suggest(provider, providers)
            yield doc.diagnostic(
                path, f"unknown provider `{provider}` in model id `{model_id}`", hint=hint
            )
    for pid, spec in providers.items():
        path = join_path("providers", pid)
        t = spec.timeouts
        if t is not None:
            yield from _timeouts_contradict(
                doc, join_path(path, "timeouts"), t.connect_s, t.total_s, t.first_token_s
            )
        yield from _duplicate_keys(doc, path, spec)


def _duplicate_keys(doc: Document, path: str, spec: ProviderSpec) -> Iterator[Diagnostic]:
    """The same key twice in a pool would double-count its limits."""
    seen: set[str] = set()
    for i, entry in enumerate(spec.keys):
        value = entry.key if isinstance(entry, KeySpec) else entry
        if value and (value in seen or value == spec.api_key):
            where = join_path(join_path(path, "keys"), i)
            yield doc.diagnostic(where, "this key is already in the pool", severity="warning")
        seen.add(value)


def _timeouts_contradict(
    doc: Document, path: str, connect: float | None, total: float | None, first: float | None
) -> Iterator[Diagnostic]:
    if total is not None and connect is not None and connect > total:
        yield doc.diagnostic(path, f"connect_s {connect} is longer than total_s {total}")
    if total is not None and first is not None and first > total:
        yield doc.diagnostic(path, f"first_token_s {first} is longer than total_s {total}")


def _route_sections(spec: PolicySpec) -> Iterator[tuple[str, RouteSpec]]:
    yield "", spec
    for i, rule in enumerate(spec.rules):
        yield join_path("rules", i), rule


def _check_policy_refs(
    entry: PolicyEntry, models: set[str], providers: set[str], policies: set[str], have_models: bool
) -> Iterator[Diagnostic]:
    doc, spec = entry.doc, entry.spec
    if spec.extends is not None and spec.extends not in policies:
        yield doc.diagnostic(
            "extends", f"unknown policy `{spec.extends}`", hint=suggest(spec.extends, policies)
        )
    for base, route in _route_sections(spec):
        yield from _route_refs(doc, base, route, models, providers, policies, have_models)
        policy_ref = getattr(route, "policy", None)
        if policy_ref is not None:
            path = join_path(base, "policy")
            if policy_ref not in policies:
                yield doc.diagnostic(
                    path, f"unknown policy `{policy_ref}`", hint=suggest(policy_ref, policies)
                )
            overrides = set(route_fields(route))
            if overrides:
                names = ", ".join(sorted(overrides))
                yield doc.diagnostic(path, f"a rule that goes to a policy cannot also set {names}")
        yield from _route_contradictions(doc, base, route)


def _route_refs(
    doc: Document,
    base: str,
    route: RouteSpec,
    models: set[str],
    providers: set[str],
    policies: set[str],
    have_models: bool,
) -> Iterator[Diagnostic]:
    if have_models:
        yield from _model_refs(doc, join_path(base, "candidates"), route.candidates or [], models)
        if route.fallback is not None:
            yield from _model_refs(
                doc,
                join_path(join_path(base, "fallback"), "chain"),
                route.fallback.chain or [],
                models,
            )
        if route.filters is not None:
            fpath = join_path(base, "filters")
            yield from _model_refs(
                doc, join_path(fpath, "exclude_models"), route.filters.exclude_models or [], models
            )
            for key in ("providers", "exclude_providers"):
                for i, pid in enumerate(getattr(route.filters, key) or []):
                    if pid not in providers:
                        path = join_path(join_path(fpath, key), i)
                        yield doc.diagnostic(
                            path, f"unknown provider `{pid}`", hint=suggest(pid, providers)
                        )
        for mid in route.candidate_weights or {}:
            if mid not in models:
                path = join_path(join_path(base, "candidate_weights"), mid)
                yield doc.diagnostic(path, f"unknown model `{mid}`", hint=suggest(mid, models))
    if route.fallback is not None and route.fallback.policy is not None:
        ref = route.fallback.policy
        if ref not in policies:
            path = join_path(join_path(base, "fallback"), "policy")
            yield doc.diagnostic(path, f"unknown policy `{ref}`", hint=suggest(ref, policies))


def _model_refs(doc: Document, path: str, ids: list[str], models: set[str]) -> Iterator[Diagnostic]:
    seen: set[str] = set()
    for i, mid in enumerate(ids):
        item = join_path(path, i)
        if mid not in models:
            yield doc.diagnostic(item, f"unknown model `{mid}`", hint=suggest(mid, models))
        elif mid in seen:
            yield doc.diagnostic(item, f"`{mid}` is listed twice")
        seen.add(mid)


def _route_contradictions(doc: Document, base: str, route: RouteSpec) -> Iterator[Diagnostic]:
    b = route.budget
    if b is not None:
        path = join_path(base, "budget")
        if b.daily_usd is not None and b.monthly_usd is not None and b.daily_usd > b.monthly_usd:
            yield doc.diagnostic(
                path, f"daily_usd {b.daily_usd} exceeds monthly_usd {b.monthly_usd}"
            )
        cap = min((x for x in (b.daily_usd, b.monthly_usd) if x is not None), default=None)
        if cap is not None and b.max_cost_per_request is not None and b.max_cost_per_request > cap:
            yield doc.diagnostic(
                path,
                f"max_cost_per_request {b.max_cost_per_request} exceeds the workspace limit {cap}",
            )
    r = route.retries
    if (
        r
        and r.backoff_initial_s is not None
        and r.backoff_max_s is not None
        and (r.backoff_initial_s > r.backoff_max_s)
    ):
        path = join_path(base, "retries")
        yield doc.diagnostic(
            path,
            f"backoff_initial_s {r.backoff_initial_s} exceeds backoff_max_s {r.backoff_max_s}",
        )
    t = route.timeouts
    if t is not None:
        yield from _timeouts_contradict(
            doc, join_path(base, "timeouts"), t.connect_s, t.total_s, t.first_token_s
        )
    f = route.filters
    if f is not None and f.providers and f.exclude_providers:
        both = sorted(set(f.providers) & set(f.exclude_providers))
        if both:
            path = join_path(base, "filters")
            yield doc.diagnostic(path, f"providers both allowed and excluded: {', '.join(both)}")
    if (
        route.weights is not None
        and route.weights.cost + route.weights.quality + route.weights.latency == 0
    ):
        yield doc.diagnostic(join_path(base, "weights"), "all balanced weights are zero")
    if route.rate_limit is not None and t is not None and t.total_s is not None:
        wait = route.rate_limit.max_wait_ms
        if route.rate_limit.on_limited != "skip" and wait is not None and wait / 1000 > t.total_s:
            path = join_path(base, "rate_limit")
            yield doc.diagnostic(
                path, f"max_wait_ms {wait} is longer than timeouts.total_s {t.total_s}"
            )


def _policy_edges(entry: PolicyEntry) -> Iterator[tuple[str, str]]:
    """(policy reference, json path) for every place routing can move to another policy."""
    spec = entry.spec
    for base, route in _route_sections(spec):
        if route.fallback is not None and route.fallback.policy is not None:
            yield route.fallback.policy, join_path(join_path(base, "fallback"), "policy")
        ref = getattr(route, "policy", None)
        if ref is not None:
            yield ref, join_path(base, "policy")


def _check_cycles(cs: ConfigSet) -> Iterator[Diagnostic]:
    entries = cs.policies
    extends = {
        n: ([(e.spec.extends, "extends")] if e.spec.extends else []) for n, e in entries.items()
    }
    refs = {n: list(_policy_edges(e)) for n, e in entries.items()}
    yield from _cycles(entries, extends, "extends")
    yield from _cycles(entries, refs, "policy references")


def _cycles(
    entries: dict[str, PolicyEntry], graph: dict[str, list[tuple[str, str]]], what: str
) -> Iterator[Diagnostic]:
    reported: set[frozenset[str]] = set()
    for start in sorted(graph):
        for cycle, path in _find_cycles(start, graph):
            key = frozenset(cycle)
            if key in reported:
                continue
            reported.add(key)
            loop = " -> ".join([*cycle, cycle[0]])
            yield entries[cycle[0]].doc.diagnostic(path, f"cycle in {what}: {loop}")


def _find_cycles(
    start: str, graph: dict[str, list[tuple[str, str]]]
) -> Iterator[tuple[list[str], str]]:
    stack: list[tuple[str, list[str], str]] = [(start, [start], "")]
    while stack:
        node, trail, first_path = stack.pop()
        for nxt, path in graph.get(node, []):
            step_path = first_path or path
            if nxt == start:
                yield trail, step_path
            elif nxt not in trail and nxt in graph:
                stack.append((nxt, [*trail, nxt], step_path))
