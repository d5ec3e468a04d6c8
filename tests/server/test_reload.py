"""Hot reload: a good edit is applied, a broken edit keeps the old config and logs why."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from engine.errors import ConfigError, Diagnostic
from engine.plan.compiled import Plan
from engine.server.reload import ConfigWatcher
from tests.server.conftest import serving
from tests.server.standin import StandInEngine

MSG = [{"role": "user", "content": "hi"}]


def tiny_loader(config_dir: Path) -> tuple[Plan, Sequence[Diagnostic]]:
    """A stand-in compiler: one policy per routes/*.yaml; a file saying `broken` fails."""
    names = {}
    for p in sorted((config_dir / "routes").glob("*.yaml")):
        if "broken" in p.read_text():
            raise ConfigError([Diagnostic("not a policy", file=str(p), line=1, column=1)])
        names[p.stem] = object()
    base = StandInEngine().plan
    return Plan(models=base.models, providers=base.providers, policies=names), []


def _config(tmp_path: Path) -> Path:
    (tmp_path / "routes").mkdir()
    (tmp_path / "models.yaml").write_text("models: {}\n")
    (tmp_path / "routes" / "fast.yaml").write_text("policy: fast\n")
    return tmp_path


async def test_good_edit_is_applied(tmp_path: Path) -> None:
    """Adding a policy file makes the new policy servable after the next check."""
    engine = StandInEngine()
    watcher = ConfigWatcher(_config(tmp_path), tiny_loader, engine.reload)
    async with serving(engine, watcher=watcher) as running, running.http() as http:
        (tmp_path / "routes" / "turbo.yaml").write_text("policy: turbo\n")
        assert await watcher.check() is True
        resp = await http.post("/v1/chat/completions", json={"model": "turbo", "messages": MSG})
    assert resp.status_code == 200
    assert set(engine.plan.policies) == {"fast", "turbo"}


async def test_broken_edit_keeps_old_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken edit is rejected, its diagnostics logged, and the old policies keep serving."""
    engine = StandInEngine()
    watcher = ConfigWatcher(_config(tmp_path), tiny_loader, engine.reload)
    async with serving(engine, watcher=watcher) as running, running.http() as http:
        (tmp_path / "routes" / "fast.yaml").write_text("broken: [\n")
        with caplog.at_level(logging.ERROR, "engine.server.reload"):
            assert await watcher.check() is False
        resp = await http.post("/v1/chat/completions", json={"model": "fast", "messages": MSG})
    assert resp.status_code == 200
    assert engine.reloaded == []
    assert "fast.yaml:1:1: not a policy" in caplog.text
    assert watcher.failures == 1


async def test_no_change_means_no_recompile(tmp_path: Path) -> None:
    """Checking an unchanged config does not call the compiler."""
    calls: list[Path] = []

    def counting(config_dir: Path) -> tuple[Plan, Sequence[Diagnostic]]:
        calls.append(config_dir)
        return tiny_loader(config_dir)

    watcher = ConfigWatcher(_config(tmp_path), counting, StandInEngine().reload)
    assert await watcher.check() is False
    assert calls == []


def test_a_replaced_plan_is_freed_without_the_cyclic_collector(tmp_path: Path) -> None:
    """A compiled plan holds no reference cycles, so the one the server froze at start-up
    (runner.settle_heap) is still freed by refcounting when a reload replaces it."""
    import gc

    from engine.assemble import load_plan
    from tests.server.realstack import write_config

    config = write_config(tmp_path, "http://127.0.0.1:9/v1", "http://127.0.0.1:8/v1")
    plan, _ = load_plan(config)
    gc.collect()  # the compiler's own temporary garbage
    del plan
    assert gc.collect() == 0
