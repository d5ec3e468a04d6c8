"""The cost ledger's file: its schema, its connections, and its read side.

One SQLite file in WAL mode, so the queries (`totals`, `daily`, `spend_since`, from the
`costs` command, the server's reports or budgets restoring on start) read while the
writer (engine.state.ledger) writes. `PRAGMA application_id` marks our files, so
`open_ledger(path)` can open an existing ledger read-only and fail with a precise
`ConfigError` when the file is missing or is not one; a ledger written by an older version
is brought up to this schema when the writer opens it (columns are only ever added).

Location: `engine.assemble.default_ledger_path(config_dir)` is
`<config dir>/.engine/ledger.sqlite3` unless `$ENGINE_LEDGER` names another file.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, Diagnostic

#: Marks our files (`PRAGMA application_id`), so `costs` can tell a ledger from any SQLite.
APPLICATION_ID = 0x4C454447  # "LEDG"
#: 2: client (the calling API key's label); 3: token breakdown; 4: row_id (each row's
#: unique id, so a row replayed from the journal after a crash is stored once).
SCHEMA_VERSION = 4
#: Columns added after version 1, with their definitions (added in place to older files).
_ADDED = (
    ("client", "TEXT"),
    ("cache_read_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("cache_write_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("reasoning_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("row_id", "TEXT"),
)
GROUPS: Mapping[str, str] = {
    "model": "model",
    "provider": "provider",
    "workspace": "workspace",
    "policy": "policy",
    "outcome": "outcome",
    "client": "client",  # the calling API key's id (client-key budgets restore from it)
}
COLUMNS = (
    "ts",
    "workspace",
    "policy",
    "provider",
    "model",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_ms",
    "outcome",
    "fallback_index",
    "request_id",
    "cached",
    "client",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "row_id",
)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    workspace TEXT,
    policy TEXT,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd REAL,
    latency_ms REAL NOT NULL,
    outcome TEXT NOT NULL,
    fallback_index INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    cached INTEGER NOT NULL,
    client TEXT,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens INTEGER NOT NULL DEFAULT 0,
    row_id TEXT
);
CREATE INDEX IF NOT EXISTS attempts_by_time ON attempts (ts);
CREATE INDEX IF NOT EXISTS attempts_by_workspace ON attempts (workspace, ts);
PRAGMA application_id = {APPLICATION_ID};
"""


