"""Client authentication: Bearer keys, each tied to a workspace, allowed policies and a budget.

With no keys configured every request is let through (the server then refuses to bind
beyond loopback unless told --insecure; see runner). Keys are compared in constant time.
A key's budget is tracked here, in process: spend is added when a response's cost is
known, and a key whose budget is used up gets 429 before any provider is called; the
remaining budget also caps each request's `budget_usd` so one call cannot overshoot much.
"""

from __future__ import annotations

import hmac
import threading
from dataclasses import dataclass

from engine.server.errors import ServerError
from engine.server.settings import ApiKey


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's label and limits (`anonymous` when auth is off)."""

    key_id: str
    workspace: str | None = None
    policies: frozenset[str] | None = None
    budget_usd: float | None = None


ANONYMOUS = Principal("anonymous")


class Authenticator:
    """Resolves `Authorization: Bearer ...` to a Principal and keeps per-key spend."""

    def __init__(self, keys: tuple[ApiKey, ...]) -> None:
        self._keys = keys
        self._spent: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def authenticate(self, header: str | None) -> Principal:
        if not self._keys:
            return ANONYMOUS
        token = _bearer(header)
        for key in self._keys:
            if hmac.compare_digest(key.secret.reveal().encode(), token.encode()):
                return Principal(key.id, key.workspace, key.policies, key.budget_usd)
        raise ServerError(401, "invalid API key", "authentication_error", "invalid_api_key")

    def authorize(self, who: Principal, target: str | None) -> None:
        """Refuse a policy or model the key is not allowed to use (403)."""
        if who.policies is None or "*" in who.policies:
            return
        if target is None or target not in who.policies:
            raise ServerError(
                403,
                f"this API key may not use {target or 'the default policy'!r}",
                "permission_error",
                "policy_not_allowed",
            )

    def remaining(self, who: Principal) -> float | None:
        """USD left on the key's budget, or None when it has none; 429 when used up."""
        if who.budget_usd is None:
            return None
        with self._lock:
            left = who.budget_usd - self._spent.get(who.key_id, 0.0)
        if left <= 0:
            raise ServerError(
                429, "this API key's budget is used up", "insufficient_quota", "budget_exceeded"
            )
        return left

    def charge(self, who: Principal, cost_usd: float | None) -> None:
        if who.budget_usd is None or not cost_usd:
            return
        with self._lock:
            self._spent[who.key_id] = self._spent.get(who.key_id, 0.0) + cost_usd

    def spent(self) -> dict[str, float]:
        with self._lock:
            return dict(self._spent)


def _bearer(header: str | None) -> str:
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ServerError(
            401,
            "missing API key: send `Authorization: Bearer <key>`",
            "authentication_error",
            "missing_api_key",
        )
    return token.strip()
