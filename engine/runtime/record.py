"""Calls made outside the engine, recorded as if the engine had made them.

A team that calls a provider directly somewhere (a script, another service) still wants one
picture of its spend: `Engine.record(...)` (and the server's `POST /v1/usage`) turns such a
call into what an engine call leaves behind: a stats attempt and request, a ledger row and
the workspace's budget spend, priced from the plan like any other call of that model.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.errors import RequestError, UnknownModelError
from engine.plan.compiled import Plan
from engine.runtime.services import Services
from engine.state.protocols import LedgerRow

_OUTCOME = re.compile(r"[a-z][a-z_]{0,39}")
_IDS = itertools.count(1)


@dataclass(frozen=True, slots=True)
class ExternalCall:
    """One call made elsewhere: which model, how many tokens, and how it went."""

    model: str
    input_tokens: int
    output_tokens: int
    latency_ms: float = 0.0
    workspace: str | None = None
    policy: str | None = None
    outcome: str = "ok"
    client: str | None = None

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> ExternalCall:
        """From a JSON object (POST /v1/usage); RequestError naming the field that is wrong."""
        unknown = set(data) - {f for f in cls.__slots__ if f != "client"}
        if unknown:
            raise RequestError(f"unknown field(s): {', '.join(sorted(unknown))}")
        model = data.get("model")
        if not isinstance(model, str) or not model:
            raise RequestError("`model` must be a configured `provider/name` model id")
        return cls(
            model,
            _count(data, "input_tokens"),
            _count(data, "output_tokens"),
            _number(data, "latency_ms"),
            _text(data, "workspace"),
            _text(data, "policy"),
            _text(data, "outcome") or "ok",
        )


def _count(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RequestError(f"`{name}` must be a non-negative integer, got {value!r}")
    return value


def _number(data: Mapping[str, Any], name: str) -> float:
    value = data.get(name, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise RequestError(f"`{name}` must be a non-negative number, got {value!r}")
    return float(value)


def _text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and (not isinstance(value, str) or not value or len(value) > 200):
        raise RequestError(f"`{name}` must be a non-empty string of at most 200 characters")
    return value


async def record(svc: Services, plan: Plan, call: ExternalCall) -> dict[str, Any]:
    """Stats, ledger and budget for one external call; returns what was recorded."""
    model = plan.models.get(call.model)
    if model is None:
        raise UnknownModelError(
            f"unknown model {call.model!r}: record() prices calls of configured models only"
        )
    if not _OUTCOME.fullmatch(call.outcome):
        raise RequestError(f"`outcome` must be 'ok' or an error kind, got {call.outcome!r}")
    ok = call.outcome == "ok"
    cost = model.cost(call.input_tokens, call.output_tokens) if ok else None
    workspace = call.workspace or "default"
    request_id = f"ext-{next(_IDS):010x}"
    svc.stats.attempt(
        model.provider, model.id, ok, call.latency_ms, cost, call.input_tokens, call.output_tokens
    )
    svc.stats.request(ok, cost, call.input_tokens, call.output_tokens)
    svc.ledger.record(
        LedgerRow(
            svc.clock.time(), workspace, call.policy, model.provider, model.id,
            call.input_tokens, call.output_tokens, cost, call.latency_ms, call.outcome, 0,
            request_id, False, call.client,
        )
    )  # fmt: skip
    if cost:  # spent already: the budget learns of it (no limit applies to the past)
        bucket = plan.wallets.of(workspace).bucket or svc.names.bucket(workspace)
        reservation = await svc.budget.reserve(bucket, cost, None, None)
        await svc.budget.settle(reservation, cost)
    return {
        "request_id": request_id,
        "model": model.id,
        "provider": model.provider,
        "workspace": workspace,
        "input_tokens": call.input_tokens,
        "output_tokens": call.output_tokens,
        "cost_usd": cost,
        "outcome": call.outcome,
    }
