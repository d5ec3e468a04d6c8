"""`ObserveThrottle`: which rate-limit header updates a shared limiter must store now.

Every answer carries `remaining` figures; storing each one in a shared store (the SQLite
file of `--workers`, Redis) would cost a transaction or a round trip per call. A
Retry-After or a changed limit is stored at once; the mere countdown of a busy key at most
every `every_s` seconds (the store's own bookings count it down meanwhile).
"""

from __future__ import annotations

from engine.messages import RateLimitInfo

#: How often the countdown of one key is stored, at most, by the shared limiters.
OBSERVE_EVERY_S = 0.25


class ObserveThrottle:
    """Per provider key: when its headers were last stored, and the limits they named."""

    def __init__(self, every_s: float = OBSERVE_EVERY_S) -> None:
        self._every_s = every_s
        self._last: dict[tuple[str, str], tuple[float, tuple[int | None, ...]]] = {}

    def due(self, provider: str, key_id: str, info: RateLimitInfo, now: float) -> bool:
        """Whether these headers must be stored now (and, if so, note that they are)."""
        limits = (info.limit_requests, info.limit_input_tokens, info.limit_output_tokens)
        last = self._last.get((provider, key_id))
        if (
            info.retry_after_s is None
            and last is not None
            and last[1] == limits
            and now - last[0] < self._every_s
        ):
            return False
        self._last[(provider, key_id)] = (now, limits)
        return True
