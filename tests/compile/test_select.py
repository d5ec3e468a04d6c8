"""select(): tree walk, per-request checks and each strategy's order, on a small registry."""

from __future__ import annotations

import pytest

from engine.compile import build_plan_from_data
from engine.errors import ConfigError, NoCandidateError, UnknownPolicyError
from engine.plan import select
from engine.plan.values import Features

from .conftest import ENV, MODELS


def plan_of(**routes):
    return build_plan_from_data(MODELS, routes, env=ENV)


def ids(sel):
    return [s.model.id for s in sel.ranked]


def test_cost_optimized_ranks_by_estimated_cost_of_this_request():
    """cost_optimized orders by (input * in_price + output * out_price) for the request's size."""
    plan = plan_of(
        p={"strategy": "cost_optimized", "candidates": ["cloud/top", "cloud/mid", "cloud/cheap"]}
    )
    sel = select(plan, "p", Features(input_tokens=1000, output_tokens=100))
    assert ids(sel) == ["cloud/cheap", "cloud/mid", "cloud/top"]
    assert sel.ranked[0].est_cost_usd == pytest.approx((1000 * 0.1 + 100 * 0.4) / 1e6)
    assert sel.ranked[0].worst_cost_usd == sel.ranked[0].est_cost_usd  # the cap is the worst case


def test_expected_output_defaults_to_route_default_max_tokens():
    """Without max_tokens, estimated cost uses default_max_tokens; worst case uses max_output."""
    plan = plan_of(
        p={"strategy": "ordered", "candidates": ["cloud/mid"], "default_max_tokens": 200}
    )
    (s,) = select(plan, "p", Features(input_tokens=0)).ranked
    assert s.est_cost_usd == pytest.approx(200 * 4.0 / 1e6)
    assert s.worst_cost_usd == pytest.approx(4096 * 4.0 / 1e6)


def test_quality_latency_and_ordered_strategies():
    """quality_optimized: best first; latency_optimized: fastest prior first; ordered: as written."""
    cands = ["cloud/mid", "cloud/top", "cloud/cheap"]
    plan = plan_of(
        q={"strategy": "quality_optimized", "candidates": cands},
        l={"strategy": "latency_optimized", "candidates": cands},
        o={"strategy": "ordered", "candidates": cands},
    )
    f = Features(input_tokens=10)
    assert ids(select(plan, "q", f)) == ["cloud/top", "cloud/mid", "cloud/cheap"]
    assert ids(select(plan, "l", f)) == ["cloud/cheap", "cloud/mid", "cloud/top"]
    assert ids(select(plan, "o", f)) == cands


def test_local_first_then_cheapest():
    """local_first puts local models first, then remote ones by estimated cost."""
    plan = plan_of(
        p={
            "strategy": "local_first",
            "candidates": ["cloud/top", "mock/tiny", "cloud/cheap", "mock/big"],
        }
    )
    assert ids(select(plan, "p", Features(input_tokens=10))) == [
        "mock/tiny",
        "mock/big",
        "cloud/cheap",
        "cloud/top",
    ]


def test_capability_match_prefers_the_closest_fit():
    """capability_match prefers models with the fewest capabilities beyond what is required."""
    plan = plan_of(
        p={"strategy": "capability_match", "candidates": ["cloud/top", "cloud/mid", "cloud/cheap"]}
    )
    assert ids(select(plan, "p", Features(capabilities=frozenset({"tools"}))))[0] == "cloud/cheap"
    assert ids(select(plan, "p", Features(capabilities=frozenset({"vision"})))) == [
        "cloud/mid",
        "cloud/top",
    ]


def test_balanced_blends_and_weights_shift_the_winner():
    """balanced with all weight on quality picks the best; all weight on cost picks the cheapest."""
    cands = ["cloud/cheap", "cloud/mid", "cloud/top"]
    plan = plan_of(
        q={
            "strategy": "balanced",
            "candidates": cands,
            "weights": {"cost": 0, "quality": 1, "latency": 0},
        },
        c={
            "strategy": "balanced",
            "candidates": cands,
            "weights": {"cost": 1, "quality": 0, "latency": 0},
        },
    )
    f = Features(input_tokens=500)
    assert ids(select(plan, "q", f))[0] == "cloud/top"
    assert ids(select(plan, "c", f))[0] == "cloud/cheap"
    scores = [s.score for s in select(plan, "q", f).ranked]
    assert scores == sorted(scores, reverse=True)


def test_weighted_orders_by_weight_and_keeps_weights_for_runtime():
    """weighted exposes candidate weights in the plan and orders statically by weight."""
    plan = plan_of(
        p={
            "strategy": "weighted",
            "candidates": ["cloud/cheap", "cloud/mid"],
            "candidate_weights": {"cloud/mid": 9},
            "seed": 5,
        }
    )
    sel = select(plan, "p", Features())
    assert ids(sel) == ["cloud/mid", "cloud/cheap"]
    assert dict(sel.route.strategy.candidate_weights) == {"cloud/mid": 9}
    assert sel.route.strategy.seed == 5


