"""`python -m engine batch requests.jsonl --policy P --concurrency N --out results.jsonl`.

Each input line is one chat request (the body of POST /v1/chat/completions; an optional
`custom_id` names it, else its line number does); a line's own `model` (a policy or a
`provider/name`) wins over `--policy`, which is for the lines that name none. Requests run
at most `--concurrency` at a time through one engine (config, ledger and budgets as `serve`
uses them); each result is appended to `--out` as soon as it is known, one JSON line:

    {"line": 3, "custom_id": "q3", "ok": true, "response": {chat.completion...},
     "provider": "openai", "model": "openai/gpt-4o-mini", "cost_usd": 0.0001, "attempts": 1}
    {"line": 4, "custom_id": null, "ok": false, "error": {"type": "BudgetExceededError",
     "message": "..."}}

A failure is kept as that line's value and the others go on. Running the same command again
skips the lines already answered (`ok`) in `--out` and retries the rest; at the end the file
holds one line per request, in input order. A progress bar goes to stderr. Exit codes: 0 all
answered, 1 some failed (see the file) or the config is invalid, 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import orjson

from engine.errors import ConfigError
from engine.secrets import redact


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("requests", metavar="REQUESTS.jsonl", help="one request JSON per line")
    parser.add_argument("--out", required=True, metavar="RESULTS.jsonl", help="results file")
    parser.add_argument("--policy", help="policy (or provider/model) for lines that name none")
    parser.add_argument("--concurrency", type=_positive, default=8, metavar="N")
    parser.add_argument(
        "--config", default=os.environ.get("ENGINE_CONFIG", "."), metavar="DIR",
        help="directory with models.yaml and routes/ (default: $ENGINE_CONFIG or .)",
    )  # fmt: skip


def _positive(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 1000, got {text!r}")
    return int(text)


def run(args: argparse.Namespace) -> int:
    source, out = Path(args.requests), Path(args.out)
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"batch: cannot read {source}: {exc}", file=sys.stderr)
        return 2
    todo = [(i, text) for i, text in enumerate(lines, 1) if text.strip()]
    done = answered(out)
    pending = [(i, text) for i, text in todo if i not in done]
    if len(todo) > len(pending):
        print(f"batch: {len(todo) - len(pending)} lines already answered in {out}", file=sys.stderr)
    try:
        from engine.assemble import Engine

        engine = Engine.from_config(args.config)
    except ConfigError as exc:
        for d in exc.diagnostics:
            print(f"batch: {d.format()}", file=sys.stderr)
        return 1
    asyncio.run(_run_all(engine, pending, args.policy, args.concurrency, out))
    final = compact(out, {i for i, _ in todo})
    failed = sum(1 for r in final.values() if not r.get("ok"))
    print(f"batch: {len(final) - failed} answered, {failed} failed -> {out}", file=sys.stderr)
    return 1 if failed else 0


def answered(out: Path) -> dict[int, dict[str, Any]]:
    """The lines of a previous run's results that were answered (latest entry wins)."""
    return {i: r for i, r in read_results(out).items() if r.get("ok")}


def read_results(out: Path) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    if not out.is_file():
        return found
    for text in out.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = orjson.loads(text)
        except orjson.JSONDecodeError:
            continue  # a line cut short by a killed run: that request is simply redone
        if isinstance(entry, dict) and isinstance(entry.get("line"), int):
            found[entry["line"]] = entry
    return found


def compact(out: Path, wanted: set[int]) -> dict[int, dict[str, Any]]:
    """Rewrite the results file with one entry per input line, in input order."""
    results = {i: r for i, r in read_results(out).items() if i in wanted}
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("wb") as f:
        for i in sorted(results):
            f.write(orjson.dumps(results[i]) + b"\n")
    tmp.replace(out)
    return results


async def _run_all(
    engine: Any, pending: list[tuple[int, str]], policy: str | None, concurrency: int, out: Path
) -> None:
    bar = Progress(len(pending), sys.stderr)
    gate = asyncio.Semaphore(concurrency)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with out.open("ab") as sink:

            async def one(line: int, text: str) -> None:
                async with gate:
                    entry = await _answer(engine, line, text, policy)
                sink.write(orjson.dumps(entry) + b"\n")
                sink.flush()  # a killed run keeps every answer it got
                bar.step(bool(entry["ok"]))

            async with asyncio.TaskGroup() as group:
                for line, text in pending:
                    group.create_task(one(line, text))
    finally:
        bar.finish()
        await engine.aclose()


async def _answer(engine: Any, line: int, text: str, policy: str | None) -> dict[str, Any]:
    """One line's result: the answer, or its error as a value."""
    custom_id: Any = None
    try:
        body = orjson.loads(text)
        if not isinstance(body, dict):
            raise ValueError(f"line {line} is not a JSON object")
        custom_id = body.pop("custom_id", None)
        resp = await engine.arun(body, None if body.get("model") else policy)
    except Exception as exc:  # kept as this line's value; the other lines go on
        message = redact(str(exc))
        error = {"type": type(exc).__name__, "message": message}
        return {"line": line, "custom_id": custom_id, "ok": False, "error": error}
    return {
        "line": line,
        "custom_id": custom_id,
        "ok": True,
        "response": resp.to_openai(),
        "provider": resp.provider,
        "model": resp.model,
        "cost_usd": resp.cost_usd,
        "attempts": len(resp.attempts),
    }


class Progress:
    """`[#####.....] 12/40  ok 11  failed 1  3.2/s` on one stderr line, redrawn in place."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.stream = total, stream
        self.done = self.failed = 0
        self.started = time.monotonic()
        self._draw()

    def step(self, ok: bool) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        self._draw()

    def _draw(self) -> None:
        filled = self.WIDTH * self.done // self.total if self.total else self.WIDTH
        rate = self.done / max(time.monotonic() - self.started, 1e-6)
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.done}/{self.total}"
            f"  ok {self.done - self.failed}  failed {self.failed}  {rate:.1f}/s"
        )
        self.stream.flush()

    def finish(self) -> None:
        self.stream.write("\n")
        self.stream.flush()
