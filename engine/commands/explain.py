"""`python -m engine explain --policy P --request req.json [--config DIR]`: routing, dry.

Shows the path through the policy's tree, the ranked candidates with scores and estimated
cost, and every eliminated candidate with the reason, without calling any provider.
`--request -` reads the request JSON from standard input. Exit 1 when config or request
is invalid or nothing can be routed, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from engine.compile.compiler import load_plan
from engine.errors import ConfigError, EngineError
from engine.plan.compiled import Plan
from engine.plan.explain import explain, render_explain


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", help="policy name (default: the config's default policy)")
    parser.add_argument("--request", required=True, help="request JSON file, or - for stdin")
    parser.add_argument("--config", default=".", help="config directory (models.yaml + routes/)")
    parser.add_argument("--format", choices=("text", "json"), default="text")


def run(args: argparse.Namespace) -> int:
    body = _read_request(args.request)
    if body is None:
        return 2
    if not Path(args.config).is_dir():
        print(f"explain: no such config directory: {args.config}", file=sys.stderr)
        return 2
    try:
        plan, _ = load_plan(args.config, env=os.environ)
        policy = _policy(plan, args.policy, body)
        if policy is None:
            print(_NO_POLICY, file=sys.stderr)
            return 1
        data = explain(plan, policy, body)
    except ConfigError as exc:
        for d in exc.diagnostics:
            print(d.format(), file=sys.stderr)
        return 1
    except EngineError as exc:
        print(f"explain: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(data, indent=2) if args.format == "json" else render_explain(data))
    return 1 if data.get("error") else 0


_NO_POLICY = (
    "explain: no --policy given, the request's `model` names no policy, and the "
    "configuration has no default policy (add routes/default.yaml or pass --policy)"
)


def _policy(plan: Plan, flag: str | None, body: Any) -> str | None:
    """--policy, else the request's `model` if it names a policy (as at run time), else default."""
    model = body.get("model") if isinstance(body, dict) else None
    if flag:
        return flag
    if isinstance(model, str) and model in plan.policies:
        return model
    return plan.default_policy


def _read_request(where: str) -> Any:
    try:
        text = sys.stdin.read() if where == "-" else Path(where).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"explain: cannot read request {where}: {exc}", file=sys.stderr)
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        print(
            f"explain: {where}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}", file=sys.stderr
        )
        return None
