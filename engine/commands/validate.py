"""`python -m engine validate PATH...`: check config files and report every problem at once.

PATH may be a config directory (models.yaml + routes/, and server.yaml when present), a
routes/ directory, models.yaml or single route files. Route files are checked against the
models.yaml beside (or above) them so references resolve. Declared provider limits lower
than what the provider last announced in its rate-limit headers (kept beside the ledger
while the engine serves, or `--announced FILE`) are warnings at the declared figure's
line. Output: one
`file:line:column: json.path: message (hint)` per line, sorted; `--format json` for CI.
Exit 0 when clean (warnings allowed), 1 on errors, 2 on usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from engine.assemble import announced_path
from engine.compile.announced import below_announced
from engine.compile.compiler import check_config, sort_diagnostics
from engine.config.project import ConfigSet, find_models_file, load_paths, route_files
from engine.errors import Diagnostic
from engine.server.settings import file_problems
from engine.state.announced import FILE_NAME as ANNOUNCED_FILE
from engine.state.announced import read as read_announced


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="config dir, routes/ dir, models.yaml or route files",
    )
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--strict", action="store_true", help="treat warnings as errors")
    parser.add_argument(
        "--announced",
        metavar="FILE",
        type=Path,
        help="limits providers announced, to compare declared limits with (default: "
        f"{ANNOUNCED_FILE} beside the ledger, written by the engine as it serves)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        cs, context = collect([Path(p) for p in args.paths])
    except UsageError as exc:
        print(f"validate: {exc}", file=sys.stderr)
        return 2
    _, found = check_config(cs, os.environ)
    found = sort_diagnostics(found + _below_announced(cs, args.announced))
    found = [d for d in found if d.file not in context]
    for path in {Path(p) for p in args.paths if Path(p).is_dir()}:
        found += file_problems(path)  # a config dir's server.yaml, when it has one
    _print(found, args.format)
    failing = {"error", "warning"} if args.strict else {"error"}
    return 1 if any(d.severity in failing for d in found) else 0


def _below_announced(cs: ConfigSet, path: Path | None) -> list[Diagnostic]:
    """Declared limits lower than what the providers announced, when that was kept."""
    if cs.models is None or cs.models_doc is None:
        return []
    if path is None:
        path = announced_path(Path(cs.models_doc.source).parent)
    return below_announced(cs.models, cs.models_doc, read_announced(path))


class UsageError(Exception):
    """A path that does not exist or is not config."""


def collect(paths: list[Path]) -> tuple[ConfigSet, set[str]]:
    """Sort the given paths into one models file and route files, like a config dir.

    A single route file is checked together with its sibling route files, so references
    to other policies resolve; those siblings are context only (returned second) and
    their own problems are not reported.
    """
    models: Path | None = None
    routes: list[Path] = []
    context: list[Path] = []
    for path in paths:
        if not path.exists():
            raise UsageError(f"no such file or directory: {path}")
        if path.is_dir():
            found = find_models_file(path)
            if found is not None:
                models = models or found
                sub = path / "routes"
                routes += route_files(sub) if sub.is_dir() else []
            else:
                routes += route_files(path)
                models = models or find_models_file(path.parent)
        elif path.stem == "models":
            models = path
        else:
            routes.append(path)
            context += route_files(path.parent)
            models = models or find_models_file(path.parent) or find_models_file(path.parent.parent)
    if models is None and not routes:
        raise UsageError(f"no models.yaml or route files in: {' '.join(map(str, paths))}")
    extra = [p for p in dict.fromkeys(context) if p not in routes]
    source = " ".join(map(str, paths))
    cs = load_paths(models, list(dict.fromkeys(routes)) + extra, os.environ, source=source)
    return cs, {str(p) for p in extra}


def _print(found: list[Diagnostic], fmt: str) -> None:
    if fmt == "json":
        errors = sum(d.severity == "error" for d in found)
        body = {
            "errors": errors,
            "warnings": len(found) - errors,
            "diagnostics": [d.as_dict() for d in found],
        }
        print(json.dumps(body, indent=2))
        return
    for d in found:
        print(d.format())
    errors = sum(d.severity == "error" for d in found)
    print(f"{errors} error(s), {len(found) - errors} warning(s)", file=sys.stderr)
