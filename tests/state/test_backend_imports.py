"""The networked backends load only when their URL is set (engine/state/backends.py).

redis-py (with the OpenTelemetry it imports) and asyncpg are a quarter of an embedded
process's heap, which every full collection of the cyclic GC walks; a process that names
no Redis and no Postgres must not pay for them. Each case runs in a fresh interpreter, so
what this test process has already imported cannot hide an import."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from engine import Engine
    eng = Engine.from_config(sys.argv[1], **json.loads(sys.argv[2]))
    import engine.server.app, engine.cli  # the server and the CLI import no backend either
    print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & {
        "redis", "asyncpg", "opentelemetry"})))
    """
)


MODELS = """
providers:
  p: {protocol: openai, base_url: "http://127.0.0.1:9/v1", api_key: sk-test-0123456789}
models:
  p/m: {capabilities: [chat], context_window: 1000, max_output: 100,
        input_price: 1, output_price: 2}
"""
ROUTE = "strategy: ordered\ncandidates: [p/m]\n"


def _loaded(tmp_path: Path, **kwargs: str) -> list[str]:
    (tmp_path / "models.yaml").write_text(MODELS)
    (tmp_path / "routes").mkdir()
    (tmp_path / "routes" / "r.yaml").write_text(ROUTE)
    kwargs.setdefault("ledger_path", str(tmp_path / "ledger.sqlite3"))
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), json.dumps(kwargs)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        check=True,
    )
    loaded: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


def test_an_embedded_engine_loads_neither_redis_nor_asyncpg(tmp_path: Path) -> None:
    assert _loaded(tmp_path) == []


def test_a_state_url_loads_redis(tmp_path: Path) -> None:
    # Connecting is lazy: building the engine needs no Redis listening at the URL.
    assert "redis" in _loaded(tmp_path, state_url="redis://127.0.0.1:9/0")
