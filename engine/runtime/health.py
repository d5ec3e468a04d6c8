"""Provider health as a caller sees it, from evidence: breaker, pings and live error rate.

    disabled   the plan disabled the provider, or every one of its keys was rejected (401)
    open       the provider's circuit breaker is open (calls are refused without a request)
    unhealthy  its latest ping failed: the upstream could not be reached on a new connection
    degraded   a model breaker is open or half-open, a key was rejected, recent errors are
               frequent, or recent pings failed often (though the latest one succeeded)
    healthy    none of the above

A ping is the adapter's `warm`, which for HTTP providers always opens a fresh connection
(TCP, proxy and TLS handshakes: pool.py's `ping`), so an idle keep-alive socket to an
upstream that has since stopped never counts as success; it spends no tokens. `Engine.warm`
and its keep-alive loop ping, and so does `health(probe=True)`; every ping is recorded in
`Pings`, and the plain `health()` reads that record with the breakers and error rates.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from engine.clock import Clock
from engine.endpoints import Endpoint
from engine.plan.compiled import Plan
from engine.plan.values import ProviderPlan
from engine.runtime.services import Services
from engine.secrets import redact

#: Error rate over the recent window above which a provider reads as degraded.
DEGRADED_ERROR_RATE = 0.25
#: How many recent pings the failure rate is taken over.
PING_WINDOW = 20

Warm = Callable[[Endpoint], Awaitable[None]]


def endpoint_for(provider: ProviderPlan, plan: Plan, svc: Services) -> Endpoint:
    """An endpoint reaching the provider with its first usable key and first model."""
    keys = svc.good_keys(provider)
    key = keys[0] if keys else None
    model = next((m for m in plan.models.values() if m.provider == provider.id), None)
    return Endpoint(
        provider=provider.id,
        protocol=provider.protocol,
        base_url=provider.base_url,
        upstream_model=model.upstream if model else "",
        api_key=key.secret if key else None,
        key_id=key.id if key else "",
        timeouts=provider.timeouts,
        options=provider.options,
        pool_size=provider.pool_size,
    )


def passive(
    provider: ProviderPlan, plan: Plan, svc: Services, pings: Pings | None = None
) -> dict[str, Any]:
    """The status of one provider from live state and, given `pings`, the ping record
    (traffic figures: `detail`)."""
    if not provider.enabled:
        return _status("disabled", provider.disabled_reason or "disabled in configuration")
    if provider.keys and not svc.good_keys(provider):
        return _status("disabled", "every key was rejected by the provider (401)")
    breaker = svc.breakers.state(provider.id)
    if breaker == "open":
        last = svc.breakers.last_error(provider.id)
        return _status("open", f"circuit breaker open after repeated {last or 'failures'}")
    failing = pings.failing(provider.id) if pings is not None else None
    if failing is not None:
        return _status("unhealthy", failing)
    reasons = _degradations(provider, plan, svc, breaker)
    rate = pings.recent_failure_rate(provider.id) if pings is not None else 0.0
    if rate > DEGRADED_ERROR_RATE:
        reasons.append(f"recent ping failure rate {rate:.0%}")
    return _status("degraded", "; ".join(reasons)) if reasons else _status("healthy", None)


def _degradations(provider: ProviderPlan, plan: Plan, svc: Services, breaker: str) -> list[str]:
    reasons = []
    if breaker == "half_open":
        reasons.append("circuit breaker half-open (probing)")
    models = [m.id for m in plan.models.values() if m.provider == provider.id]
    tripped = [m for m in models if svc.breakers.state(m) != "closed"]
    if tripped:
        reasons.append("breaker open for " + ", ".join(sorted(tripped)))
    if len(svc.good_keys(provider)) < len(provider.keys):
        reasons.append("some keys were rejected (401)")
    rate = svc.stats.recent_error_rate(provider.id)
    if rate > DEGRADED_ERROR_RATE:
        reasons.append(f"recent error rate {rate:.0%}")
    return reasons


def _status(status: str, reason: str | None) -> dict[str, Any]:
    return {"status": status, "reason": reason}


async def ping(
    provider: ProviderPlan, plan: Plan, svc: Services, warm: Warm, pings: Pings
) -> Exception | None:
    """Reach the provider once through its adapter's `warm` and record the outcome;
    returns what went wrong, or None."""
    try:
        await warm(endpoint_for(provider, plan, svc))
    except Exception as exc:  # any failure to reach it is what the ping reports
        pings.record(provider.id, False, redact(f"{type(exc).__name__}: {exc}"))
        return exc
    pings.record(provider.id, True)
    return None


async def probe(
    provider: ProviderPlan, plan: Plan, svc: Services, warm: Warm, pings: Pings
) -> dict[str, Any]:
    """Ping providers not already out (disabled, breaker open), then the status with it."""
    status = passive(provider, plan, svc, pings)
    if status["status"] in ("disabled", "open"):
        return status
    await ping(provider, plan, svc, warm, pings)
    return passive(provider, plan, svc, pings)


class _Record:
    """One provider's pings: totals, the recent outcomes, the latest failure's reason."""

    __slots__ = ("failures", "last", "last_error", "recent", "streak", "total")

    def __init__(self) -> None:
        self.total = 0
        self.failures = 0
        self.streak = 0  # failures in a row, up to the latest ping
        self.last = 0.0
        self.last_error: str | None = None
        self.recent: deque[bool] = deque(maxlen=PING_WINDOW)


class Pings:
    """Keep-alive and probe pings per provider: how many, how many failed, when the last.

    `Engine.warm` (and its keep-alive loop) and `health(probe=True)` record here, so
    `health()` can say a provider is unhealthy when its latest ping failed, and
    `health(detail=True)` when each provider was last reached and how often not.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._log: dict[str, _Record] = {}

    def record(self, provider: str, ok: bool, error: str | None = None) -> None:
        entry = self._log.get(provider)
        if entry is None:
            entry = self._log[provider] = _Record()
        entry.total += 1
        entry.failures += 0 if ok else 1
        entry.streak = 0 if ok else entry.streak + 1
        entry.last = self._clock.time()
        entry.recent.append(ok)
        if not ok:
            entry.last_error = error or "unreachable"

    def failing(self, provider: str) -> str | None:
        """Why the provider reads unhealthy (its latest ping failed), or None."""
        entry = self._log.get(provider)
        if entry is None or entry.streak == 0:
            return None
        times = "the latest ping" if entry.streak == 1 else f"the last {entry.streak} pings"
        return f"{times} failed: {entry.last_error}"

    def recent_failure_rate(self, provider: str) -> float:
        entry = self._log.get(provider)
        if entry is None or not entry.recent:
            return 0.0
        return entry.recent.count(False) / len(entry.recent)

    def view(self, provider: str) -> dict[str, Any]:
        entry = self._log.get(provider) or _Record()
        seen = entry.total > 0
        return {
            "last_ping": entry.last if seen else None,
            "seconds_since_ping": self._clock.time() - entry.last if seen else None,
            "total_pings": entry.total,
            "ping_failures": entry.failures,
            "ping_failure_rate": entry.failures / entry.total if seen else 0.0,
            "consecutive_ping_failures": entry.streak,
            "last_ping_error": entry.last_error,
        }


