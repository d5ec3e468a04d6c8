"""What `serve --workers 2` buys: throughput of one worker against two, same upstream, same run.

    python -m bench.workers [--rounds 3] [--seconds 10] [--state redis|sqlite|both]
                            [--load wrk|python] [--upstream nginx|python]

Starts the fake upstream and, for `redis`, a real redis-server on a free loopback port;
then, one at a time, `python -m engine serve` with 1 and with 2 workers, and drives each
at 50 connections. The route has a daily budget and the key a requests-per-minute limit
far above what is sent, so every call reserves and settles a budget and books a rate-limit
lease in the shared state: Redis (`ENGINE_STATE_URL`, the issue's target: 2 workers >=
1.6x one) or, without a state URL, the SQLite files beside the ledger that `--workers N`
shares.

On a 2-core machine whatever drives the server competes with it for the cores, so by
default the load is `wrk` (C, one thread) and the upstream `nginx` answering a canned
completion (bench/lean.py; `make bench-tools` installs both from Debian). `--load python`
and `--upstream python` use bench.proxy's aiohttp load generator and fake upstream
instead (each costs about as much CPU per request as a worker). For every run it prints
requests per second and the cores each process group used over the measured stretch
(utime+stime from /proc): the engine's workers, its supervisor, redis-server, the
upstream, the load generator, everything else, and what stayed idle; then the CPU each
request took per group, and the throughput that CPU allows on an otherwise idle machine
(`projected`: the ratio to quote when "other" was busy). Nothing asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import lean
from bench.proxy import PY, System, free_port, payload_for, started, wait_ready

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


@dataclass
class Setup:
    """What one run of the bench uses: the upstream, the load, the state URL and its pid."""

    upstream: str
    load: str
    upstream_pids: list[int]
    state_url: str | None = None
    redis_pid: int | None = None


@dataclass
class Run:
    rps: float
    cores: dict[str, float]


def drive(system: System, setup: Setup, seconds: float) -> tuple[float, int, str | None, float]:
    """One stretch of load at 50 in flight: (rps, errors, first error, load CPU seconds)."""
    if setup.load == "wrk":
        r = lean.wrk_load(system.url, payload_for("chat", system.model, "ping", False), 50, seconds)
        return r.rps, r.errors, r.first_error, r.cpu_s
    argv = [PY, "-m", "bench.proxy", "--load", system.url, "--n", "1000000", "--c", "50"]
    out, cpu = lean.run_metered([*argv, "--seconds", str(seconds)], timeout=seconds + 120)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return float(result["rps"]), int(result["errors"]), result["first_error"], cpu


def measure(tmp: Path, setup: Setup, workers: int, seconds: float) -> Run:
    """Requests per second at 50 in flight through one server of `workers` workers, and
    the cores each process group used meanwhile."""
    port = free_port()
    cfg = config(tmp / f"cfg-{workers}-{time.monotonic_ns()}", setup.upstream)
    env = {"ENGINE_LOG_LEVEL": "warning", "ENGINE_LEDGER": str(cfg / "ledger.sqlite3")}
    if setup.state_url:
        env["ENGINE_STATE_URL"] = setup.state_url
    argv = [PY, "-m", "engine", "serve", "--config", str(cfg), "--port", str(port)]
    argv += ["--workers", str(workers)]
    system = System(f"engine-w{workers}", argv, port, env=env)
    with started(argv, env) as proc:
        if (err := wait_ready(system, proc)) or not all_workers_up(port, workers):
            raise RuntimeError(f"{system.name} did not start: {err or 'a worker is missing'}")
        drive(system, setup, 3)  # warm every worker's connections
        below = lean.descendants(proc.pid)
        groups = {"workers": below or [proc.pid], "supervisor": [proc.pid] if below else []}
        if setup.redis_pid is not None:
            groups["redis"] = [setup.redis_pid]
        groups["upstream"] = setup.upstream_pids
        meter = lean.Meter(groups)
        rps, errors, first_error, load_cpu = drive(system, setup, seconds)
        cores = meter.stop({f"load ({setup.load})": load_cpu})
    if errors:
        raise RuntimeError(f"{system.name}: {errors} errors: {first_error}")
    return Run(rps, cores)


@contextlib.contextmanager
def upstream_server(kind: str, port: int) -> Iterator[list[int]]:
    """The fake upstream on `port`; yields the pids whose CPU is its."""
    if kind == "nginx":
        with lean.nginx_upstream(port) as proc:
            yield [proc.pid]
    else:
        with started([PY, "-m", "bench.proxy_apps", "upstream", str(port)]) as proc:
            yield [proc.pid]


def cpu_per_request(run: Run) -> dict[str, float]:
    """Seconds of CPU per request of each of the bench's own process groups."""
    ours = {k: v for k, v in run.cores.items() if k not in ("other", "idle")}
    return {k: v / run.rps for k, v in ours.items()}


