"""The candidate walk: every candidate of one call, in the order they are tried.

    primary target          its selection ranked, ordered by the live strategy
                            (dynamic strategies), then the route's chain, then its
                            fallback_policy (recursively, each policy once)
    request.fallbacks[i]    resolved only when the walk reaches it, same order inside

A leg (the primary target, or one request fallback) may spend at most its route's
`max_attempts` tries, and a candidate may be retried only with tries to spare: as many as
are left in the leg must stay for the candidates still waiting in it (its ranking, chain
and fallback_policy), so each of them gets its turn (`no_spare`). Each model is tried once
per call (later duplicates are dropped), and static eligibility needs no network: the
provider enabled and not ruled out for this call (credentials refused, unreachable), a
context window larger than one that already proved too small, a worst-case cost within
the request's and the route's per-request cap. Every candidate passed over for a reason
is recorded in the trail.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from engine.errors import NoCandidateError
from engine.frozen import builder
from engine.plan.strategies import DYNAMIC_STRATEGIES
from engine.plan.values import (
    ModelPlan,
    ProviderPlan,
    RoutePlan,
    Scored,
    Selection,
)
from engine.runtime.call.data import CallData, Trail
from engine.runtime.call.targets import PIN_ROUTE, Leg, check, resolve
from engine.runtime.services import Services


@dataclass(frozen=True, slots=True)
class Candidate:
    """One model to try, with the route whose retry/breaker/budget settings apply.

    A slotted dataclass, not a named tuple: every step of a try reads its fields, and a
    slot is read about three times faster than a named tuple's field (measured)."""

    scored: Scored
    model: ModelPlan  # scored.model, which every step of a try reads
    provider: ProviderPlan
    route: RoutePlan
    policy: str | None
    rule: str | None
    leg: int  # 0 for the primary target, i for request.fallbacks[i - 1]


# One per candidate of every call, built by name: builder() takes the keywords without
# the dict a class call packs them into (measured > 1 us a call over the walk).
_candidate = builder(Candidate)


class _Pending(NamedTuple):
    """A route's fallback_policy, selected only when the walk reaches it."""

    policy: str
    leg: int
    visited: tuple[str, ...]  # the policies this leg went through, each tried once


