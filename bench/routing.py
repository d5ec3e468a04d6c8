"""Routing benchmark: compile 500 models x 200 policies, and one decision on a 50-rule policy.

Run: `python -m bench.routing`. Targets (issue 2): compile < 1 s; one routing decision
(tree walk + ranking, no I/O) p50 <= 5 us, p99 <= 20 us. The baseline is a straightforward
interpreter over the specs (conditions walked recursively, candidates filtered and sorted per
request), measured in the same run, so the ratio shows what compiling buys.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from functools import partial
from typing import Any

from engine.compile import build_plan_from_data
from engine.messages import parse_request
from engine.plan import features_of, select
from engine.plan.compiled import Plan
from engine.plan.values import Features

PROVIDERS = 20
MODELS = 500
POLICIES = 200
RULES = 50
TASKS = ["code", "chat", "summarize", "translate", "extract", "classify", "math", "rag"]
STRATEGIES = ["cost_optimized", "quality_optimized", "balanced", "ordered", "latency_optimized"]


def registry(rng: random.Random) -> dict[str, Any]:
    providers = {
        f"p{i}": {
            "protocol": "openai",
            "base_url": f"http://127.0.0.1:{9000 + i}/v1",
            "api_key": "k",
        }
        for i in range(PROVIDERS)
    }
    caps = ["chat", "code", "tools", "vision", "json", "streaming", "long_context", "reasoning"]
    models = {}
    for i in range(MODELS):
        models[f"p{i % PROVIDERS}/m{i}"] = {
            "capabilities": sorted(rng.sample(caps, rng.randint(2, len(caps)))),
            "context_window": rng.choice([8192, 32768, 131072, 200000, 1000000]),
            "input_price": round(rng.uniform(0.05, 15), 3),
            "output_price": round(rng.uniform(0.1, 60), 3),
            "quality": round(rng.uniform(0.3, 0.98), 2),
            "latency_ms": rng.randint(100, 5000),
        }
    return {"providers": providers, "models": models}


def policy(rng: random.Random, model_ids: list[str], rules: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "strategy": rng.choice(STRATEGIES),
        "candidates": rng.sample(model_ids, 8),
        "filters": {"min_quality": 0.3},
        "rules": [],
    }
    for r in range(rules):
        if r % 5 == 4:
            when: dict[str, Any] = {"feature": "input_tokens", "gt": 1000 * (rules - r) + 5000}
        else:
            when = {
                "all": [
                    {"feature": "metadata.tenant", "eq": f"t{r}"},
                    {"feature": "task_type", "in": rng.sample(TASKS, 3)},
                ]
            }
        out["rules"].append(
            {
                "name": f"r{r}",
                "when": when,
                "strategy": rng.choice(STRATEGIES),
                "candidates": rng.sample(model_ids, 6),
            }
        )
    return out


def features(rng: random.Random, n: int) -> list[Features]:
    return [
        Features(
            task_type=rng.choice(TASKS),
            input_tokens=rng.choice([20, 200, 2000, 20000]),
            metadata={"tenant": f"t{rng.randint(0, 80)}"},
        )
        for _ in range(n)
    ]


def timed(fn: Any, items: list[Any]) -> list[float]:
    out = []
    clock = time.perf_counter_ns
    for item in items:
        t0 = clock()
        fn(item)
        out.append((clock() - t0) / 1000)
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def reference_decide(spec: dict[str, Any], models: dict[str, Any], f: Features) -> list[str]:
    """The baseline: interpret the route spec per request, the way a naive router would."""
    route = spec
    for rule in spec["rules"]:
        if _holds(rule["when"], f):
            route = {**spec, **{k: v for k, v in rule.items() if k not in ("when", "name")}}
            break
    cands = [
        m
        for m in route["candidates"]
        if models[m]["quality"] >= 0.3 and models[m]["context_window"] >= f.input_tokens
    ]
    if route["strategy"] == "cost_optimized":
        cands.sort(
            key=lambda m: (
                f.input_tokens * models[m]["input_price"] + 1024 * models[m]["output_price"]
            )
        )
    elif route["strategy"] == "quality_optimized":
        cands.sort(key=lambda m: -models[m]["quality"])
    return cands


def _holds(cond: dict[str, Any], f: Features) -> bool:
    if "all" in cond:
        return all(_holds(c, f) for c in cond["all"])
    feature = cond["feature"]
    value = f.metadata.get(feature[9:]) if feature.startswith("metadata.") else getattr(f, feature)
    if "eq" in cond:
        return bool(value == cond["eq"])
    if "in" in cond:
        return value in cond["in"]
    return value is not None and value > cond["gt"]


def main() -> None:
    rng = random.Random(7)
    models = registry(rng)
    ids = list(models["models"])
    routes = {f"pol{i}": policy(rng, ids, 10) for i in range(POLICIES - 1)}
    routes["big"] = policy(rng, ids, RULES)
    times, cpu = [], []
    for _ in range(3):
        t0, c0 = time.perf_counter(), time.process_time()
        plan: Plan = build_plan_from_data(models, routes, env={})
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    shown = ", ".join(f"{t * 1000:.0f}" for t in times)
    print(
        f"compile CPU time (what this process used, immune to other load): best {min(cpu) * 1000:.0f} ms"
    )
    print(
        f"compile {MODELS} models x {POLICIES} policies: best {min(times) * 1000:.0f} ms of [{shown}] ms (target < 1000 ms)"
    )

    feats = features(rng, 20000)
    gc.collect()
    gc.freeze()  # the plan is long-lived: keep it out of the collector's way, as a server would
    for f in feats[:2000]:  # warm up
        select(plan, "big", f)
    # The machine is shared, so each side runs in 5 rounds and the least disturbed round
    # (lowest p50) is reported; every round is printed too.
    # partial, not a lambda: the figure is the decision's, not an extra Python call's.
    rounds = [timed(partial(select, plan, "big"), feats) for _ in range(5)]
    bases = [
        timed(partial(reference_decide, routes["big"], models["models"]), feats) for _ in range(5)
    ]
    print(
        "select rounds p50/p99 us: "
        + ", ".join(f"{pct(r, 0.5):.2f}/{pct(r, 0.99):.2f}" for r in rounds)
    )
    ours = min(rounds, key=lambda r: pct(r, 0.5))
    base = min(bases, key=lambda r: pct(r, 0.5))
    p50, p99 = pct(ours, 0.5), pct(ours, 0.99)
    b50, b99 = pct(base, 0.5), pct(base, 0.99)
    print(
        f"select on a {RULES}-rule policy: p50 {p50:.2f} us, p99 {p99:.2f} us, mean {statistics.fmean(ours):.2f} us (target p50 <= 5, p99 <= 20)"
    )
    c0 = time.process_time()
    for f in feats:
        select(plan, "big", f)
    cpu_mean = (time.process_time() - c0) / len(feats) * 1e6
    print(f"select CPU time per decision (immune to waiting for the CPU): mean {cpu_mean:.2f} us")
    req = parse_request(
        {"messages": [{"role": "user", "content": "x" * 2000}], "metadata": {"task_type": "chat"}}
    )
    c0 = time.process_time()
    for _ in range(20000):
        features_of(req)
    print(f"features_of on a 2 kB prompt: {(time.process_time() - c0) / 20000 * 1e6:.2f} us CPU")
    print(
        f"baseline interpreter:            p50 {b50:.2f} us, p99 {b99:.2f} us  -> compiled is {b50 / p50:.1f}x faster at p50"
    )


if __name__ == "__main__":
    main()
