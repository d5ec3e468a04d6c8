"""Hot reload of a hostile config: bounded, counted, reported, and the old plan serves on."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from engine.assemble import Engine, load_plan
from engine.errors import Diagnostic
from engine.plan.compiled import Plan
from engine.server.reload import ConfigWatcher
from tests.config.test_load_limits import alias_bomb
from tests.server.conftest import serving
from tests.server.standin import StandInEngine

ROOT = Path(__file__).resolve().parents[2]
MSG = [{"role": "user", "content": "hi"}]


def _config(tmp_path: Path) -> Path:
    (tmp_path / "routes").mkdir()
    (tmp_path / "models.yaml").write_text((ROOT / "models.yaml").read_text())
    (tmp_path / "routes" / "default.yaml").write_text(
        "strategy: ordered\ncandidates: [mock/smart]\n"
    )
    return tmp_path


@pytest.mark.parametrize(
    "text", [alias_bomb(4, 12), "x: &x [1, *x]\n", "x: " + "[" * 3000 + "]" * 3000 + "\n"]
)
async def test_a_hostile_edit_is_rejected_counted_and_exported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str
) -> None:
    """Alias bomb, recursive alias, deep nesting: the reload fails with file:line in the log,
    `engine_config_reload_failures_total` says 1, and the previous plan keeps answering."""
    config = _config(tmp_path)
    engine = Engine.from_config(config)
    watcher = ConfigWatcher(config, load_plan, engine.reload)
    async with serving(engine, watcher=watcher) as running, running.http() as http:
        (config / "routes" / "evil.yaml").write_text(text)
        with caplog.at_level(logging.ERROR, "engine.server.reload"):
            assert await watcher.check() is False
        resp = await http.post("/v1/chat/completions", json={"model": "default", "messages": MSG})
        scrape = (await http.get("/metrics")).text
    assert resp.status_code == 200
    assert watcher.failures == 1
    assert "engine_config_reload_failures_total 1.0" in scrape
    assert "engine_config_reloads_total 0.0" in scrape
    assert "evil.yaml:" in caplog.text


async def test_an_unexpected_loader_crash_is_counted_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A loader that raises something other than ConfigError (a bug) is still a counted,
    logged failure; the watcher returns instead of raising."""

    def crashing(config_dir: Path) -> tuple[Plan, Sequence[Diagnostic]]:
        raise RecursionError("maximum recursion depth exceeded")

    config = _config(tmp_path)
    watcher = ConfigWatcher(config, crashing, StandInEngine().reload)
    (config / "routes" / "more.yaml").write_text("strategy: ordered\n")
    with caplog.at_level(logging.ERROR, "engine.server.reload"):
        assert await watcher.check() is False
    assert watcher.failures == 1
    assert "RecursionError" in caplog.text