def test_request_checks_eliminate_with_reasons():
    """Missing capability, small context and budget each eliminate a candidate, with the reason."""
    plan = plan_of(
        p={"strategy": "cost_optimized", "candidates": ["mock/tiny", "cloud/cheap", "cloud/top"]}
    )
    sel = select(
        plan, "p", Features(input_tokens=6000, capabilities=frozenset({"chat"}), budget_usd=0.02)
    )
    reasons = dict(sel.eliminated)
    assert reasons["mock/tiny"] == "context window 4000 < 6000 tokens needed"
    assert reasons["cloud/top"].startswith("worst-case cost $")
    assert ids(sel) == ["cloud/cheap"]
    sel = select(plan, "p", Features(capabilities=frozenset({"tools", "json"})))
    assert dict(sel.eliminated)["mock/tiny"] == "missing capability: json, tools"


def test_static_filters_and_disabled_providers_are_listed():
    """Compile-time filter eliminations and disabled providers show up in every selection."""
    plan = plan_of(
        p={
            "strategy": "quality_optimized",
            "filters": {"min_quality": 0.7, "exclude_models": ["cloud/mid"]},
        }
    )
    reasons = dict(select(plan, "p", Features()).eliminated)
    assert reasons["cloud/mid"] == "filters.exclude_models: excluded"
    assert reasons["cloud/cheap"] == "filters.min_quality: 0.6 < 0.7"
    assert reasons["off/claude"] == "provider disabled: OFF_KEY is not set"
    assert "cloud/top" not in reasons
    assert "mock/big" not in reasons  # mock models join a policy only when listed


def test_no_candidate_error_lists_reasons():
    """When every candidate is eliminated, NoCandidateError carries each model's reason."""
    plan = plan_of(p={"strategy": "ordered", "candidates": ["mock/tiny"]})
    with pytest.raises(NoCandidateError) as err:
        select(plan, "p", Features(capabilities=frozenset({"vision"})))
    assert err.value.eliminated == {"mock/tiny": "missing capability: vision"}


def test_unknown_policy():
    """Selecting a policy that does not exist raises UnknownPolicyError."""
    with pytest.raises(UnknownPolicyError):
        select(plan_of(p={"strategy": "ordered"}), "nope", Features())


def test_fallback_chain_checked_deduplicated_and_separate():
    """The explicit chain is checked per request, excludes ranked models and keeps its order."""
    plan = plan_of(
        p={
            "strategy": "ordered",
            "candidates": ["cloud/mid"],
            "fallback": {
                "chain": ["cloud/mid", "mock/tiny", "mock/big", "off/claude"],
                "policy": "q",
                "max_attempts": 7,
            },
        },
        q={"strategy": "ordered"},
    )
    sel = select(plan, "p", Features(input_tokens=5000))
    assert [s.model.id for s in sel.chain] == ["mock/big"]
    reasons = dict(sel.eliminated)
    assert reasons["mock/tiny"] == "fallback chain: context window 4000 < 5000 tokens needed"
    assert reasons["off/claude"] == "provider disabled: OFF_KEY is not set"
    assert sel.route.chain == ("mock/tiny", "mock/big")
    assert (sel.route.fallback_policy, sel.route.max_attempts) == ("q", 7)


def test_rules_first_match_in_order_and_goto():
    """The first matching rule decides; `policy:` hands over to another policy's tree."""
    plan = plan_of(
        p={
            "strategy": "ordered",
            "candidates": ["cloud/cheap"],
            "rules": [
                {"name": "code", "when": {"feature": "task_type", "eq": "code"}, "policy": "coder"},
                {
                    "name": "long",
                    "when": {"feature": "input_tokens", "gt": 10000},
                    "candidates": ["mock/big"],
                },
                {
                    "name": "eu",
                    "when": {"feature": "metadata.region", "in": ["eu"]},
                    "candidates": ["mock/tiny"],
                },
            ],
        },
        coder={"strategy": "quality_optimized", "filters": {"capabilities": ["code"]}},
    )
    sel = select(plan, "p", Features(task_type="code", input_tokens=20000))
    assert (sel.policy, sel.rule) == ("coder", None)
    assert sel.path[0].startswith("p: rule `code` matched") and sel.path[1] == "-> policy `coder`"
    assert ids(sel)[0] == "cloud/top"
    assert select(plan, "p", Features(input_tokens=20000, metadata={"region": "eu"})).rule == "long"
    assert select(plan, "p", Features(metadata={"region": "eu"})).rule == "eu"
    default = select(plan, "p", Features())
    assert default.rule is None and ids(default) == ["cloud/cheap"]


def test_rule_overrides_merge_over_the_policy():
    """A rule's sections merge key by key over the policy's: budget keeps unset fields."""
    plan = plan_of(
        p={
            "strategy": "ordered",
            "budget": {"daily_usd": 5, "max_cost_per_request": 1},
            "rules": [
                {
                    "when": {"feature": "workspace", "eq": "w"},
                    "budget": {"max_cost_per_request": 0.5},
                }
            ],
        }
    )
    route = select(plan, "p", Features(workspace="w")).route
    assert (route.budget.daily_usd, route.budget.max_cost_per_request) == (5, 0.5)


