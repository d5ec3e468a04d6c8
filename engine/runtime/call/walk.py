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

from collections import deque
from collections.abc import Generator, Iterator
from typing import NamedTuple

from engine.errors import NoCandidateError
from engine.frozen import builder
from engine.plan.strategies import DYNAMIC_STRATEGIES
from engine.plan.values import (
    ProviderPlan,
    RoutePlan,
    Scored,
    Selection,
)
from engine.runtime.call.data import CallData, Trail
from engine.runtime.call.targets import PIN_ROUTE, Leg, check, resolve
from engine.runtime.services import Services

_NONE: frozenset[str] = frozenset()


class Candidate(NamedTuple):
    """One model to try, with the route whose retry/breaker/budget settings apply."""

    scored: Scored
    provider: ProviderPlan
    route: RoutePlan
    policy: str | None
    rule: str | None
    leg: int  # 0 for the primary target, i for request.fallbacks[i - 1]


# One per candidate of every call, built by name: builder() takes the keywords without
# the dict a class call packs them into (measured > 1 us a call over the walk).
_candidate = builder(Candidate)


class Walk:
    """The candidates of one call in try order, filtered by static eligibility.

    Iterating is resumable: a stream that breaks after it opened continues the walk where
    it stopped. What a failure rules out for the rest of the call (a provider that refused
    the credentials, a context window too small) is told to `rule_out_*`.
    """

    __slots__ = (
        "_ahead",
        "_at_leg",
        "_candidates",
        "_handed",
        "_in_leg",
        "_leg_max",
        "_maxes",
        "_min_window",
        "_skip_providers",
        "_skip_reasons",
        "_tried",
        "call",
        "primary",
        "svc",
        "trail",
    )

    def __init__(self, svc: Services, call: CallData, trail: Trail, target: str | None) -> None:
        self.svc, self.call, self.trail = svc, call, trail
        self._in_leg = self._leg_max = self._min_window = self._handed = 0
        self._at_leg = -1  # the leg of the candidate handed out last
        self._skip_providers = _NONE
        self._skip_reasons: dict[str, str] = {}
        self._tried: set[str] = set()
        self._maxes: dict[int, int] = {}  # leg -> its route's max_attempts
        self._ahead: deque[Candidate] = deque()  # pulled by no_spare(), not yet handed out
        for fallback in call.request.fallbacks:  # a typo must fail now, not be skipped
            check(call.plan, fallback)
        self.primary = self._primary(target)
        self._candidates = self._walk()

    def _primary(self, target: str | None) -> Leg | None:
        """The first target; with request fallbacks, "no candidate" just moves on to them."""
        try:
            return resolve(self.call.plan, target, self.svc.select, self.call.features)
        except NoCandidateError as exc:
            if not self.call.request.fallbacks:
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
        ahead, candidates = self._ahead, self._candidates
        while True:
            cand = ahead.popleft() if ahead else next(candidates, None)
            if cand is None:
                raise StopIteration
            if cand.leg != self._at_leg:  # a new leg: its own count of tries
                self._at_leg, self._in_leg, self._leg_max = cand.leg, 0, self._maxes[cand.leg]
            if self._in_leg < self._leg_max and self._eligible(cand):
                index = self._handed
                self._handed += 1
                return index, cand

    def close(self) -> None:
        """End the walk. Its suspended generator frame refers back to this object; closing
        it breaks the cycle, so a finished call is freed at once by reference counting."""
        self._candidates.close()

    def _walk(self) -> Generator[Candidate, None, None]:
        if self.primary is not None:
            yield from self._leg(self.primary, 0)
        for i, target in enumerate(self.call.request.fallbacks, start=1):
            try:
                leg = resolve(self.call.plan, target, self.svc.select, self.call.features)
            except NoCandidateError as exc:
                self.trail.eliminated[target] = str(exc)
                continue
            yield from self._leg(leg, i)

    def _leg(self, leg: Leg, index: int) -> Generator[Candidate, None, None]:
        """One leg's candidates; its try count starts when its first one is handed out."""
        self._maxes[index] = leg.route.max_attempts
        if leg.pin is not None:
            return self._pin(leg.pin, leg.route, index)
        assert leg.selection is not None
        return self._policy(leg.selection, index, (leg.target,))

    def _pin(self, pin: Scored, route: RoutePlan, index: int) -> Generator[Candidate, None, None]:
        provider = self.call.plan.providers[pin.model.provider]
        yield _candidate(
            scored=pin, provider=provider, route=route, policy=None, rule=None, leg=index
        )

    def _policy(
        self, sel: Selection, index: int, visited: tuple[str, ...]
    ) -> Generator[Candidate, None, None]:
        """The ranking (in live-strategy order), the chain, then the fallback_policy."""
        route, providers = sel.route, self.call.plan.providers
        ordered = self._ordered(sel)
        for s in (*ordered, *sel.chain) if sel.chain else ordered:
            provider = providers.get(s.model.provider)
            if provider is not None:
                yield _candidate(
                    scored=s,
                    provider=provider,
                    route=route,
                    policy=sel.policy,
                    rule=sel.rule,
                    leg=index,
                )
        nxt = route.fallback_policy
        if nxt and nxt not in visited and nxt in self.call.plan.policies:
            try:
                fallback = self.svc.select(self.call.plan, nxt, self.call.features)
            except NoCandidateError as exc:
                self.trail.eliminated[nxt] = str(exc)
                return
            yield from self._policy(fallback, index, (*visited, nxt))

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
        ahead = self._ahead
        while not ahead or ahead[-1].leg == self._at_leg:  # pull the rest of the leg
            cand = next(self._candidates, None)
            if cand is None:
                break
            ahead.append(cand)
        waiting: set[str] = set()
        for c in ahead:
            if c.leg != self._at_leg:
                break
            mid, p = c.scored.model.id, c.provider
            if mid not in self._tried and p.enabled and p.id not in self._skip_providers:
                waiting.add(mid)
        return len(waiting)

    def rule_out_provider(self, provider: str, why: str) -> None:
        """The provider cannot serve this call (`why`): skip its other models."""
        self._skip_providers |= {provider}
        self._skip_reasons[provider] = why

    def rule_out_window(self, window: int) -> None:
        """The prompt did not fit `window` tokens: skip models whose window is not larger."""
        self._min_window = max(self._min_window, window, 1)

    # -- static eligibility ---------------------------------------------------------------

    def _eligible(self, cand: Candidate) -> bool:
        """Checks that need no network; each failure is recorded with its reason."""
        m, p = cand.scored.model, cand.provider
        if m.id in self._tried:
            return False
        self._tried.add(m.id)
        if not p.enabled:
            why = "disabled", p.disabled_reason or "provider disabled"
        elif p.id in self._skip_providers:
            why = "skipped", self._skip_reasons[p.id]
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
