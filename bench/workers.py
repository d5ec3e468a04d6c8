"""What `serve --workers 2` buys: throughput of one worker against two, same upstream, same run.

    python -m bench.workers [--rounds 3] [--seconds 10] [--state redis|sqlite|both]

Starts the fast fake upstream (bench.proxy_apps) and, for `redis`, a real redis-server on
a free loopback port; then, one at a time, `python -m engine serve` with 1 and with 2
workers, and drives each at 50 requests in flight from a separate load process
(bench.proxy's load generator). The route has a daily budget and the key a requests-per-
minute limit far above what is sent, so every call reserves and settles a budget and books
a rate-limit lease in the shared state: Redis (`ENGINE_STATE_URL`, the issue's target:
2 workers >= 1.6x one) or, without a state URL, the SQLite files beside the ledger that
`--workers N` shares. It prints requests per second per setup, the ratio, and the load
average before and after (on 2 cores the load generator and the upstream compete with
the workers, so the ratio is a floor). Nothing asserts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.proxy import PY, System, free_port, run_load, started, wait_ready

MODELS = """\
providers:
  bench:
    protocol: openai
    base_url: {upstream}/v1
    api_key: sk-bench-upstream-key
    pool_size: 1000
    limits: {{rpm: 100000000}}
models:
  bench/gpt-4o-mini:
    upstream: gpt-4o-mini
    capabilities: [chat]
    input_price: 0.15
    output_price: 0.6
    context_window: 128000
    max_output: 16384
"""
ROUTE = "strategy: ordered\ncandidates: [bench/gpt-4o-mini]\nbudget: {daily_usd: 1000000}\n"


def config(directory: Path, upstream: str) -> Path:
    (directory / "routes").mkdir(parents=True)
    (directory / "models.yaml").write_text(MODELS.format(upstream=upstream))
    (directory / "routes" / "bench.yaml").write_text(ROUTE)
    (directory / "server.yaml").write_text("access_log: false\nreload: false\n")
    return directory


def all_workers_up(port: int, workers: int, within_s: float = 120.0) -> bool:
    """Until /v1/stats counts every worker (a second worker starts seconds after the first)."""
    import json

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/stats", timeout=5) as r:
                server = json.loads(r.read())["server"]
            if workers == 1 or server.get("workers", {}).get("answered") == workers:
                return True
        except OSError:
            pass
        time.sleep(0.25)
    return False


def measure(tmp: Path, upstream: str, workers: int, state_url: str | None, seconds: float) -> float:
    """Requests per second at 50 in flight through one server of `workers` workers."""
    port = free_port()
    cfg = config(tmp / f"cfg-{workers}-{time.monotonic_ns()}", upstream)
    env = {"ENGINE_LOG_LEVEL": "warning", "ENGINE_LEDGER": str(cfg / "ledger.sqlite3")}
    if state_url:
        env["ENGINE_STATE_URL"] = state_url
    argv = [PY, "-m", "engine", "serve", "--config", str(cfg), "--port", str(port)]
    argv += ["--workers", str(workers)]
    system = System(f"engine-w{workers}", argv, port, env=env)
    with started(argv, env) as proc:
        if (err := wait_ready(system, proc)) or not all_workers_up(port, workers):
            raise RuntimeError(f"{system.name} did not start: {err or 'a worker is missing'}")
        run_load(system, n=2000, c=50, seconds=3)  # warm every worker's connections
        result: dict[str, Any] = run_load(system, n=1_000_000, c=50, seconds=seconds)
    if result["errors"]:
        raise RuntimeError(f"{system.name}: {result['errors']} errors: {result['first_error']}")
    return float(result["rps"])


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--state", choices=["redis", "sqlite", "both"], default="redis")
    a = p.parse_args(argv)
    before = os.getloadavg()[0]
    upstream_port = free_port()
    upstream = f"http://127.0.0.1:{upstream_port}"
    states = ["redis", "sqlite"] if a.state == "both" else [a.state]
    redis = None
    if "redis" in states:
        from engine.testing.servers import RedisServer

        redis = RedisServer()
    try:
        with (
            tempfile.TemporaryDirectory() as tmpdir,
            started([PY, "-m", "bench.proxy_apps", "upstream", str(upstream_port)]),
        ):
            for state in states:
                url = redis.url if state == "redis" and redis is not None else None
                figures: dict[int, list[float]] = {1: [], 2: []}
                for _ in range(a.rounds):
                    for workers in (1, 2):
                        rps = measure(Path(tmpdir), upstream, workers, url, a.seconds)
                        figures[workers].append(rps)
                one, two = (statistics.median(figures[w]) for w in (1, 2))
                print(f"state {state}: 1 worker {one:.0f} req/s, 2 workers {two:.0f} req/s, "
                      f"ratio {two / one:.2f}x (median of {a.rounds}; rounds "
                      f"{[round(x) for x in figures[1]]} / {[round(x) for x in figures[2]]})")  # fmt: skip
    finally:
        if redis is not None:
            redis.stop()
    after = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores; load average {before:.1f} before, {after:.1f} after")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
