"""Server plugins: hooks named by dotted path in server.yaml, loaded and checked at start.

    plugins:
      before_request: [myteam.hooks.redact_pii]      # (request) -> Request | dict | None
      after_response: [myteam.hooks.tag_answer]      # (request, response) -> dict | None
      on_error: [myteam.hooks.page_someone]          # (request, error) -> None

A path is `package.module.function` (or `package.module:function`); the function may be
plain or async. Every path is resolved when the server starts, so a typo stops `serve` with
a diagnostic naming the entry (`plugins.after_response.0`) rather than failing a request.
What an `after_response` hook returns becomes `Response.metadata`, which the chat route
sends as `x-engine-meta-<name>` headers.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import pkgutil
from collections.abc import Awaitable, Callable
from typing import Any

from engine.errors import ConfigError, Diagnostic
from engine.server.settings import PluginsSpec

Hook = Callable[..., Awaitable[Any]]
ARITY = {"before_request": 1, "after_response": 2, "on_error": 2}


def load_plugins(spec: PluginsSpec) -> dict[str, list[Hook]]:
    """Every named hook resolved and checked; ConfigError listing every bad entry."""
    loaded: dict[str, list[Hook]] = {name: [] for name in ARITY}
    problems: list[Diagnostic] = []
    for name in ARITY:
        for i, path in enumerate(getattr(spec, name)):
            where = f"plugins.{name}.{i}"
            try:
                loaded[name].append(_resolve(path, ARITY[name]))
            except ValueError as exc:
                problems.append(Diagnostic(str(exc), path=where, hint=_HINT))
    if problems:
        raise ConfigError(problems)
    return loaded


_HINT = "name an importable function as package.module.function"


def _resolve(path: str, arity: int) -> Hook:
    try:
        target = pkgutil.resolve_name(path)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"cannot load plugin {path!r}: {type(exc).__name__}: {exc}") from None
    if not callable(target):
        raise ValueError(f"plugin {path!r} is a {type(target).__name__}, not a function")
    try:
        inspect.signature(target).bind(*range(arity))
    except TypeError:
        raise ValueError(f"plugin {path!r} must take {arity} positional argument(s)") from None
    except ValueError:
        pass  # a builtin without a signature: trusted as is
    return target if inspect.iscoroutinefunction(target) else _in_thread(target)


def _in_thread(fn: Callable[..., Any]) -> Hook:
    """A plain function, run off the event loop so a slow one does not stall every request."""

    @functools.wraps(fn)
    async def call(*args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    return call


def install(engine: Any, hooks: dict[str, list[Hook]]) -> None:
    """Register the loaded hooks with the engine (`Engine.add_hook`), in file order."""
    for name, fns in hooks.items():
        for fn in fns:
            engine.add_hook(name, fn)
