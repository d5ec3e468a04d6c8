"""Provider health as a caller sees it: healthy, degraded, open or disabled, with a reason.

    disabled   the plan disabled the provider, or every one of its keys was rejected (401)
    open       the provider's circuit breaker is open (calls are refused without a request)
    degraded   a model breaker is open or half-open, a key was rejected, or recent errors
               are frequent; or an active probe failed
    healthy    none of the above

Passive by default (no network); `probe=True` also opens a connection to each provider
through its adapter's `warm`, which reaches the upstream without spending tokens.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from engine.endpoints import Endpoint
from engine.errors import redact
from engine.plan.values import Plan, ProviderPlan
from engine.runtime.clock import Clock
from engine.runtime.services import Services

#: Error rate over the recent window above which a provider reads as degraded.
DEGRADED_ERROR_RATE = 0.25


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


def passive(provider: ProviderPlan, plan: Plan, svc: Services) -> dict[str, Any]:
    """The status of one provider from live state alone (traffic figures: `detail`)."""
    if not provider.enabled:
        return _status("disabled", provider.disabled_reason or "disabled in configuration")
    if provider.keys and not svc.good_keys(provider):
        return _status("disabled", "every key was rejected by the provider (401)")
    breaker = svc.breakers.state(provider.id)
    if breaker == "open":
        last = svc.breakers.last_error(provider.id)
        return _status("open", f"circuit breaker open after repeated {last or 'failures'}")
    reasons = _degradations(provider, plan, svc, breaker)
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


async def probe(
    provider: ProviderPlan, plan: Plan, svc: Services, warm: Callable[[Endpoint], Awaitable[None]]
) -> dict[str, Any]:
    """Passive status, then an active connection attempt for providers not already out."""
    status = passive(provider, plan, svc)
    if status["status"] in ("disabled", "open"):
        return status
    try:
        await warm(endpoint_for(provider, plan, svc))
    except Exception as exc:  # any failure to connect is what the probe reports
        reason = redact(f"probe failed: {type(exc).__name__}: {exc}")
        return {**status, "status": "degraded", "reason": reason}
    return status


class Pings:
    """Keep-alive and probe pings per provider: how many, how many failed, when the last.

    `Engine.warm` (and its keep-alive loop) and `health(probe=True)` record here, so
    `health(detail=True)` can say when each provider was last reached and how often not.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._log: dict[str, list[float]] = {}  # provider -> [total, failures, last wall time]

    def record(self, provider: str, ok: bool) -> None:
        entry = self._log.setdefault(provider, [0, 0, 0.0])
        entry[0] += 1
        entry[1] += 0 if ok else 1
        entry[2] = self._clock.time()

    def view(self, provider: str) -> dict[str, Any]:
        total, failures, last = self._log.get(provider, [0, 0, 0.0])
        seen = total > 0
        return {
            "last_ping": last if seen else None,
            "seconds_since_ping": self._clock.time() - last if seen else None,
            "total_pings": int(total),
            "ping_failures": int(failures),
            "ping_failure_rate": failures / total if seen else 0.0,
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
