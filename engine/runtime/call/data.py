"""The call's data: what one engine call knows about itself, and the trail it leaves.

`CallData` is fixed when the call starts (the plan it runs on, the request, its features,
its id and start time, the budget cap and workspace it is charged to, and that workspace's
budget, resolved once: engine.plan.wallets). `Trail` is what the
call has seen so far: one `AttemptRecord` per try or skip, in order, and why candidates
were eliminated; the final error and every response are built from it.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

from engine.errors import AttemptRecord
from engine.frozen import builder
from engine.messages import Request
from engine.plan.compiled import Plan
from engine.plan.values import Features
from engine.plan.wallets import Wallet
from engine.runtime.clients import ClientBudget, ClientBudgets

#: Request ids: a per-process random prefix and a counter (unique, and cheaper than uuid4).
_ID_PREFIX = os.urandom(4).hex()
_IDS = itertools.count()


@dataclass(frozen=True, slots=True)
class CallData:
    """One call's fixed facts, built once per call (by name) and read by every part of
    it: slots, which read about three times faster than a named tuple's fields."""

    plan: Plan  # the plan the call started on (a reload does not change it mid-call)
    request: Request
    features: Features
    streaming: bool
    request_id: str
    started: float  # monotonic seconds
    budget_usd: float | None  # the smaller of the request's and the rules' cap, if any
    workspace: str  # who is charged: budgets and ledger rows
    client: str | None  # the calling API key's label (metadata `client`, set by the server)
    wallet: Wallet  # the workspace's budget: caps and the name its spend is booked under
    client_budget: ClientBudget | None  # the calling key's money limits, if it has any
    choices: int  # how many choices the request asks for (n), at least 1: all are output


# Built by name without the dict a class call packs keywords into (engine/frozen.py).
_call_data = builder(CallData)


def call_data(
    plan: Plan,
    request: Request,
    features: Features,
    streaming: bool,
    now: float,
    clients: ClientBudgets | None = None,
) -> CallData:
    """The data of a call starting `now` (monotonic), with a fresh request id; `clients`
    gives the calling key's budget."""
    mine, theirs = features.budget_usd, request.budget_usd
    budget = mine if theirs is None else theirs if mine is None else min(mine, theirs)
    metadata = request.metadata  # read once (a pydantic field)
    workspace, client = features.workspace or "default", None
    if metadata:  # most requests carry none: nothing to look up (~2k instructions a call)
        workspace = features.workspace or str(metadata.get("workspace", "default"))
        client = _label(metadata.get("client"))
    return _call_data(
        plan=plan,
        request=request,
        features=features,
        streaming=streaming,
        request_id=f"{_ID_PREFIX}{next(_IDS):010x}",
        started=now,
        budget_usd=budget,
        workspace=workspace,
        client=client,
        wallet=plan.wallets.of(workspace),
        client_budget=None if client is None or clients is None else clients.of(client),
        choices=request.n or 1,  # validated >= 1 when given
    )


def _label(value: object) -> str | None:
    """A client label is text; anything else a caller put under `client` is not one."""
    return value if isinstance(value, str) and value else None


class Trail:
    """Every try and skip of one call, in order, and why candidates were eliminated."""

    __slots__ = ("attempts", "eliminated")

    def __init__(self) -> None:
        self.attempts: list[AttemptRecord] = []
        self.eliminated: dict[str, str] = {}

    def skip(self, provider: str, model: str, outcome: str, why: str, index: int) -> None:
        """A candidate passed over without a network call, with the reason."""
        self.eliminated[model] = why
        self.attempts.append(
            AttemptRecord(
                provider=provider, model=model, outcome=outcome, error=why, fallback_index=index
            )
        )

    def calls(self) -> list[AttemptRecord]:
        """The records of tries that reached a provider (skips carry no key)."""
        return [a for a in self.attempts if a.key_id is not None]
