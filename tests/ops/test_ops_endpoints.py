"""The ops routes of the real server process: health, limits, costs, explain, usage, auth."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from engine.testing.fakes import Fault
from tests.ops.conftest import MSG, Server, start


async def _traffic(server: Server, n: int = 3) -> None:
    """n chat calls; the first fails over from primary (500) to backup."""
    server.primary.script([Fault(status=500)])
    async with server.http() as http:
        for i in range(n):
            body = {"model": "chat", "messages": MSG, "metadata": {"workspace": f"ws{i % 2}"}}
            resp = await http.post("/v1/chat/completions", json=body)
            assert resp.status_code == 200, resp.text


def _ledger(server: Server, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(server.ledger) as db:
        return list(db.execute(sql))


async def test_costs_match_the_ledger_by_model_provider_workspace_and_day(
    served: Server,
) -> None:
    """GET /v1/costs returns the ledger's own sums for every grouping and window form."""
    await _traffic(served)
    async with served.http() as http:
        by_provider = (await http.get("/v1/costs", params={"by": "provider", "days": 1})).json()
        by_ws = (await http.get("/v1/costs", params={"by": "workspace", "period": "day"})).json()
        by_day = (await http.get("/v1/costs", params={"by": "day", "since": "2000-01-01"})).json()
        one_ws = (await http.get("/v1/costs", params={"workspace": "ws1", "by": "model"})).json()
    expected = dict(
        _ledger(served, "SELECT provider, SUM(COALESCE(cost_usd, 0)) FROM attempts GROUP BY 1")
    )
    assert {r["provider"]: r["cost_usd"] for r in by_provider["rows"]} == pytest.approx(expected)
    assert {r["provider"]: r["attempts"] for r in by_provider["rows"]} == {
        "primary": 3,
        "backup": 1,
    }
    total = sum(expected.values())
    assert total > 0
    assert by_ws["total_cost_usd"] == pytest.approx(total)
    assert {r["workspace"] for r in by_ws["rows"]} == {"ws0", "ws1"}
    assert by_day["total_cost_usd"] == pytest.approx(total) and len(by_day["rows"]) == 1
    (ws1,) = _ledger(served, "SELECT SUM(cost_usd) FROM attempts WHERE workspace = 'ws1'")
    assert one_ws["workspace"] == "ws1" and one_ws["total_cost_usd"] == pytest.approx(ws1[0])


async def test_costs_refuse_bad_parameters_with_400(served: Server) -> None:
    """A bad `by`, `days`, `period` or date is a 400 naming the problem, never a 500."""
    async with served.http() as http:
        for params, word in [
            ({"by": "colour"}, "by must be one of"),
            ({"days": "0"}, "days"),
            ({"days": "x"}, "days"),
            ({"period": "week"}, "period"),
            ({"since": "yesterday"}, "since"),
        ]:
            resp = await http.get("/v1/costs", params=params)
            assert resp.status_code == 400, params
            assert word in resp.json()["error"]["message"]


async def test_health_and_limits_report_each_provider(served: Server) -> None:
    """/v1/health gives status, breaker, traffic and keys; /v1/limits gives key headroom."""
    await _traffic(served)
    async with served.http() as http:
        health = (await http.get("/v1/health")).json()
        limits = (await http.get("/v1/limits")).json()
    primary = health["providers"]["primary"]
    assert primary["breaker"] == "closed" and primary["requests"] == 3
    assert primary["error_rate"] == pytest.approx(1 / 3)
    assert primary["keys"] == 1 and primary["keys_usable"] == 1
    assert primary["latency_p50_ms"] is not None and primary["latency_p95_ms"] is not None
    assert health["providers"]["backup"]["requests"] == 1
    assert health["status"] in ("healthy", "degraded")
    key = limits["providers"]["primary"]["keys"]
    assert len(key) == 1
    (view,) = key.values()
    assert view["in_flight"] == 0 and view["blocked_until"] is None
    assert limits["providers"]["primary"]["queued"] == 0


