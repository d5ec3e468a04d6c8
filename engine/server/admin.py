"""The admin API for client keys: add, list, rotate and revoke them without a restart.

    POST   /v1/admin/keys              {"id", workspace?, policies?, budget_usd?, daily_usd?,
                                        monthly_usd?, rpm?, tpm?, max_concurrent?}
                                       -> 201 with the new key's text (shown this once)
    GET    /v1/admin/keys              every key: id, source, limits, spend; never a secret
    GET    /v1/admin/keys/{id}         one key
    POST   /v1/admin/keys/{id}/rotate  a new text for the key (limits and spend kept); the
                                       old text is refused from its next request on
    DELETE /v1/admin/keys/{id}         revoke: refused from its next request on

Only the admin key (`admin_key` / `admin_key_env` in server.yaml, or ENGINE_ADMIN_KEY) may
call these; without one configured they answer 403 `admin_api_disabled`. Keys are stored
hashed in the key registry (engine/state/keys.py: Redis with a state URL, so every replica
sees a change at once; else a SQLite file every worker of the host reads). A server.yaml
key can be rotated or revoked too: its registry record overrides it.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request as HTTPRequest
from starlette.responses import Response as HTTPResponse
from starlette.routing import Route

from engine.server.auth import Principal
from engine.server.client_keys import key_views, principals
from engine.server.common import ServerState, json_response
from engine.server.errors import ServerError
from engine.server.ops import handled
from engine.state.keys import KeyRecord, KeyRegistry, digest

#: What every key the admin API makes starts with (so a leaked one is recognisable).
PREFIX = "sk-eng-"


class KeySpec(BaseModel):
    """The body of POST /v1/admin/keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    workspace: str | None = Field(default=None, min_length=1, max_length=128)
    policies: tuple[str, ...] | None = None
    budget_usd: float | None = Field(default=None, ge=0)
    daily_usd: float | None = Field(default=None, ge=0)
    monthly_usd: float | None = Field(default=None, ge=0)
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    max_concurrent: int | None = Field(default=None, ge=1)


def _registry(state: ServerState) -> KeyRegistry:
    registry = state.auth.registry
    if state.settings.admin_key is None or registry is None:
        raise ServerError(
            403,
            "the admin API is off: set admin_key (or admin_key_env) in server.yaml, or "
            "ENGINE_ADMIN_KEY",
            "permission_error",
            "admin_api_disabled",
        )
    return registry


def _new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


async def _body(request: HTTPRequest) -> KeySpec:
    try:
        return KeySpec.model_validate_json(await request.body())
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise ServerError(400, problems, "invalid_request_error", "invalid_key_spec") from None


async def _view(state: ServerState, key_id: str) -> dict[str, Any]:
    views = await key_views(state)
    if key_id not in views:
        raise ServerError(404, f"no API key {key_id!r}", "invalid_request_error", "key_not_found")
    return {"id": key_id, **views[key_id]}


@handled(admin_only=True)
async def add_key(state: ServerState, request: HTTPRequest, who: Principal) -> Any:
    """Create a key; its text is in this answer and nowhere else."""
    registry = _registry(state)
    spec = await _body(request)
    current = (await principals(state.auth)).get(spec.id)
    if current is not None and not current[2]:
        raise ServerError(
            409, f"API key {spec.id!r} exists; rotate or revoke it", "invalid_request_error",
            "key_exists",
        )  # fmt: skip
    secret = _new_secret()
    record = KeyRecord(digest=digest(secret), created=time.time(), **spec.model_dump())
    await registry.put(record)
    return _created({"key": secret, **await _view(state, spec.id)})


def _created(body: dict[str, Any]) -> HTTPResponse:
    return json_response(body, 201)


@handled(admin_only=True)
async def list_keys(state: ServerState, request: HTTPRequest, who: Principal) -> Any:
    """Every key with its limits and spend."""
    _registry(state)
    views = await key_views(state)
    return {"object": "list", "data": [{"id": k, **v} for k, v in views.items()]}


@handled(admin_only=True)
async def get_key(state: ServerState, request: HTTPRequest, who: Principal) -> Any:
    """One key with its limits and spend."""
    _registry(state)
    return await _view(state, request.path_params["key_id"])


async def _current(state: ServerState, key_id: str) -> KeyRecord:
    """The key's record as it stands (a server.yaml key's built from the settings)."""
    registry = _registry(state)
    record = await registry.get(key_id)
    if record is not None:
        return record
    for key in state.auth.keys:
        if key.id == key_id:
            policies = None if key.policies is None else tuple(sorted(key.policies))
            return KeyRecord(
                id=key_id, digest="", workspace=key.workspace, policies=policies,
                daily_usd=key.daily_usd, monthly_usd=key.monthly_usd, budget_usd=key.budget_usd,
                rpm=key.rpm, tpm=key.tpm, max_concurrent=key.max_concurrent, created=time.time(),
            )  # fmt: skip
    raise ServerError(404, f"no API key {key_id!r}", "invalid_request_error", "key_not_found")


@handled(admin_only=True)
async def rotate_key(state: ServerState, request: HTTPRequest, who: Principal) -> Any:
    """A new text for the key; the old one stops working on every replica."""
    record = await _current(state, request.path_params["key_id"])
    if record.revoked:
        raise ServerError(
            409, f"API key {record.id!r} is revoked", "invalid_request_error", "key_revoked"
        )
    secret = _new_secret()
    await _registry(state).put(dataclasses.replace(record, digest=digest(secret)))
    return {"key": secret, **await _view(state, record.id)}


@handled(admin_only=True)
async def revoke_key(state: ServerState, request: HTTPRequest, who: Principal) -> Any:
    """Refuse the key from its next request on, on every replica (its spend is kept)."""
    record = await _current(state, request.path_params["key_id"])
    await _registry(state).put(dataclasses.replace(record, digest="", revoked=True))
    return await _view(state, record.id)


def routes() -> list[Route]:
    """The admin routes, for create_app."""
    return [
        Route("/v1/admin/keys", add_key, methods=["POST"]),
        Route("/v1/admin/keys", list_keys, methods=["GET"]),
        Route("/v1/admin/keys/{key_id}", get_key, methods=["GET"]),
        Route("/v1/admin/keys/{key_id}", revoke_key, methods=["DELETE"]),
        Route("/v1/admin/keys/{key_id}/rotate", rotate_key, methods=["POST"]),
    ]
