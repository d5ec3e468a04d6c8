"""Hot reload: poll models.yaml and routes/ for changes; compile first, swap only if it compiles.

A polling watcher (a stat() per file every few seconds) needs no extra dependency and works
on every filesystem. On a change the whole config is validated and compiled off the event
loop; a broken edit logs its diagnostics and the server keeps serving the previous plan.
Every rejected edit is counted (`failures`, exported as `engine_config_reload_failures_total`),
whatever the loader raised: a config error, or anything unexpected (which is logged with its
traceback, since it is a bug in the engine rather than in the file).
Requests already in flight keep the plan they started with, because `Engine.reload` swaps
one immutable Plan reference.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from engine.errors import ConfigError, Diagnostic
from engine.plan.compiled import Plan

log = logging.getLogger("engine.server.reload")

Fingerprint = tuple[tuple[str, int, int], ...]
Loader = Callable[[Path], tuple[Plan, Sequence[Diagnostic]]]


def fingerprint(config_dir: Path) -> Fingerprint:
    """(path, mtime_ns, size) of every config file: cheap to take, changes on any edit."""
    paths = [config_dir / "models.yaml"]
    routes = config_dir / "routes"
    if routes.is_dir():
        paths += sorted(p for p in routes.rglob("*") if p.suffix in (".yaml", ".yml"))
    out = []
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            continue
        out.append((str(p), st.st_mtime_ns, st.st_size))
    return tuple(out)


class ConfigWatcher:
    """Recompiles the config when its files change and hands good plans to `apply`."""

    def __init__(
        self,
        config_dir: Path,
        load: Loader,
        apply: Callable[[Plan], object],
        interval_s: float = 2.0,
    ) -> None:
        self.config_dir = config_dir
        self.load = load
        self.apply = apply
        self.interval_s = interval_s
        self.last = fingerprint(config_dir)
        self.reloads = 0
        self.failures = 0
        self.last_diagnostics: tuple[Diagnostic, ...] = ()

    async def check(self) -> bool:
        """Reload if anything changed; True when a new plan was applied."""
        now = fingerprint(self.config_dir)
        if now == self.last:
            return False
        self.last = now
        try:
            plan, warnings = await asyncio.to_thread(self.load, self.config_dir)
        except ConfigError as exc:
            self._rejected(exc.diagnostics)
            return False
        except Exception as exc:  # a bug, not a bad file: still counted, still not fatal
            log.exception("config reload crashed in the loader")
            self._rejected([Diagnostic(f"internal error while loading: {type(exc).__name__}")])
            return False
        self.apply(plan)
        self.reloads += 1
        self.last_diagnostics = tuple(warnings)
        log.warning("config reloaded from %s", self.config_dir)
        for d in warnings:
            log.warning("config warning: %s", d.format())
        return True

    def _rejected(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.failures += 1
        self.last_diagnostics = tuple(diagnostics)
        log.error("config change rejected; still serving the previous config")
        for d in diagnostics:
            log.error("  %s", d.format())

    async def run(self) -> None:
        """Poll forever (cancel to stop); an unexpected error is logged, never fatal."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except Exception:
                log.exception("config reload failed; still serving the previous config")