def test_extends_inherits_and_overrides():
    """`extends` inherits the parent's sections and rules; the child's own fields win."""
    plan = plan_of(
        base={
            "strategy": "cost_optimized",
            "retries": {"max_retries": 4},
            "cache": {"enabled": True},
            "rules": [
                {
                    "name": "big",
                    "when": {"feature": "input_tokens", "gt": 100},
                    "candidates": ["mock/big"],
                }
            ],
        },
        child={"extends": "base", "cache": {"ttl_s": 5}, "filters": {"min_quality": 0.5}},
    )
    default = select(plan, "child", Features())
    assert default.route.strategy.name == "cost_optimized"
    assert default.route.retry.max_retries == 4
    assert (default.route.cache.enabled, default.route.cache.ttl_s) == (True, 5)
    assert all(s.model.quality >= 0.5 for s in default.ranked)
    assert select(plan, "child", Features(input_tokens=500)).rule == "big"


def test_invalid_data_raises_config_error_with_every_problem():
    """build_plan_from_data raises ConfigError listing all errors, not just the first."""
    with pytest.raises(ConfigError) as err:
        build_plan_from_data(MODELS, {"p": {"strategy": "nope", "fallbak": 1}}, env=ENV)
    messages = [d.message for d in err.value.diagnostics]
    assert any("unknown key `fallbak`" in m for m in messages)
    assert any("`nope` is not one of" in m for m in messages)


def test_plan_sections_resolve_every_default():
    """Unset sections take the plan's defaults; set fields override just those fields."""
    plan = plan_of(
        p={
            "strategy": "ordered",
            "retries": {"retry_on": ["timeout"]},
            "timeouts": {"total_s": 9},
            "rate_limit": {"on_limited": "skip"},
        }
    )
    route = select(plan, "p", Features()).route
    assert route.retry.retry_on == frozenset({"timeout"}) and route.retry.max_retries == 2
    assert (route.timeouts.total_s, route.timeouts.connect_s) == (9, 5.0)
    assert (route.rate_limit.on_limited, route.rate_limit.max_wait_ms) == ("skip", 2000)
    assert route.breaker.failures == 5 and route.cache.enabled is False and route.template is None


def test_selection_values_are_ordinary_immutable_values():
    """Scored/Selection built on the fast path equal normally built ones and stay immutable."""
    from engine.plan.values import Scored, Selection

    plan = plan_of(p={"strategy": "cost_optimized", "candidates": ["cloud/cheap"]})
    sel = select(plan, "p", Features(input_tokens=100, output_tokens=10))
    (s,) = sel.ranked
    assert s == Scored(plan.models["cloud/cheap"], s.score, s.est_cost_usd, s.worst_cost_usd)
    assert type(s) is Scored and s.est_cost_usd == s.model.cost(100, 10)
    assert sel == Selection(*sel) and sel._replace(rule="x").rule == "x"
    with pytest.raises(AttributeError):
        s.score = 1.0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        sel.rule = "x"  # type: ignore[misc]


def test_mock_joins_only_when_listed_unless_implicit():
    """Mock models never join a policy implicitly (they would always be the cheapest)."""
    plan = plan_of(p={"strategy": "cost_optimized"})
    assert all(not s.model.id.startswith("mock/") for s in select(plan, "p", Features()).ranked)
    models = {
        **MODELS,
        "providers": {**MODELS["providers"], "mock": {"protocol": "mock", "implicit": True}},
    }
    plan = build_plan_from_data(models, {"p": {"strategy": "cost_optimized"}}, env=ENV)
    assert select(plan, "p", Features()).ranked[0].model.id.startswith("mock/")


def test_empty_selection_hands_over_to_the_fallback_policy():
    """With nothing eligible but a fallback policy, select returns an empty ranking instead of raising."""
    plan = plan_of(
        p={"strategy": "ordered", "candidates": ["off/claude"], "fallback": {"policy": "q"}},
        q={"strategy": "ordered", "candidates": ["mock/big"]},
    )
    sel = select(plan, "p", Features())
    assert (sel.ranked, sel.chain, sel.route.fallback_policy) == ((), (), "q")
    assert dict(sel.eliminated)["off/claude"].startswith("provider disabled")


def test_route_with_only_disabled_providers_is_a_warning():
    """A route whose every candidate is disabled, with no chain or fallback, warns at compile time."""
    from engine.compile.compiler import check_config
    from engine.config.project import load_data

    _, found = check_config(
        load_data(MODELS, {"p": {"strategy": "ordered", "candidates": ["off/claude"]}}, env=ENV),
        ENV,
    )
    (w,) = [d for d in found if d.file == "<memory>:routes/p"]
    assert w.severity == "warning"
    assert w.message == "every candidate's provider is disabled: OFF_KEY is not set"
