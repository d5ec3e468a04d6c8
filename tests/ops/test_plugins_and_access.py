"""Server plugins from server.yaml, request ids and JSON access logs, in the real process."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from engine.testing.fakes import Fault
from tests.ops.conftest import MSG, ROOT, Server, start
from tests.server.realstack import write_config

PLUGINS_YAML = """\
plugins:
  before_request: [tests.ops.sample_plugins.tag_workspace]
  after_response: [tests.ops.sample_plugins.annotate]
  on_error: ["tests.ops.sample_plugins:note_error"]
"""


async def test_plugins_change_the_request_annotate_the_answer_and_see_errors(
    tmp_path: Path,
) -> None:
    """before_request rewrites, after_response metadata reaches the client, on_error fires."""
    errors = tmp_path / "errors.txt"
    async with start(tmp_path, PLUGINS_YAML, {"PLUGIN_ERRORS": str(errors)}) as server:
        async with server.http() as http:
            ok = await http.post("/v1/chat/completions", json={"model": "chat", "messages": MSG})
            server.primary.script([Fault(status=500)])
            server.backup.script([Fault(status=500)])
            failed = await http.post(
                "/v1/chat/completions", json={"model": "chat", "messages": MSG}
            )
        sent = server.primary.requests[0].body
    assert ok.status_code == 200
    assert ok.headers["x-engine-meta-reviewed"] == "yes"
    assert ok.headers["x-engine-meta-answered-by"] == "primary"
    assert sent["messages"][0] == {"role": "system", "content": "plugin was here"}
    with sqlite3.connect(server.ledger) as db:
        workspaces = {w for (w,) in db.execute("SELECT workspace FROM attempts")}
    assert workspaces == {"plugged"}
    assert failed.status_code == 503
    # every attempt failed the same way: the typed final error (errors.all_failed)
    assert errors.read_text().split() == ["AllUnavailableError"]


def test_a_bad_plugin_path_stops_serve_with_a_diagnostic(tmp_path: Path) -> None:
    """A dotted path that does not import, or names no function, exits 1 naming the entry."""
    config = write_config(tmp_path, "http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1")
    (config / "server.yaml").write_text(
        "plugins:\n"
        "  before_request: [tests.ops.no_such_module.hook]\n"
        "  after_response: [tests.ops.sample_plugins.NOT_A_FUNCTION]\n"
        "  on_error: [tests.ops.sample_plugins.annotate, tests.ops.sample_plugins.tag_workspace]\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "engine", "serve", "--config", str(config), "--port", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert "plugins.before_request.0" in out.stderr and "no_such_module" in out.stderr
    assert "plugins.after_response.0" in out.stderr and "not a function" in out.stderr
    assert "plugins.on_error.1" in out.stderr and "2 positional" in out.stderr
    assert "plugins.on_error.0" not in out.stderr
    assert "Traceback" not in out.stderr


async def _logged(server: Server, request_id: str) -> list[dict[str, Any]]:
    """The JSON access-log lines once `request_id`'s is among them: a line is written after
    its response has left, so the client can read the answer first."""
    for _ in range(100):
        lines = [json.loads(x) for x in server.output().splitlines() if x.startswith("{")]
        if any(line.get("request_id") == request_id for line in lines):
            break
        await asyncio.sleep(0.05)
    return lines


async def test_request_id_is_echoed_and_logged_as_json(tmp_path: Path) -> None:
    """An incoming x-request-id comes back and lands in a JSON access-log line; a missing or
    unsafe one is replaced by a fresh id."""
    async with start(tmp_path, env={"ENGINE_ACCESS_LOG": "true"}) as server:
        async with server.http() as http:
            body = {"model": "chat", "messages": MSG}
            mine = await http.post(
                "/v1/chat/completions", json=body, headers={"x-request-id": "req-abc.123"}
            )
            fresh = await http.get("/v1/models")
            unsafe = await http.get("/v1/models", headers={"x-request-id": "a b\tc"})
            missing = await http.get("/nowhere", headers={"x-request-id": "lost-1"})
        lines = await _logged(server, "lost-1")
    assert mine.headers["x-request-id"] == "req-abc.123"
    assert len(fresh.headers["x-request-id"]) == 24
    assert unsafe.headers["x-request-id"] not in ("a b\tc", fresh.headers["x-request-id"])
    assert missing.status_code == 404 and missing.headers["x-request-id"] == "lost-1"
    by_id = {line["request_id"]: line for line in lines}
    chat = by_id["req-abc.123"]
    assert chat["status"] == 200 and chat["path"] == "/v1/chat/completions"
    assert chat["provider"] == "primary" and chat["model"] == "primary/gpt-4o-mini"
    assert float(chat["cost_usd"]) > 0 and chat["duration_ms"] > 0
    assert by_id["lost-1"]["status"] == 404
    assert "authorization" not in server.output().lower()