class LedgerQueries:
    """The read side, shared by the live ledger and the read-only `open_ledger`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        have = {row[1] for row in conn.execute("PRAGMA table_info(attempts)")}
        # A ledger from an older engine, opened read-only, lacks the newer columns: 0.
        self._aggregates = _AGGREGATES.format(
            *(name if name in have else "0" for name, _ in _ADDED if name.endswith("_tokens"))
        )

    def _select(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._conn.execute(sql, params)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def totals(self, workspace: str | None, since: float, by: str) -> Sequence[Mapping[str, Any]]:
        """Per `by` value (model, provider, ...): attempts, successes, tokens, cost.

        `cost_usd` sums the rows whose cost is known; `unknown_cost` counts the rows whose
        cost was unknown, so an unknown is never shown as a silent zero.
        """
        column = group_column(by)
        where, params = _where(workspace, since)
        sql = (
            f"SELECT {column} AS {by}, {self._aggregates} FROM attempts {where} "
            f"GROUP BY {column} ORDER BY cost_usd DESC, {column}"
        )
        return self._select(sql, params)

    def daily(self, workspace: str | None, since: float) -> Sequence[Mapping[str, Any]]:
        """One row per UTC day: attempts, successes, tokens, cost (known and unknown)."""
        where, params = _where(workspace, since)
        sql = (
            f"SELECT date(ts, 'unixepoch') AS day, {self._aggregates} FROM attempts {where} "
            "GROUP BY day ORDER BY day"
        )
        return self._select(sql, params)

    def spend_since(self, since: float) -> list[tuple[str, str, float]]:
        """`(workspace, 'YYYY-MM-DD', usd)` of known costs per workspace and UTC day."""
        sql = (
            "SELECT workspace, date(ts, 'unixepoch') AS day, SUM(cost_usd) AS usd "
            "FROM attempts WHERE ts >= ? AND workspace IS NOT NULL AND cost_usd IS NOT NULL "
            "GROUP BY workspace, day ORDER BY workspace, day"
        )
        return [(r["workspace"], r["day"], float(r["usd"])) for r in self._select(sql, [since])]

    def count(self) -> int:
        """How many rows are on disk (flushed)."""
        return int(self._select("SELECT COUNT(*) AS n FROM attempts", [])[0]["n"])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


_AGGREGATES = (
    "COUNT(*) AS attempts, "
    "SUM(outcome = 'ok') AS ok, "
    "SUM(cached) AS cached, "
    "SUM(input_tokens) AS input_tokens, "
    "SUM(output_tokens) AS output_tokens, "
    "SUM({0}) AS cache_read_tokens, "
    "SUM({1}) AS cache_write_tokens, "
    "SUM({2}) AS reasoning_tokens, "
    "COALESCE(SUM(cost_usd), 0.0) AS cost_usd, "
    "SUM(cost_usd IS NULL) AS unknown_cost"
)


def group_column(by: str) -> str:
    try:
        return GROUPS[by]
    except KeyError:
        raise ValueError(f"cannot group by {by!r}; choose one of {', '.join(GROUPS)}") from None


def _where(workspace: str | None, since: float) -> tuple[str, list[Any]]:
    if workspace is None:
        return "WHERE ts >= ?", [since]
    return "WHERE ts >= ? AND workspace = ?", [since, workspace]


def connect_writer(path: Path) -> sqlite3.Connection:
    """The writer's connection: creates the file and schema, switches to WAL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
    conn.executescript(_SCHEMA)
    _migrate(conn)
    # Row ids are unique by construction, and only a replay can bring one twice: it leaves
    # out what `stored_ids` finds. The UNIQUE index that used to catch them cost every row
    # ~5k instructions of the writer's ~34k (callgrind); files that have it lose it.
    conn.execute("DROP INDEX IF EXISTS attempts_by_row_id")
    conn.isolation_level = "DEFERRED"  # `with conn:` transactions for the batches
    return conn


def stored_ids(conn: sqlite3.Connection, since: float, until: float) -> set[str]:
    """The row ids stored from `since` to `until` (a range of the time index, so memory
    stays bounded by the rows of that span). A journal replayed after a crash between a
    batch's commit and the journal's `done` holds rows already stored, with the same `ts`:
    their ids are among these."""
    sql = "SELECT row_id FROM attempts WHERE ts BETWEEN ? AND ? AND row_id IS NOT NULL"
    return {row_id for (row_id,) in conn.execute(sql, (since, until))}


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a ledger written by an older engine to this schema (columns added in place)."""
    if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        return
    have = {row[1] for row in conn.execute("PRAGMA table_info(attempts)")}
    for name, definition in _ADDED:
        if name not in have:
            conn.execute(f"ALTER TABLE attempts ADD COLUMN {name} {definition}")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def connect_reader(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, check_same_thread=False)


def open_ledger(path: str | os.PathLike[str]) -> LedgerQueries:
    """Open an existing ledger read-only, or raise ConfigError saying precisely why not."""
    target = Path(path)
    if not target.is_file():
        raise _not_a_ledger(target, "no cost ledger at this path", "run the engine first")
    try:
        conn = sqlite3.connect(f"{target.resolve().as_uri()}?mode=ro", uri=True)
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise _not_a_ledger(target, f"not a cost ledger ({exc})", None) from None
    if app_id != APPLICATION_ID:
        conn.close()
        raise _not_a_ledger(target, "an SQLite file, but not a cost ledger", None)
    return LedgerQueries(conn)


def _not_a_ledger(path: Path, message: str, hint: str | None) -> ConfigError:
    hint = hint or "pass --ledger with the engine's ledger file, or set $ENGINE_LEDGER"
    return ConfigError([Diagnostic(message, file=str(path), hint=hint)])
