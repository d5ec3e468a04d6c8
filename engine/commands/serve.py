"""`python -m engine serve`: run the OpenAI-compatible routing server.

Flags override ENGINE_* environment variables, which override `server.yaml` in the config
dir. The config is validated and compiled before binding, so a broken config exits 1 with
its diagnostics instead of starting a server that cannot route.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from engine.errors import ConfigError, Diagnostic

if TYPE_CHECKING:
    from engine.plan.compiled import Plan

_FLAG_ENV = {
    "config": "ENGINE_CONFIG",
    "host": "ENGINE_HOST",
    "port": "ENGINE_PORT",
    "workers": "ENGINE_WORKERS",
    "log_level": "ENGINE_LOG_LEVEL",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="DIR",
        help="directory with models.yaml and routes/ (env ENGINE_CONFIG; default .)",
    )
    parser.add_argument("--host", help="address to bind (env ENGINE_HOST; default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind (env ENGINE_PORT; default 8080)")
    parser.add_argument(
        "--workers", type=int, help="worker processes (env ENGINE_WORKERS; default 1)"
    )
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="env ENGINE_LOG_LEVEL"
    )
    parser.add_argument(
        "--insecure", action="store_true", help="allow binding beyond loopback without API keys"
    )


def export_flags(args: argparse.Namespace) -> None:
    """Put the flags in the environment, where every uvicorn worker reads its settings."""
    for name, env in _FLAG_ENV.items():
        value = getattr(args, name, None)
        if value is not None:
            os.environ[env] = str(value)
    if args.insecure:
        os.environ["ENGINE_INSECURE"] = "true"


def run(args: argparse.Namespace) -> int:
    from engine.assemble import load_plan
    from engine.server.plugins import load_plugins
    from engine.server.runner import banner, bind_problem, serve
    from engine.server.settings import load_settings

    export_flags(args)
    try:
        settings = load_settings()
        load_plugins(settings.plugins)  # a bad dotted path stops here, not in a worker
        plan, warnings = load_plan(settings.config_dir)
    except ConfigError as exc:
        print("engine serve: invalid configuration:", file=sys.stderr)
        for d in exc.diagnostics:
            print(f"  {d.format()}", file=sys.stderr)
        return 1
    if problem := bind_problem(settings):
        print(f"engine serve: {problem}", file=sys.stderr)
        return 2
    for d in _beyond_banner(warnings, plan):
        print(f"warning: {d.format()}", file=sys.stderr)
    print(banner(plan, settings), file=sys.stderr, flush=True)
    serve(settings)
    return 0


def _beyond_banner(warnings: list[Diagnostic], plan: Plan) -> list[Diagnostic]:
    """Warnings the banner does not already say: a disabled provider's unset variables are
    listed there with the reason, so printing them twice would only bury the rest."""
    disabled = {pid for pid, p in plan.providers.items() if not p.enabled}
    return [d for d in warnings if not _about(d, disabled)]


def _about(d: Diagnostic, providers: set[str]) -> bool:
    parts = d.path.split(".")
    return len(parts) > 1 and parts[0] == "providers" and parts[1] in providers
