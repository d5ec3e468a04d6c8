"""`python -m engine schema [--write] [--dir schema/]`: the JSON Schemas of the config files.

The schemas are generated from the spec models, never edited by hand. Without `--write`
they are printed; with it, schema/models.schema.json and schema/route.schema.json are
rewritten (a test fails when the committed files are stale). `--check` exits 1 if stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.config.schema import render

FILES = {"models": "models.schema.json", "route": "route.schema.json"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--write", action="store_true", help="rewrite the files in --dir")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when the files in --dir are stale"
    )
    parser.add_argument("--dir", default="schema", help="where the schema files live")


def run(args: argparse.Namespace) -> int:
    out = Path(args.dir)
    if args.write:
        return _write(out)
    if args.check:
        stale = [n for k, n in FILES.items() if _read(out / n) != render(k)]  # type: ignore[arg-type]
        for name in stale:
            print(f"stale: {out / name} (run python -m engine schema --write)", file=sys.stderr)
        return 1 if stale else 0
    for kind in FILES:
        sys.stdout.write(render(kind))  # type: ignore[arg-type]
    return 0


def _write(out: Path) -> int:
    """Rewrite both files; a --dir that cannot be written is exit 1 with the reason."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        for kind, name in FILES.items():
            (out / name).write_text(render(kind), encoding="utf-8")  # type: ignore[arg-type]
            print(f"wrote {out / name}")
    except OSError as exc:
        print(f"schema: cannot write to {out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None
