"""Client API keys added, rotated and revoked at run time: records kept hashed, shared.

The server's admin API (engine/server/admin.py) writes here; every worker and replica
reads here on each request, so a key added on one is accepted by all, and a revoked key
is refused on its next request everywhere. What is stored is the key's SHA-256 digest,
never its text: the text is shown once, when the key is created or rotated.

A record whose id is also a server.yaml key overrides that key (its rotated digest, its
revocation, its new limits), so yaml keys can be rotated or revoked without a restart too.

Two backends: `SQLiteKeyRegistry`, a file beside the ledger that every worker on one host
opens (the default), and `RedisKeyRegistry` (engine/state/redis_keys.py) when the state
lives in Redis, for replicas on several hosts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


def digest(secret: str) -> str:
    """The SHA-256 hex digest a key is stored and looked up by."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One client key as the registry holds it: never its text, only its digest."""

    id: str
    digest: str  # "" once revoked
    workspace: str | None = None
    policies: tuple[str, ...] | None = None
    daily_usd: float | None = None
    monthly_usd: float | None = None
    budget_usd: float | None = None  # all-time
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    revoked: bool = False
    created: float = 0.0

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> KeyRecord:
        data: dict[str, Any] = json.loads(text)
        if data.get("policies") is not None:
            data["policies"] = tuple(data["policies"])
        return cls(**data)

    def public(self) -> dict[str, Any]:
        """What the admin API shows: everything but the digest."""
        out = dataclasses.asdict(self)
        del out["digest"]
        return out


class KeyRegistry(Protocol):
    """Run-time client keys, shared by every worker and replica that opens the same store."""

    async def lookup(
        self, key_digest: str, key_id: str | None
    ) -> tuple[KeyRecord | None, KeyRecord | None]:
        """In one round trip: the active record with this digest, and the record (active or
        revoked) with id `key_id` (a server.yaml key's id: does a record override it?)."""
        ...

    async def get(self, key_id: str) -> KeyRecord | None:
        """The record with this id, revoked or not."""
        ...

    async def put(self, record: KeyRecord) -> None:
        """Store the record under its id, replacing the one before (and its digest)."""
        ...

    async def all(self) -> list[KeyRecord]:
        """Every record, revoked ones included, by id."""
        ...

    async def active(self) -> bool:
        """Whether any active key is stored (turns client auth on without yaml keys)."""
        ...

    async def aclose(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY, digest TEXT NOT NULL, record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS keys_by_digest ON keys (digest);
"""


class SQLiteKeyRegistry:
    """`KeyRegistry` in one SQLite file (WAL) that every worker on the host opens."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[KeyRecord]:
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [KeyRecord.from_json(r[0]) for r in rows]

    async def lookup(
        self, key_digest: str, key_id: str | None
    ) -> tuple[KeyRecord | None, KeyRecord | None]:
        # One indexed read each, microseconds: run inline rather than pay a thread hop.
        found = self._rows("SELECT record FROM keys WHERE digest = ?", (key_digest,))
        by_id = self._rows("SELECT record FROM keys WHERE id = ?", (key_id,)) if key_id else []
        active = next((r for r in found if not r.revoked), None)
        return active, (by_id[0] if by_id else None)

    async def get(self, key_id: str) -> KeyRecord | None:
        found = self._rows("SELECT record FROM keys WHERE id = ?", (key_id,))
        return found[0] if found else None

    async def put(self, record: KeyRecord) -> None:
        def write() -> None:
            with self._lock:
                self._conn.execute(
                    "INSERT INTO keys (id, digest, record) VALUES (?, ?, ?) ON CONFLICT (id) "
                    "DO UPDATE SET digest = excluded.digest, record = excluded.record",
                    (record.id, record.digest, record.to_json()),
                )

        await asyncio.to_thread(write)

    async def all(self) -> list[KeyRecord]:
        return self._rows("SELECT record FROM keys ORDER BY id")

    async def active(self) -> bool:
        with self._lock:
            row = self._conn.execute("SELECT 1 FROM keys WHERE digest != '' LIMIT 1").fetchone()
        return row is not None

    async def aclose(self) -> None:
        with self._lock:
            self._conn.close()
