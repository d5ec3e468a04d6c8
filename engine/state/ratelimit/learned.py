"""A key's limits: configured in the plan, learned from providers' rate-limit headers.

- A limit learned from headers tightens the configured one (the effective limit is the
  smaller); a key with neither is unlimited in that dimension.
- A `remaining` figure applies until its reset time, and usage booked meanwhile counts
  against it (a provider's figure is a snapshot of its own count).
- A `retry-after` blocks the key until then, but for at most `MAX_BLOCK_S`: a 429 with
  `Retry-After: 86400` (a daily quota, or a confused upstream) must not take a key out for
  a day. Until the provider's own time has passed, one request per `MAX_BLOCK_S` goes
  through as a probe (the others stay blocked): an answer clears the block, another 429
  renews it.
- `share` is this process's part of every limit (1/N for one of N workers that cannot
  reach their shared limits file).

The effective limits and the dimensions worth checking are kept up to date when the plan
or the headers change, so the per-request check reads them without recomputing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.messages import RateLimitInfo
from engine.plan.values import KeyPlan
from engine.state.ratelimit.window import WINDOW_S, Amounts

#: How long a `remaining` header applies when the provider gave no reset time.
DEFAULT_RESET_S = WINDOW_S
#: The longest a Retry-After blocks a key before one probe request is let through.
MAX_BLOCK_S = 60.0

Limit = int | None


@dataclass(slots=True)
class Hint:
    """What headers said about one dimension of one key."""

    limit: int | None = None
    remaining: int | None = None
    reset_at: float = 0.0

    def current(self, now: float) -> int | None:
        """The provider's `remaining`, while its reset has not passed."""
        return self.remaining if self.remaining is not None and now < self.reset_at else None


def _configured(key: KeyPlan) -> tuple[Limit, Limit, Limit, Limit]:
    return (key.rpm, key.input_tpm, key.output_tpm, None)


@dataclass(slots=True)
class Limits:
    """One key's effective limits, the providers' remaining figures and its block."""

    key: KeyPlan
    share: float = 1.0
    configured: tuple[Limit, Limit, Limit, Limit] = (None, None, None, None)
    hints: tuple[Hint, Hint, Hint, Hint] = field(
        default_factory=lambda: (Hint(), Hint(), Hint(), Hint())
    )
    #: min(configured, learned) x share, per dimension (DIMENSIONS order).
    effective: list[Limit] = field(default_factory=lambda: [None, None, None, None])
    #: The dimensions with a limit or a remaining figure (the others never refuse), each
    #: with its effective limit and its hint: what the per-request check reads.
    watched: tuple[tuple[int, Limit, Hint], ...] = ()
    #: The dimensions with a remaining figure, with their hint (once set, it stays set).
    hinted: tuple[tuple[int, Hint], ...] = ()
    informed: bool = False  # headers have said something about this key
    #: Nothing configured and nothing learned: no check can refuse.
    unlimited: bool = True
    blocked_until: float = 0.0
    #: When the provider said the key may be used again (beyond blocked_until: probes).
    asked_until: float = 0.0

    def __post_init__(self) -> None:
        self.rebind(self.key)

    def rebind(self, key: KeyPlan) -> None:
        """A reloaded plan's key: its configured limits replace the old ones."""
        self.key = key
        self.configured = _configured(key)
        for dim in range(4):
            self.effective[dim] = self._effective(dim)
        self.unlimited = not self.informed and all(c is None for c in self.configured)
        self._watch()

    def observe(self, info: RateLimitInfo, now: float) -> None:
        """Learn limits, remaining figures and a Retry-After from one answer's headers."""
        self.informed = True
        self.unlimited = False
        # Headers name two or three of the four dimensions (OpenAI: requests and tokens;
        # Anthropic: requests, input and output): a dimension they say nothing about is
        # passed over without a call.
        limit, remaining = info.limit_requests, info.remaining_requests
        if limit is not None or remaining is not None:
            self._learn(0, limit, remaining, now + (info.reset_requests_s or DEFAULT_RESET_S))
        tokens_reset = now + (info.reset_tokens_s or DEFAULT_RESET_S)
        limit, remaining = info.limit_input_tokens, info.remaining_input_tokens
        if limit is not None or remaining is not None:
            self._learn(1, limit, remaining, tokens_reset)
        limit, remaining = info.limit_output_tokens, info.remaining_output_tokens
        if limit is not None or remaining is not None:
            self._learn(2, limit, remaining, tokens_reset)
        limit, remaining = info.limit_tokens, info.remaining_tokens
        if limit is not None or remaining is not None:
            self._learn(3, limit, remaining, tokens_reset)
        after = info.retry_after_s
        if after is not None and after > 0:
            self.asked_until = max(self.asked_until, now + after)
            capped = after if after < MAX_BLOCK_S else MAX_BLOCK_S
            self.blocked_until = max(self.blocked_until, now + capped)
        elif self.asked_until:  # an answer without Retry-After: the probe got through
            self.asked_until = self.blocked_until = 0.0

    def probe(self, now: float) -> None:
        """A request taken after the capped block while the provider's time still runs:
        it is the probe, so the key is blocked again for the others until it answers."""
        if now < self.asked_until:
            self.blocked_until = now + MAX_BLOCK_S

    def spend(self, delta: Amounts) -> None:
        """Count usage against the remaining figures (a negative amount gives back what an
        estimate over-booked). A figure past its reset is counted down too, harmlessly:
        every reader checks `reset_at` first and the next header replaces it, so settling a
        lease needs no clock read (~1.5k instructions a call)."""
        for dim, hint in self.hinted:
            left = hint.remaining
            if left is not None:
                left -= delta[dim]
                hint.remaining = left if left > 0 else 0

    def _learn(self, dim: int, limit: int | None, remaining: int | None, reset_at: float) -> None:
        """One dimension's figures (nothing changes for a figure the headers left out)."""
        hint = self.hints[dim]
        changed = False  # a new limit, or a first remaining figure: what `_watch` derives
        if limit is not None and limit > 0 and limit != hint.limit:
            hint.limit = limit
            self.effective[dim] = self._effective(dim)
            changed = True
        if remaining is not None:
            changed = changed or hint.remaining is None
            hint.remaining = remaining if remaining > 0 else 0
            hint.reset_at = reset_at
        if changed:
            self._watch()

    def _effective(self, dim: int) -> Limit:
        configured, learned = self.configured[dim], self.hints[dim].limit
        if configured is None:
            limit = learned
        else:
            limit = configured if learned is None else min(configured, learned)
        if limit is None or self.share >= 1.0:
            return limit
        return max(1, int(limit * self.share))

    def _watch(self) -> None:
        hints, effective = self.hints, self.effective
        self.hinted = tuple(
            (dim, hints[dim]) for dim in range(4) if hints[dim].remaining is not None
        )
        self.watched = tuple(
            (dim, effective[dim], hints[dim])
            for dim in range(4)
            if effective[dim] is not None or hints[dim].remaining is not None
        )