class Walk:
    """The candidates of one call in try order, filtered by static eligibility.

    The walk is a queue, filled one part at a time as it is reached (the primary leg, a
    route's fallback_policy, each request fallback): nothing is selected or ordered
    before it is needed, and a call answered by its first candidate leaves nothing
    suspended behind (a generator would have to be closed, which raises into it).
    Iterating is resumable: a stream that breaks after it opened continues the walk where
    it stopped. What a failure rules out for the rest of the call (a provider that refused
    the credentials, a context window too small) is told to `rule_out_*`.
    """

    __slots__ = (
        "_at_leg",
        "_fallbacks",
        "_handed",
        "_in_leg",
        "_leg_max",
        "_legs",
        "_maxes",
        "_min_window",
        "_pending",
        "_pos",
        "_queue",
        "_skipped",
        "_tried",
        "call",
        "primary",
        "svc",
        "trail",
    )

    def __init__(self, svc: Services, call: CallData, trail: Trail, target: str | None) -> None:
        self.svc, self.call, self.trail = svc, call, trail
        self._in_leg = self._leg_max = self._min_window = self._handed = self._pos = 0
        self._at_leg = -1  # the leg of the candidate handed out last
        self._legs = 0  # legs queued so far (0: not even the primary)
        self._skipped: dict[str, str] = {}  # provider id -> why this call skips it
        self._tried: set[str] = set()
        self._maxes: dict[int, int] = {}  # leg -> its route's max_attempts
        self._queue: list[Candidate] = []  # queued in try order; handed out up to _pos
        self._pending: _Pending | None = None
        self._fallbacks = fallbacks = call.request.fallbacks
        for fallback in fallbacks:  # a typo must fail now, not be skipped
            check(call.plan, fallback)
        self.primary = self._primary(target)

    def _primary(self, target: str | None) -> Leg | None:
        """The first target; with request fallbacks, "no candidate" just moves on to them."""
        try:
            return resolve(self.call.plan, target, self.svc.select, self.call.features)
        except NoCandidateError as exc:
            if not self._fallbacks:
                raise
            self.trail.eliminated.update(exc.eliminated)
            return None

    @property
    def route(self) -> RoutePlan:
        """The primary target's route (whose cache settings the call uses)."""
        return self.primary.route if self.primary is not None else PIN_ROUTE

    # -- iteration ------------------------------------------------------------------------

    def __iter__(self) -> Iterator[tuple[int, Candidate]]:
        return self

    def __next__(self) -> tuple[int, Candidate]:
        """The next candidate worth a try (its leg has tries left and it is eligible), with
        its fallback index: how many candidates were handed out before it."""
        queue = self._queue
        while True:
            while self._pos == len(queue):
                if not self._extend():
                    raise StopIteration
            cand = queue[self._pos]
            self._pos += 1
            if cand.leg != self._at_leg:  # a new leg: its own count of tries
                self._at_leg, self._in_leg, self._leg_max = cand.leg, 0, self._maxes[cand.leg]
            if self._in_leg < self._leg_max and self._eligible(cand):
                index = self._handed
                self._handed += 1
                return index, cand

    def _extend(self) -> bool:
        """Queue the next part of the walk: a pending fallback_policy of the current leg,
        else the next leg (the primary target, then each request fallback). False when
        nothing is left; a part may add no candidate."""
        pending = self._pending
        if pending is not None:
            self._pending = None
            try:
                sel = self.svc.select(self.call.plan, pending.policy, self.call.features)
            except NoCandidateError as exc:
                self.trail.eliminated[pending.policy] = str(exc)
                return True
            self._queue_policy(sel, pending.leg, pending.visited)
            return True
        index = self._legs
        if index > len(self._fallbacks):
            return False
        self._legs = index + 1
        if index == 0:
            if self.primary is not None:
                self._queue_leg(self.primary, 0)
            return True
        target = self._fallbacks[index - 1]
        try:
            leg = resolve(self.call.plan, target, self.svc.select, self.call.features)
        except NoCandidateError as exc:
            self.trail.eliminated[target] = str(exc)
            return True
        self._queue_leg(leg, index)
        return True

    def _queue_leg(self, leg: Leg, index: int) -> None:
        """One leg's candidates; its try count starts when its first one is handed out."""
        self._maxes[index] = leg.route.max_attempts
        if leg.pin is not None:
            provider = self.call.plan.providers[leg.pin.model.provider]
            self._queue.append(
                _candidate(
                    scored=leg.pin,
                    model=leg.pin.model,
                    provider=provider,
                    route=leg.route,
                    policy=None,
                    rule=None,
                    leg=index,
                )
            )
            return
        assert leg.selection is not None
        self._queue_policy(leg.selection, index, (leg.target,))

    def _queue_policy(self, sel: Selection, index: int, visited: tuple[str, ...]) -> None:
        """The ranking (in live-strategy order) and the chain; the fallback_policy pending."""
        route, providers, queue = sel.route, self.call.plan.providers, self._queue
        ordered = self._ordered(sel)
        for s in (*ordered, *sel.chain) if sel.chain else ordered:
            provider = providers.get(s.model.provider)
            if provider is not None:
                queue.append(
                    _candidate(
                        scored=s,
                        model=s.model,
                        provider=provider,
                        route=route,
                        policy=sel.policy,
                        rule=sel.rule,
                        leg=index,
                    )
                )
        nxt = route.fallback_policy
        if nxt and nxt not in visited and nxt in self.call.plan.policies:
            self._pending = _Pending(nxt, index, (*visited, nxt))

    def _ordered(self, sel: Selection) -> tuple[Scored, ...] | list[Scored]:
        """The ranking as the live strategy orders it (static strategies keep select's)."""
        strategy = sel.route.strategy
        if strategy.name not in DYNAMIC_STRATEGIES:
            return sel.ranked
        key = f"{sel.policy}:{sel.rule}"
        return self.svc.strategies.order(key, strategy, sel.ranked, self.call.streaming)

    # -- the leg's tries and what failures rule out ---------------------------------------

    def count_try(self) -> None:
        """A try was admitted: it counts against its leg's max_attempts."""
        self._in_leg += 1

    def exhausted(self) -> bool:
        """The current leg has spent its max_attempts."""
        return self._in_leg >= self._leg_max

    def no_spare(self) -> bool:
        """No try of the current leg to spare for a retry: those left are owed, one each,
        to the candidates still waiting in the leg. Looks ahead (a failure's path only)."""
        left = self._leg_max - self._in_leg
        return left <= 0 or left <= self._waiting()

    def _waiting(self) -> int:
        """How many distinct candidates of the current leg could still get a try."""
        queue, at_leg = self._queue, self._at_leg
        while len(queue) == self._pos or queue[-1].leg == at_leg:  # queue the rest of the leg
            if not self._extend():
                break
        waiting: set[str] = set()
        for c in queue[self._pos :]:
            if c.leg != at_leg:
                break
            mid, p = c.model.id, c.provider
            if mid not in self._tried and p.enabled and p.id not in self._skipped:
                waiting.add(mid)
        return len(waiting)

    def rule_out_provider(self, provider: str, why: str) -> None:
        """The provider cannot serve this call (`why`): skip its other models."""
        self._skipped[provider] = why

    def rule_out_window(self, window: int) -> None:
        """The prompt did not fit `window` tokens: skip models whose window is not larger."""
        self._min_window = max(self._min_window, window, 1)

    # -- static eligibility ---------------------------------------------------------------

    def _eligible(self, cand: Candidate) -> bool:
        """Checks that need no network; each failure is recorded with its reason."""
        m, p = cand.model, cand.provider
        if m.id in self._tried:
            return False
        self._tried.add(m.id)
        if not p.enabled:
            why = "disabled", p.disabled_reason or "provider disabled"
        elif p.id in self._skipped:
            why = "skipped", self._skipped[p.id]
        elif self._min_window and m.context_window <= self._min_window:
            why = "context_window_exceeded", "context window not larger"
        elif not self._within_budget(cand):
            why = "budget_exceeded", "worst-case cost above the request budget"
        else:
            return True
        self.trail.skip(p.id, m.id, why[0], why[1], self._handed)
        return False

    def _within_budget(self, cand: Candidate) -> bool:
        """Worst-case cost within the request's budget and the route's per-request cap.
        An unknown price cannot be shown to fit, so with a cap it does not."""
        cap = self.call.budget_usd
        route_cap = cand.route.budget.max_cost_per_request
        if route_cap is not None:
            cap = route_cap if cap is None else min(cap, route_cap)
        if cap is None:
            return True
        worst = cand.scored.worst_cost_usd
        return worst is not None and worst <= cap
