"""Properties of the attempt loop over random plans and random failure scripts."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import EngineError
from engine.errors import (
    AllCandidatesFailedError,
    AuthenticationError,
    ContextWindowExceededError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
    UnavailableError,
)
from engine.plan.values import RetryPlan, StrategyPlan

from .doubles import ScriptedAdapter, ask, make_plan, model, provider, rig, route

ERRORS = [
    lambda: UnavailableError("down"),
    lambda: ProviderTimeoutError("slow"),
    lambda: RateLimitedError("busy", retry_after=1.0),
    lambda: AuthenticationError("bad key"),
    lambda: ContextWindowExceededError("long"),
]

candidate = st.fixed_dictionaries(
    {
        "vision": st.booleans(),
        "enabled": st.booleans(),
        "window": st.sampled_from([4000, 8000, 32000]),
        "script": st.lists(st.sampled_from(["ok", 0, 1, 2, 3, 4]), min_size=1, max_size=4),
        "price": st.sampled_from([0.0, 1.0, 10.0, 100.0]),
    }
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cands=st.lists(candidate, min_size=1, max_size=5),
    max_attempts=st.integers(1, 6),
    max_retries=st.integers(0, 3),
    need_vision=st.booleans(),
    budget=st.one_of(st.none(), st.sampled_from([0.0001, 0.001, 0.01])),
    strategy=st.sampled_from(["ordered", "round_robin", "least_loaded", "latency_optimized"]),
    streaming=st.booleans(),
)
def test_never_calls_an_ineligible_candidate_and_never_exceeds_max_attempts(
    cands: list[dict[str, object]],
    max_attempts: int,
    max_retries: int,
    need_vision: bool,
    budget: float | None,
    strategy: str,
    streaming: bool,
) -> None:
    """Calls go only to enabled, capable, affordable candidates, never more than max_attempts."""
    models, providers, scripts = [], [], {}
    for i, c in enumerate(cands):
        caps = ("chat", "vision") if c["vision"] else ("chat",)
        price = float(c["price"])  # type: ignore[arg-type]
        models.append(model(f"p{i}/m{i}", caps=caps, window=int(c["window"]), price=(price, price)))  # type: ignore[call-overload]
        providers.append(provider(f"p{i}", enabled=bool(c["enabled"])))
        scripts[f"m{i}"] = [s if s == "ok" else ERRORS[s]() for s in c["script"]]  # type: ignore[index, union-attr]
    plan = make_plan(
        models,
        [
            route(
                "p",
                [m.id for m in models],
                strategy=StrategyPlan(strategy),  # type: ignore[arg-type]
                max_attempts=max_attempts,
                retry=RetryPlan(max_retries=max_retries),
            )
        ],
        providers,
    )
    adapter = ScriptedAdapter(scripts)
    r = rig(plan, adapter)
    request = ask(capabilities=["vision"] if need_vision else [], budget_usd=budget, max_tokens=50)

    async def go() -> object:
        try:
            if streaming:
                events = [e async for e in r.engine.astream(request, policy="p")]
                return events[-1]
            return await r.engine.arun(request, policy="p")
        except EngineError as exc:
            return exc

    result = asyncio.run(go())

    def affordable(m: object) -> bool:
        worst = m.cost(1, 50)  # type: ignore[attr-defined]
        return budget is None or (worst is not None and worst <= budget)

    eligible = {
        m.upstream
        for m, p in zip(models, providers, strict=True)
        if p.enabled and (not need_vision or "vision" in m.capabilities) and affordable(m)
    }
    assert set(adapter.called()) <= eligible
    assert len(adapter.calls) <= max_attempts
    assert r.limiter.open == 0  # every lease settled
    if not isinstance(result, EngineError):
        assert adapter.called()[-1] == result.model.split("/")[1]  # type: ignore[attr-defined]
    elif isinstance(result, ProviderError) and not isinstance(result, AllCandidatesFailedError):
        raise AssertionError(f"a bare ProviderError escaped: {result!r}")
