"""The dashboard in a real browser (Debian's headless chromium) over the real server process.

After real traffic through the server, the charts must show what the ledger holds: spend per
model, provider, workspace and client key, attempts per provider, budget burn, failovers;
and the page must refresh on its own when more traffic arrives. ENGINE_SCREENSHOT=path
keeps a screenshot (docs/dashboard.png is made that way).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

from engine.testing.fakes import Fault
from tests.ops.conftest import MSG, Server, start

KEYS = {"ADMIN_KEY": "adm-dash-0123456789", "KA": "ka-dash-0123456789", "KB": "kb-dash-0123456789"}
SERVER_YAML = """\
admin_key_env: ADMIN_KEY
api_keys:
  - {id: team-a, key_env: KA, workspace: research}
  - {id: team-b, key_env: KB, budget_usd: 0.5}
"""
BUDGET = "budget: {daily_usd: 0.002, monthly_usd: 0.05}\n"


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError(f"none of {names} is installed (make test installs them)")


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = Options()
    options.binary_location = _binary("chromium", "chromium-browser")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1500,1250", "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(_binary("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()


async def _traffic(server: Server) -> None:
    """Calls from both keys, one failing over, in two workspaces."""
    server.primary.script([Fault(status=500)])
    async with server.http(KEYS["KA"]) as a, server.http(KEYS["KB"]) as b:
        for client, n in ((a, 3), (b, 2)):
            for _ in range(n):
                body = {"model": "chat", "messages": MSG, "max_tokens": 64}
                resp = await client.post("/v1/chat/completions", json=body)
                assert resp.status_code == 200, resp.text


def _ledger(server: Server, sql: str) -> dict[str, Any]:
    with sqlite3.connect(server.ledger) as db:
        return {str(k): v for k, v in db.execute(sql)}


async def _wait(driver: webdriver.Chrome, script: str, expected: Any = True) -> Any:
    """Poll a script in the page (bounded: about 20 s) until it returns `expected`."""
    value = None
    for _ in range(400):
        value = await asyncio.to_thread(driver.execute_script, script)
        if value == expected:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"{script!r} gave {value!r}, wanted {expected!r}")


def _chart_sums(driver: webdriver.Chrome, chart: str) -> dict[str, float]:
    """Per dataset label, the sum of its values, as the chart holds them."""
    data = driver.execute_script(f"return Chart.getChart('{chart}').data")
    return {d["label"]: sum(x or 0 for x in d["data"]) for d in data["datasets"]}


async def test_dashboard_charts_show_what_the_ledger_holds(
    tmp_path: Path, browser: webdriver.Chrome
) -> None:
    """Every chart's numbers equal the ledger's (and stats'), and the page refreshes itself."""
    async with start(tmp_path, SERVER_YAML, KEYS, routes_extra=BUDGET) as server:
        await _traffic(server)
        url = f"{server.url}/dashboard?refresh=2#key={KEYS['ADMIN_KEY']}"
        await asyncio.to_thread(browser.get, url)
        await _wait(browser, "return window.dashboard.data !== null")
        assert await asyncio.to_thread(browser.execute_script, "return location.hash") == ""

        for by, column in (("model", "model"), ("provider", "provider"),
                           ("workspace", "workspace"), ("key", "client")):  # fmt: skip
            ledger = _ledger(server, f"SELECT {column}, SUM(cost_usd) FROM attempts GROUP BY 1")
            assert _chart_sums(browser, f"spend-{by}") == pytest.approx(ledger), by
        total = sum(_ledger(server, "SELECT 1, SUM(cost_usd) FROM attempts").values())
        text = browser.find_element("id", "total-cost").text
        assert text == f"${total:.6f}"

        attempts = _ledger(server, "SELECT provider, COUNT(*) FROM attempts GROUP BY 1")
        failures = _ledger(
            server, "SELECT provider, COUNT(*) FROM attempts WHERE outcome != 'ok' GROUP BY 1"
        )
        chart = browser.execute_script("return Chart.getChart('provider-requests').data")
        requests = dict(zip(chart["labels"], chart["datasets"][0]["data"], strict=True))
        failed = dict(zip(chart["labels"], chart["datasets"][1]["data"], strict=True))
        assert requests == attempts and failed == {p: failures.get(p, 0) for p in attempts}
        errors = browser.execute_script("return Chart.getChart('provider-errors').data")
        rates = dict(zip(errors["labels"], errors["datasets"][0]["data"], strict=True))
        assert rates["primary"] == pytest.approx(100 * failures["primary"] / attempts["primary"])

        spent = _ledger(server, "SELECT workspace, SUM(cost_usd) FROM attempts GROUP BY 1")
        burn = browser.execute_script("return Chart.getChart('budget-burn').data")
        used = dict(zip(burn["labels"], burn["datasets"][0]["data"], strict=True))
        assert used["research (day)"] == pytest.approx(100 * spent["research"] / 0.002)
        assert used["default (month)"] == pytest.approx(100 * spent["default"] / 0.05)
        by_key = _ledger(server, "SELECT client, SUM(cost_usd) FROM attempts GROUP BY 1")
        assert used["key team-b"] == pytest.approx(100 * by_key["team-b"] / 0.5)

        failovers = browser.find_element("id", "failovers").text
        assert "primary/gpt-4o-mini unavailable → backup/gpt-4o-mini ok" in failovers

        shot = os.environ.get("ENGINE_SCREENSHOT")
        if shot:
            await asyncio.to_thread(browser.save_screenshot, shot)

        await _traffic(server)  # more spend: the page must pick it up by itself
        await _flushed(server, 10 + 1)
        newer = sum(_ledger(server, "SELECT 1, SUM(cost_usd) FROM attempts").values())
        assert newer > total
        await _wait(
            browser, "return document.getElementById('total-cost').textContent", f"${newer:.6f}"
        )


async def _flushed(server: Server, rows: int) -> None:
    """Wait (bounded) until the ledger file holds `rows` attempts (the writer batches)."""
    for _ in range(400):
        if sum(_ledger(server, "SELECT 1, COUNT(*) FROM attempts").values()) >= rows:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("ledger rows never reached the file")


async def test_dashboard_refuses_data_without_the_admin_key(tmp_path: Path) -> None:
    """The page is public (it holds no data); its data needs the admin key."""
    async with start(tmp_path, SERVER_YAML, KEYS) as server:
        async with server.http() as anonymous, server.http(KEYS["KA"]) as team:
            page = await anonymous.get("/dashboard")
            script = await anonymous.get("/dashboard/chart.umd.min.js")
            licence = await anonymous.get("/dashboard/LICENSE.chartjs.md")
            missing = await anonymous.get("/dashboard/secret.txt")
            assert (await anonymous.get("/v1/dashboard")).status_code == 401
            assert (await team.get("/v1/dashboard")).status_code == 403
            bad = await team.get("/v1/dashboard", params={"hours": "lots"})
        async with server.http(KEYS["ADMIN_KEY"]) as admin:
            data = await admin.get("/v1/dashboard", params={"hours": "1"})
            wrong = await admin.get("/v1/dashboard", params={"hours": "-3"})
    assert page.status_code == 200 and "chart.umd.min.js" in page.text
    assert script.status_code == 200 and "Chart.js v4" in script.text
    assert "MIT License" in licence.text and missing.status_code == 404
    assert bad.status_code == 403
    assert data.status_code == 200 and data.json()["window"]["bucket"] == "minute"
    assert wrong.status_code == 400
