"""Client authentication: Bearer keys, each tied to a workspace, policies, budgets and limits.

Keys come from server.yaml / ENGINE_API_KEYS (static) and, when the admin API is on, from
the key registry (engine/state/keys.py: added, rotated and revoked at run time, shared by
every worker and replica). A key is looked up by the SHA-256 digest of what the client
sent, so the registry never holds a key's text and no comparison leaks timing about it.
A registry record with a static key's id overrides it (rotated, revoked, new limits); the
registry is read on every request, so a revoked key is refused on its next request on every
replica. With no keys anywhere every request is let through (the server then refuses to
bind beyond loopback unless told --insecure; see runner).

Money is not checked here: a key's daily, monthly and all-time (`budget_usd`) budgets are
reserved for each try's worst case inside the engine (engine/runtime/clients.py), beside
the workspace's, which is what keeps concurrent requests from overspending. This module
tells the engine each key's budget as the key is seen, and admits each request against the
key's rpm / tpm / max_concurrent limits (engine/state/key_limits.py): 429 with Retry-After
and an OpenAI-shaped body naming the key's id, never its text.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from engine.messages import Request, Usage
from engine.plan.features import features_of
from engine.runtime.clients import ClientBudget, ClientBudgets
from engine.server.errors import ServerError
from engine.server.settings import ApiKey
from engine.state.key_limits import KeyLimitedError, KeyLimiter, KeyLimits, Ticket
from engine.state.keys import KeyRecord, KeyRegistry, digest


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's label and limits (`anonymous` when auth is off)."""

    key_id: str
    workspace: str | None = None
    policies: frozenset[str] | None = None
    budget: ClientBudget | None = None
    limits: KeyLimits | None = None


ANONYMOUS = Principal("anonymous")


def principal_of(key: ApiKey | KeyRecord) -> Principal:
    """The Principal a static key or a registry record authenticates as."""
    policies = key.policies
    budget = ClientBudget(key.daily_usd, key.monthly_usd, key.budget_usd)
    limits = KeyLimits(key.rpm, key.tpm, key.max_concurrent)
    return Principal(
        key.id,
        key.workspace,
        None if policies is None else frozenset(policies),
        budget if budget.limited else None,
        limits if limits.limited else None,
    )


class Authenticator:
    """Resolves `Authorization: Bearer ...` to a Principal and admits it against its limits."""

    def __init__(
        self,
        keys: tuple[ApiKey, ...],
        limiter: KeyLimiter,
        registry: KeyRegistry | None = None,
        clients: ClientBudgets | None = None,
        share: int = 1,
    ) -> None:
        self.limiter = limiter
        self.registry = registry
        self._clients = clients
        self._share = max(1, share)  # workers splitting limits no shared store counts
        self._pending: set[asyncio.Task[Any]] = set()
        self.replace_keys(keys)

    def replace_keys(self, keys: tuple[ApiKey, ...]) -> None:
        """Serve these static keys from now on (server.yaml changed: client_keys.watch)."""
        self.keys = keys
        self._static = {digest(k.secret.reveal()): (k.id, principal_of(k)) for k in keys}
        if self._clients is not None:
            budgets = {who.key_id: who.budget for _, who in self._static.values() if who.budget}
            self._clients.set(budgets)

    @property
    def enabled(self) -> bool:
        """Whether clients must send a key (static keys, or the key registry is on). When
        not, every caller is ANONYMOUS and the API route skips `authenticate`'s await."""
        return bool(self._static) or self.registry is not None

    async def authenticate(self, header: str | None) -> Principal:
        if not self._static and (self.registry is None or not await self.registry.active()):
            return ANONYMOUS
        key_digest = digest(_bearer(header))
        static = self._static.get(key_digest)
        if self.registry is not None:
            record, override = await self.registry.lookup(key_digest, static[0] if static else None)
            if record is not None:
                return self._seen(principal_of(record))
            if override is not None:  # a static key rotated or revoked at run time
                static = None
        if static is None:
            raise ServerError(401, "invalid API key", "authentication_error", "invalid_api_key")
        return self._seen(static[1])

    def _seen(self, who: Principal) -> Principal:
        """Keep the engine's view of this key's budget current (it may change at run time)."""
        clients = self._clients
        if clients is not None and clients.of(who.key_id) != who.budget:
            clients.put(who.key_id, who.budget)
        return who

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

    async def admit(self, who: Principal, request: Request) -> Ticket | None:
        """Book the request against the key's rpm / tpm / concurrency (429 when at one)."""
        limits = who.limits
        if limits is None:
            return None
        tokens = 0
        if limits.tpm is not None:
            tokens = features_of(request).input_tokens + (request.max_tokens or 0)
        try:
            return await self.limiter.admit(who.key_id, self._shared(limits), tokens)
        except KeyLimitedError as exc:
            raise ServerError(
                429, str(exc), "rate_limit_error", "key_rate_limited", exc.retry_after_s
            ) from None

    def _shared(self, limits: KeyLimits) -> KeyLimits:
        """This worker's share of the limits when workers count apart (no shared store)."""
        n = self._share
        if n == 1:
            return limits
        return KeyLimits(*(None if v is None else max(1, -(-v // n)) for v in _values(limits)))

    def done(self, ticket: Ticket | None, usage: Usage | None = None) -> None:
        """The request ended: give its slot back and book its real tokens (in the
        background, so a sync caller such as a finished stream can call it)."""
        if ticket is None:
            return
        tokens = ticket.tokens if usage is None else usage.input_tokens + usage.output_tokens
        task = asyncio.ensure_future(self.limiter.done(ticket, tokens))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def book(self, who: Principal, cost_usd: float | None) -> None:
        """Charge a cost recorded from outside (POST /v1/usage) to the key's budget."""
        if self._clients is None or who.budget is None or not cost_usd:
            return
        store = self._clients.store
        await store.settle(await store.reserve(who.key_id, 0.0, None, None), cost_usd)


def _values(limits: KeyLimits) -> tuple[int | None, int | None, int | None]:
    return limits.rpm, limits.tpm, limits.max_concurrent


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
