"""`python -m engine costs`: spend from the cost ledger, totalled and broken down by day.

Reads the ledger read-only (safe while an engine is writing to it: WAL); a SQLite ledger
through the same queries as the server's GET /v1/costs (runtime/spend.py). The window is the
current UTC day or month (`--period`, the periods budgets use), the last N UTC days
(`--days`), or `--since`/`--until` (UTC dates, until exclusive). Output: an aligned table,
JSON, or CSV of the totals. Exit codes: 0 printed (even when nothing was spent), 1 no ledger
at the path or the file is not a ledger, 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import io
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import orjson

from engine.assemble import config_dir, default_ledger_path
from engine.errors import ConfigError
from engine.runtime.spend import DIMENSIONS, SpendReport
from engine.state.backends import POSTGRES_SCHEMES
from engine.state.ledger_file import open_ledger
from engine.state.money import day_start, month_start, utc_day
from engine.state.postgres_spend import PostgresSpendReport

_COLUMNS = (
    "attempts",
    "ok",
    "cached",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_usd",
)
_HEADERS = {
    "attempts": "attempts",
    "ok": "ok",
    "cached": "cached",
    "input_tokens": "input tokens",
    "cache_read_tokens": "cache read",
    "cache_write_tokens": "cache write",
    "output_tokens": "output tokens",
    "reasoning_tokens": "reasoning",
    "cost_usd": "cost (USD)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="DIR",
        help="config directory whose .engine/ledger.sqlite3 to read (default: $ENGINE_CONFIG or .)",
    )
    parser.add_argument(
        "--ledger",
        metavar="PATH|URL",
        help="ledger file or postgresql:// URL (default: $ENGINE_LEDGER_URL, $ENGINE_LEDGER "
        "or under --config)",
    )
    parser.add_argument("--workspace", metavar="W", help="one workspace (default: all)")
    window = parser.add_mutually_exclusive_group()
    window.add_argument(
        "--period", choices=("day", "month"), default="day", help="current UTC day or month"
    )
    window.add_argument("--days", type=_days, metavar="N", help="the last N UTC days, today too")
    window.add_argument("--since", type=_date, metavar="YYYY-MM-DD", help="from this UTC day")
    parser.add_argument(
        "--until", type=_date, metavar="YYYY-MM-DD", help="up to this UTC day (exclusive)"
    )
    parser.add_argument(
        "--by", choices=tuple(DIMENSIONS), default="model", help="how to group the totals"
    )
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table")


def _days(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 3660:
        raise argparse.ArgumentTypeError(f"expected a whole number of days from 1, got {text!r}")
    return int(text)


def _date(text: str) -> float:
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()


def window(args: argparse.Namespace, now: float) -> tuple[float, float | None, str]:
    """`[since, until)` from the flags, and how to name it."""
    until = args.until
    if args.days is not None:
        return day_start(now) - (args.days - 1) * 86400, until, f"the last {args.days} days"
    if args.since is not None:
        return args.since, until, f"since {utc_day(args.since)}"
    since = period_start(args.period, now)
    return since, until, "today" if args.period == "day" else "this month"


def run(args: argparse.Namespace) -> int:
    """Print totals and the daily breakdown; 1 with a precise message when no ledger."""
    since, until, label = window(args, time.time())
    url = args.ledger or os.environ.get("ENGINE_LEDGER_URL")
    if url and url.startswith(POSTGRES_SCHEMES):
        where = "the Postgres ledger"  # never the URL: it may carry a password
        try:
            totals, daily = asyncio.run(_postgres(url, args.workspace, since, until, args.by))
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            print(f"error: {where} is unreachable ({type(exc).__name__})", file=sys.stderr)
            return 1
    else:
        where = str(args.ledger or default_ledger_path(config_dir(args.config)))
        try:
            open_ledger(where)
        except ConfigError as exc:
            for diagnostic in exc.diagnostics:
                print(f"error: {diagnostic.format()}", file=sys.stderr)
            return 1
        totals, daily = _sqlite(where, args.workspace, since, until, args.by)
    report = {
        "ledger": where,
        "workspace": args.workspace,
        "period": label,
        "since": utc_day(since),
        "until": utc_day(until) if until is not None else None,
        "by": args.by,
        "totals": [dict(r) for r in totals],
        "daily": [dict(r) for r in daily],
    }
    report["total"] = _sum(report["totals"])
    if args.format == "json":
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        print(to_csv(report) if args.format == "csv" else render(report), end="")
    return 0


def _sqlite(
    path: str, workspace: str | None, since: float, until: float | None, by: str
) -> tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]]:
    spend = SpendReport(path)
    try:
        return spend.totals(by, since, until, workspace), spend.totals(
            "day", since, until, workspace
        )
    finally:
        spend.close()


async def _postgres(
    url: str, workspace: str | None, since: float, until: float | None, by: str
) -> tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]]:
    """Totals and days from the shared Postgres ledger (every replica's rows)."""
    spend = PostgresSpendReport(url)
    try:
        totals = await spend.totals(by, since, until, workspace)
        return totals, await spend.totals("day", since, until, workspace)
    finally:
        await spend.aclose()


def to_csv(report: Mapping[str, Any]) -> str:
    """The totals as CSV: the `by` column, then the figures (cost unrounded)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    by = report["by"]
    writer.writerow([by, *_COLUMNS, "unknown_cost"])
    for row in report["totals"]:
        writer.writerow([row[by], *(row[c] for c in (*_COLUMNS, "unknown_cost"))])
    return out.getvalue()


def period_start(period: str, now: float) -> float:
    """Unix time of 00:00 UTC today ('day') or on the 1st of this month ('month')."""
    return day_start(now) if period == "day" else month_start(now)


def _sum(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {c: 0 for c in (*_COLUMNS, "unknown_cost")}
    total["cost_usd"] = 0.0
    for row in rows:
        for column in total:
            total[column] += row[column] or 0
    return total


def render(report: Mapping[str, Any]) -> str:
    """The report as two aligned tables (by model/provider, then by day)."""
    who = f"workspace {report['workspace']!r}" if report["workspace"] else "all workspaces"
    until = f" until {report['until']} 00:00 UTC" if report["until"] else ""
    head = (
        f"Costs for {who}, {report['period']} (since {report['since']} 00:00 UTC{until}), "
        f"by {report['by']}"
    )
    if not report["totals"]:
        return f"{head}\n\nno attempts recorded in this period ({report['ledger']})\n"
    by = report["by"]
    rows = [*report["totals"], {by: "total", **report["total"]}]
    parts = [head, "", _table(by, rows), "", "Daily", "", _table("day", report["daily"])]
    unknown = report["total"]["unknown_cost"]
    if unknown:
        noun = "attempt" if unknown == 1 else "attempts"
        parts += ["", f"note: {unknown} {noun} of unknown cost (not counted as zero above)"]
    return "\n".join(parts) + "\n"


def _table(first: str, rows: Sequence[Mapping[str, Any]]) -> str:
    headers = [first, *(_HEADERS[c] for c in _COLUMNS)]
    body = [[str(r[first]), *(_cell(r, c) for c in _COLUMNS)] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(headers, *body, strict=True)]
    lines = [_line(headers, widths)] + [_line(cells, widths) for cells in body]
    return "\n".join(lines)


def _cell(row: Mapping[str, Any], column: str) -> str:
    value = row[column] or 0
    if column != "cost_usd":
        return str(value)
    text = f"{value:.6f}"
    return f"{text} (+{row['unknown_cost']} unknown)" if row.get("unknown_cost") else text


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    first = cells[0].ljust(widths[0])
    rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
    return "  ".join([first, *rest]).rstrip()
