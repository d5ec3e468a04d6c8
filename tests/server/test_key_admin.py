"""The admin API for client keys: add, rotate and revoke without a restart, on every replica.

Two real `engine serve` replicas share a Redis: a key added on one is served by the other,
a rotation on one refuses the old text on the other from its next request, a revocation
likewise; `--workers 2` without Redis shares the SQLite key file the same way. Keys are
stored as digests only: no listing, log, ledger row or error carries a key's text.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from engine.testing.servers import RedisServer
from tests.server.keyservers import ADMIN, body, key_stack

YAML_KEY = "sk-yaml-secret-0123456789"
SERVER_YAML = "admin_key_env: ADMIN_KEY\napi_keys:\n  - id: from-yaml\n    key_env: YAML_KEY\n"
ENV = {"ADMIN_KEY": ADMIN, "YAML_KEY": YAML_KEY}
AS_ADMIN = {"authorization": f"Bearer {ADMIN}"}


def _as(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def _chat(http: httpx.AsyncClient, url: str, key: str) -> int:
    answer = await http.post(f"{url}/v1/chat/completions", json=body(0), headers=_as(key))
    return answer.status_code


async def test_add_rotate_revoke_are_seen_by_the_other_replica(
    tmp_path: Path, redis_srv: RedisServer
) -> None:
    """A key added on replica A works on B; rotated on B, its old text is refused on A and
    the new one served; revoked on A, it is refused on B. No restart anywhere."""
    client = aioredis.Redis.from_url(redis_srv.url)
    await client.flushdb()
    await client.aclose()
    env = {**ENV, "ENGINE_STATE_URL": redis_srv.url}
    async with key_stack(tmp_path, SERVER_YAML, env) as stack:
        a, b = await stack.start(), await stack.start()
        async with httpx.AsyncClient(timeout=30) as http:
            made = await http.post(
                f"{a}/v1/admin/keys", json={"id": "team-b", "rpm": 100}, headers=AS_ADMIN
            )
            assert made.status_code == 201
            first = made.json()["key"]
            assert await _chat(http, b, first) == 200
            rotated = await http.post(f"{b}/v1/admin/keys/team-b/rotate", headers=AS_ADMIN)
            second = rotated.json()["key"]
            assert second != first
            assert await _chat(http, a, first) == 401
            assert await _chat(http, a, second) == 200
            revoked = await http.delete(f"{a}/v1/admin/keys/team-b", headers=AS_ADMIN)
            assert revoked.json()["revoked"] is True
            assert await _chat(http, b, second) == 401
            listing = (await http.get(f"{b}/v1/admin/keys", headers=AS_ADMIN)).text
        stack.stop(0)
        stack.stop(1)
        secrets = (first, second, YAML_KEY, ADMIN)
        assert not any(s in listing for s in secrets)
        assert "digest" not in listing
        assert not any(s in stack.log_text() for s in secrets)


async def test_a_yaml_key_is_revoked_across_workers_by_the_admin_api(tmp_path: Path) -> None:
    """`--workers 2` without Redis: revoking a server.yaml key through the admin API is
    refused by every worker from the next request on (the SQLite key file they share)."""
    async with key_stack(tmp_path, SERVER_YAML, ENV) as stack:
        url = await stack.start("--workers", "2")
        async with httpx.AsyncClient(timeout=30) as http:
            assert {await _chat(http, url, YAML_KEY) for _ in range(6)} == {200}
            revoked = await http.delete(f"{url}/v1/admin/keys/from-yaml", headers=AS_ADMIN)
            assert revoked.status_code == 200
            assert {await _chat(http, url, YAML_KEY) for _ in range(10)} == {401}
        stack.stop(0)
        stored = sqlite3.connect(tmp_path / "cfg" / ".engine" / "keys.sqlite3")
        text = " ".join(str(row) for row in stored.execute("SELECT * FROM keys"))
        assert YAML_KEY not in text


async def test_the_admin_api_needs_the_admin_key_and_a_valid_body(tmp_path: Path) -> None:
    """A client key gets 403 admin_only; a malformed body is 400 naming the field; an id
    that exists is 409; an unknown id is 404."""
    async with key_stack(tmp_path, SERVER_YAML, ENV) as stack:
        url = await stack.start()
        async with httpx.AsyncClient(timeout=30) as http:
            as_client = await http.get(f"{url}/v1/admin/keys", headers=_as(YAML_KEY))
            assert as_client.status_code == 403
            assert as_client.json()["error"]["code"] == "admin_only"
            bad = await http.post(
                f"{url}/v1/admin/keys", json={"id": "x", "rpm": 0}, headers=AS_ADMIN
            )
            assert bad.status_code == 400 and "rpm" in bad.json()["error"]["message"]
            taken = await http.post(
                f"{url}/v1/admin/keys", json={"id": "from-yaml"}, headers=AS_ADMIN
            )
            assert taken.status_code == 409
            missing = await http.delete(f"{url}/v1/admin/keys/nobody", headers=AS_ADMIN)
            assert missing.status_code == 404


async def test_without_an_admin_key_the_admin_api_is_off(tmp_path: Path) -> None:
    """No admin_key configured: the admin routes answer 403 admin_api_disabled, so client
    keys can never manage keys."""
    yaml = "api_keys:\n  - id: from-yaml\n    key_env: YAML_KEY\n"
    async with key_stack(tmp_path, yaml, ENV) as stack:
        url = await stack.start()
        async with httpx.AsyncClient(timeout=30) as http:
            answer = await http.post(
                f"{url}/v1/admin/keys", json={"id": "sneaky"}, headers=_as(YAML_KEY)
            )
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "admin_api_disabled"


async def test_server_yaml_key_edits_apply_without_a_restart(tmp_path: Path) -> None:
    """Editing server.yaml's api_keys while the server runs: the key added is served and
    the key removed is refused, within a few reload intervals, no restart."""
    first = "reload_interval_s: 0.2\napi_keys:\n  - id: old\n    key_env: YAML_KEY\n"
    env = {**ENV, "NEW_KEY": "sk-new-secret-0123456789"}
    async with key_stack(tmp_path, first, env) as stack:
        url = await stack.start()
        async with httpx.AsyncClient(timeout=30) as http:
            assert await _chat(http, url, YAML_KEY) == 200
            (stack.config / "server.yaml").write_text(
                "reload_interval_s: 0.2\napi_keys:\n  - id: new\n    key_env: NEW_KEY\n"
            )
            for _ in range(300):  # bounded: the watcher polls every 0.2 s
                if await _chat(http, url, env["NEW_KEY"]) == 200:
                    break
                await asyncio.sleep(0.05)
            assert await _chat(http, url, env["NEW_KEY"]) == 200
            assert await _chat(http, url, YAML_KEY) == 401