def projected(runs: dict[int, list[Run]]) -> tuple[float, float]:
    """Requests per second if nothing else ran, from the CPU each request took: one
    worker is bound by its one core (or by both cores, shared with redis, upstream and
    load); two workers by both cores. What the ratio would be on a quiet machine, when
    other processes ("other") took cores during the run."""
    cost = {w: {k: statistics.median(cpu_per_request(r)[k] for r in runs[w])
                for k in cpu_per_request(runs[w][0])} for w in (1, 2)}  # fmt: skip
    cores = os.cpu_count() or 2
    one = min(1 / cost[1]["workers"], cores / sum(cost[1].values()))
    two = min(2 / cost[2]["workers"], cores / sum(cost[2].values()))
    return one, two


def report(state: str, runs: dict[int, list[Run]]) -> None:
    one, two = (statistics.median(r.rps for r in runs[w]) for w in (1, 2))
    rounds = [[round(r.rps) for r in runs[w]] for w in (1, 2)]
    # Each round runs one worker, then two: the ratio within a round is the one a VM whose
    # speed drifts by minutes moves least (bench.ab pairs its rounds the same way).
    paired = statistics.median(b.rps / a.rps for a, b in zip(runs[1], runs[2], strict=True))
    print(f"state {state}: 1 worker {one:.0f} req/s, 2 workers {two:.0f} req/s, "
          f"ratio {two / one:.2f}x (median of {len(runs[1])}; rounds {rounds[0]} / {rounds[1]}); "
          f"median of the rounds' own ratios {paired:.2f}x")  # fmt: skip
    for w in (1, 2):
        for r in runs[w]:
            per_call = ", ".join(f"{k} {v * 1e6:.0f}" for k, v in cpu_per_request(r).items())
            plural = "s" if w > 1 else ""
            print(f"  {w} worker{plural} {r.rps:6.0f} req/s; cores: {lean.shares(r.cores)}")
            print(f"    CPU us per request: {per_call}")
    p_one, p_two = projected(runs)
    print(f"  projected from CPU per request, nothing else running: 1 worker {p_one:.0f}, "
          f"2 workers {p_two:.0f} req/s, ratio {p_two / p_one:.2f}x")  # fmt: skip


def tools(a: argparse.Namespace) -> None:
    missing = lean.tools_missing()
    if missing and (a.load == "wrk" or a.upstream == "nginx"):
        raise SystemExit(f"missing Debian packages {missing}: run `make bench-tools`, "
                         "or pass --load python --upstream python")  # fmt: skip


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--state", choices=["redis", "sqlite", "both"], default="redis")
    p.add_argument("--load", choices=["wrk", "python"], default="wrk")
    p.add_argument("--upstream", choices=["nginx", "python"], default="nginx")
    a = p.parse_args(argv)
    tools(a)
    before = os.getloadavg()[0]
    upstream_port = free_port()
    states = ["redis", "sqlite"] if a.state == "both" else [a.state]
    redis = None
    if "redis" in states:
        from engine.testing.servers import RedisServer

        redis = RedisServer()
    try:
        with (
            tempfile.TemporaryDirectory() as tmpdir,
            upstream_server(a.upstream, upstream_port) as upstream_pids,
        ):
            for state in states:
                setup = Setup(f"http://127.0.0.1:{upstream_port}", a.load, upstream_pids)
                if state == "redis" and redis is not None:
                    setup.state_url, setup.redis_pid = redis.url, redis._proc.pid
                runs: dict[int, list[Run]] = {1: [], 2: []}
                for _ in range(a.rounds):
                    for workers in (1, 2):
                        runs[workers].append(measure(Path(tmpdir), setup, workers, a.seconds))
                report(state, runs)
    finally:
        if redis is not None:
            redis.stop()
    after = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores; load {a.load}, upstream {a.upstream}; "
          f"load average {before:.1f} before, {after:.1f} after")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