def detail(provider: str, stats: Mapping[str, Any], pings: Pings) -> dict[str, Any]:
    """Traffic figures (requests, error and success rate, latency) plus the ping record."""
    seen = stats.get(provider) or {}
    requests = int(seen.get("requests", 0))
    error_rate = float(seen.get("error_rate", 0.0))
    return {
        "requests": requests,
        "error_rate": error_rate,
        "success_rate": 1.0 - error_rate if requests else None,
        "latency_p50_ms": seen.get("latency_p50_ms"),
        **pings.view(provider),
    }


WarmFor = Callable[[str], Warm]  # protocol -> its adapter's warm


async def report(
    plan: Plan, svc: Services, pings: Pings, warm_for: WarmFor, probing: bool, detailed: bool
) -> dict[str, Any]:
    """Every provider's status and the overall one (Engine.health)."""
    if probing:
        found = await asyncio.gather(
            *(probe(p, plan, svc, warm_for(p.protocol), pings) for p in plan.providers.values())
        )
        providers = dict(zip(plan.providers, found, strict=True))
    else:
        providers = {pid: passive(p, plan, svc, pings) for pid, p in plan.providers.items()}
    if detailed:
        traffic = svc.stats.snapshot()["providers"]
        for pid, view in providers.items():
            view.update(detail(pid, traffic, pings))
    return {"status": _overall({v["status"] for v in providers.values()}), "providers": providers}


def _overall(states: set[str]) -> str:
    if not states & {"healthy", "degraded"}:
        return "unavailable"
    return "healthy" if states <= {"healthy", "disabled"} else "degraded"


async def warm_all(plan: Plan, svc: Services, pings: Pings, warm_for: WarmFor) -> dict[str, str]:
    """Ping every enabled provider: "ok" or why not, per provider (best effort, never raises)."""
    enabled = [p for p in plan.providers.values() if p.enabled]

    async def one(p: ProviderPlan) -> str:
        failed = await ping(p, plan, svc, warm_for(p.protocol), pings)
        return "ok" if failed is None else f"failed: {type(failed).__name__}"

    done = await asyncio.gather(*(one(p) for p in enabled))
    return dict(zip([p.id for p in enabled], done, strict=True))
