"""`python -m engine COMMAND ...`: a dispatcher over engine/commands/<command>.py.

Each command module exposes `add_arguments(parser)` and `run(args) -> int`, so commands
are small, testable as functions, and added without touching this file's logic beyond the
table below. Exit codes: 0 success, 1 findings/failure, 2 usage.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from engine.errors import EngineError

COMMANDS: dict[str, str] = {
    "validate": "check config files and report every problem as file:line:col",
    "explain": "show how a request would be routed, without calling any provider",
    "schema": "print or write the JSON Schemas generated from the spec models",
    "serve": "run the OpenAI-compatible routing server",
    "costs": "print spend from the cost ledger",
    "batch": "run a JSONL file of requests at bounded concurrency, results to a JSONL file",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        module = _module(name)
        if module is None:
            continue
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(cmd)
    return parser


def _module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"engine.commands.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"engine.commands.{name}":
            return None
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """Parse argv and run one command; returns the process exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    if not args.command:
        parser.print_help(sys.stderr)
        return 2
    module = _module(args.command)
    assert module is not None  # argparse only accepts commands whose module exists
    try:
        code: int = module.run(args)
    except BrokenPipeError:  # `... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except EngineError as exc:  # a command that let one escape still gets no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code
