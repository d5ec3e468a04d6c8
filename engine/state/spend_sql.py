"""What a spend report may group by and bucket on, for both ledgers' SQL.

The SQLite report (engine.runtime.spend) and the Postgres one (engine.state.
postgres_spend) accept the same `by` and `bucket` values and answer them the same way;
only the SQL for a UTC day differs, so each passes its own. Kept here, in state, because
the runtime may import state but not the other way round.
"""

from __future__ import annotations

__all__ = ["BUCKETS", "bucket_width", "dimensions", "group_column"]

#: `bucket` values of a series and their width in seconds.
BUCKETS: dict[str, int] = {"minute": 60, "hour": 3600, "day": 86400}


def dimensions(day_sql: str) -> dict[str, str]:
    """`by` values and the SQL each groups on (never user text in the SQL)."""
    return {
        "model": "model",
        "provider": "provider",
        "workspace": "COALESCE(workspace, 'default')",
        "policy": "COALESCE(policy, '')",
        "outcome": "outcome",
        "key": "COALESCE(client, '')",
        "day": day_sql,
    }


def group_column(by: str, choices: dict[str, str]) -> str:
    """The SQL for a `by` value; ValueError naming the choices for anything else."""
    try:
        return choices[by]
    except KeyError:
        raise ValueError(f"cannot group by {by!r}; choose one of {', '.join(choices)}") from None


def bucket_width(bucket: str) -> int:
    """Seconds per `bucket`; ValueError naming the choices for anything else."""
    width = BUCKETS.get(bucket)
    if width is None:
        raise ValueError(f"unknown bucket {bucket!r}; choose one of {', '.join(BUCKETS)}")
    return width