async def test_explain_routes_without_calling_a_provider(served: Server) -> None:
    """POST /v1/explain names the ranked candidates and sends nothing upstream."""
    async with served.http() as http:
        resp = await http.post("/v1/explain", json={"model": "chat", "messages": MSG})
        bad = await http.post("/v1/explain", json={"model": "nope", "messages": MSG})
        broken = await http.post("/v1/explain", content=b"{not json")
    assert resp.status_code == 200, resp.text
    ranked = [c["model"] for c in resp.json()["ranked"]]
    assert ranked[0] == "primary/gpt-4o-mini"
    assert served.primary.requests == [] and served.backup.requests == []
    assert bad.status_code == 404 and broken.status_code == 400


async def test_usage_records_an_outside_call_priced_like_any_other(served: Server) -> None:
    """POST /v1/usage lands in the ledger, stats and costs at the model's price."""
    body = {
        "model": "primary/gpt-4o-mini",
        "input_tokens": 1000,
        "output_tokens": 500,
        "workspace": "outside",
    }
    async with served.http() as http:
        resp = await http.post("/v1/usage", json=body)
        costs = (await http.get("/v1/costs", params={"workspace": "outside"})).json()
        stats = (await http.get("/v1/stats")).json()
        unknown = await http.post("/v1/usage", json={**body, "model": "x/y"})
        negative = await http.post("/v1/usage", json={**body, "input_tokens": -1})
        extra = await http.post("/v1/usage", json={**body, "prompt": "hi"})
    assert resp.status_code == 200, resp.text
    # 1000 * $1/M + 500 * $2/M
    assert resp.json()["cost_usd"] == pytest.approx(0.002)
    assert costs["total_cost_usd"] == pytest.approx(0.002)
    assert stats["engine"]["totals"]["requests"] == 1
    assert stats["engine"]["providers"]["primary"]["cost_usd"] == pytest.approx(0.002)
    assert unknown.status_code == 404 and negative.status_code == 400 and extra.status_code == 400


ADMIN_YAML = """\
admin_key_env: TEST_ADMIN_KEY
api_keys:
  - id: team-a
    key_env: TEST_TEAM_KEY
    workspace: team-a
"""


async def test_admin_key_guards_the_ops_routes(tmp_path: Path) -> None:
    """With an admin key, ops routes take only it: a client key gets 403, none gets 401."""
    env = {"TEST_ADMIN_KEY": "adm-0123456789", "TEST_TEAM_KEY": "team-0123456789"}
    async with (
        start(tmp_path, ADMIN_YAML, env) as server,
        server.http("adm-0123456789") as admin,
        server.http("team-0123456789") as team,
        server.http() as anonymous,
    ):
        assert (await anonymous.get("/v1/health")).status_code == 401
        assert (await team.get("/v1/health")).status_code == 403
        assert (await team.get("/v1/costs")).status_code == 403
        assert (await admin.get("/v1/health")).status_code == 200
        assert (await admin.get("/v1/limits")).status_code == 200
        usage = {"model": "backup/gpt-4o-mini", "input_tokens": 10, "output_tokens": 10}
        recorded = await team.post("/v1/usage", json={**usage, "workspace": "other"})
        costs = (await admin.get("/v1/costs", params={"by": "key"})).json()
    assert recorded.status_code == 200 and recorded.json()["workspace"] == "team-a"
    assert [r["key"] for r in costs["rows"]] == ["team-a"]
    assert "adm-0123456789" not in server.output() and "team-0123456789" not in server.output()


async def test_without_admin_key_a_workspace_key_sees_only_its_costs(tmp_path: Path) -> None:
    """No admin key: client keys reach ops routes, but costs are scoped to the key's workspace."""
    yaml = "api_keys:\n  - {id: a, key_env: KA, workspace: wa}\n  - {id: b, key_env: KB}\n"
    env = {"KA": "ka-0123456789", "KB": "kb-0123456789"}
    async with (
        start(tmp_path, yaml, env) as server,
        server.http("ka-0123456789") as a,
        server.http("kb-0123456789") as b,
    ):
        body = {"model": "chat", "messages": MSG}
        assert (await a.post("/v1/chat/completions", json=body)).status_code == 200
        assert (await b.post("/v1/chat/completions", json=body)).status_code == 200
        mine = (await a.get("/v1/costs", params={"workspace": "default"})).json()
        everyone = (await b.get("/v1/costs", params={"by": "workspace"})).json()
    assert mine["workspace"] == "wa" and mine["total_attempts"] == 1
    assert {r["workspace"] for r in everyone["rows"]} == {"wa", "default"}
