"""eng.record / arecord and after_response metadata, through the public Python API."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import Engine
from engine.errors import RequestError, UnknownModelError
from engine.testing.fakes import FakeOpenAI
from tests.ops.conftest import MSG
from tests.server.realstack import write_config


async def test_arecord_prices_an_outside_call_into_stats_ledger_and_budget(
    tmp_path: Path,
) -> None:
    """A recorded call shows in stats, the ledger and the workspace's spend at plan prices."""
    config = write_config(tmp_path, "http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1")
    eng = Engine.from_config(config, ledger_path=str(tmp_path / "l.sqlite3"))
    async with eng:
        out = await eng.arecord(
            model="backup/gpt-4o-mini", input_tokens=2000, output_tokens=1000, workspace="w"
        )
        failed = await eng.arecord(
            model="backup/gpt-4o-mini", input_tokens=5, output_tokens=0, outcome="timeout"
        )
        await eng.flush_ledger()
        rows = await eng._svc.ledger.totals("w", 0, "model")
        stats = eng.stats()
        spent = await eng.aspent("w")
        with pytest.raises(UnknownModelError):
            await eng.arecord(model="nobody/none", input_tokens=1, output_tokens=1)
        with pytest.raises(RequestError):
            await eng.arecord(model="backup/gpt-4o-mini", input_tokens="many")
    assert out["cost_usd"] == pytest.approx(0.004)  # 2000 * $1/M + 1000 * $2/M
    assert failed["cost_usd"] is None
    assert [(r["model"], r["cost_usd"]) for r in rows] == [("backup/gpt-4o-mini", 0.004)]
    assert stats["totals"]["requests"] == 2 and stats["totals"]["failures"] == 1
    assert stats["providers"]["backup"]["cost_usd"] == pytest.approx(0.004)
    assert spent["day"] == pytest.approx(0.004)


async def test_after_response_hook_metadata_lands_on_the_response(tmp_path: Path) -> None:
    """What an after_response hook returns is the Response's metadata (read-only, merged)."""
    async with FakeOpenAI() as up:
        config = write_config(tmp_path, up.url, up.url)
        eng = Engine.from_config(config, ledger_path=str(tmp_path / "l.sqlite3"))

        @eng.hook("after_response")
        async def first(request: object, response: object) -> dict[str, str]:
            return {"a": "1", "b": "1"}

        @eng.hook("after_response")
        async def second(request: object, response: object) -> None:
            return None

        eng.add_hook("after_response", third)
        async with eng:
            resp = await eng.arun({"messages": MSG}, policy="chat")
    assert dict(resp.metadata) == {"a": "1", "b": "2", "c": "primary"}
    assert hash(resp)  # still a hashable value
    with pytest.raises(TypeError):
        resp.metadata["d"] = "x"  # type: ignore[index]


async def third(request: object, response: object) -> dict[str, object]:
    return {"b": 2, "c": getattr(response, "provider", "")}
