"""A/B: this checkout's server against another checkout's, both running, interleaved.

`python -m bench.ab --baseline DIR [--rounds 8]` starts one fake upstream, this checkout's
`engine serve` and the one in DIR (a clone at the commit to compare with, set up with
`make install`; its own `.venv` is used when it has one), each with the same config, and
measures them side by side:

- c=1: one client alternates between direct, baseline and candidate, `--n` requests to each
  in turn (the order rotating), for `--slices` slices: the added p50 of each slice is the
  server's p50 minus direct's in that slice, so both servers see the same machine;
- c=50: `--rounds` rounds of one burst per system (`--seconds` each, the order rotating):
  throughput, and each server's CPU per request (its process's utime+stime over the burst,
  from /proc: the figure least moved by what else the machine does).

Why not two runs of bench.proxy: on a shared VM the machine's speed drifts by 2x within
minutes, so two runs one after the other differ by more than a change does. Interleaving
lets only the difference between the two servers show; the medians of the per-slice and
per-round ratios are what to quote.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench import lean
from bench.proxy import (
    PY,
    ROOT,
    System,
    _one,
    _pct,
    free_port,
    payload_for,
    run_load,
    started,
    wait_ready,
)

ROLES = ("baseline", "candidate")
_CONFIG = (
    "import sys; from pathlib import Path; from bench.proxy import engine_config; "
    "engine_config(Path(sys.argv[1]), sys.argv[2])"
)


def python_of(tree: Path) -> str:
    """The checkout's own interpreter when it has a virtualenv (its own dependencies)."""
    own = tree / ".venv" / "bin" / "python"
    return str(own) if own.exists() else PY


def server(role: str, tree: Path, tmp: Path, upstream: str) -> System:
    """`engine serve` from `tree`, on the config that checkout's bench.proxy writes."""
    py, cfg = python_of(tree), tmp / role
    subprocess.run([py, "-c", _CONFIG, str(cfg), upstream], cwd=tree, check=True)
    port = free_port()
    argv = [py, "-m", "engine", "serve", "--config", str(cfg), "--port", str(port)]
    env = {"ENGINE_LOG_LEVEL": "warning", "ENGINE_LEDGER": str(tmp / f"{role}.sqlite3")}
    return System(role, argv, port, env=env, cwd=tree)


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (a one-worker server serves in its own process)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _alternate(urls: list[str], n: int, slices: int) -> list[list[float]]:
    """c=1, one connection per URL: per slice, `n` requests to each URL in turn (the first
    rotating); returns each URL's p50 (ms) per slice."""
    import aiohttp

    body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "ping"}]})
    hdrs = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench-0000000000"}
    out: list[list[float]] = [[] for _ in urls]
    async with contextlib.AsyncExitStack() as stack:
        sessions = [
            await stack.enter_async_context(
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
            )
            for _ in urls
        ]
        for session, url in zip(sessions, urls, strict=True):  # warm each connection
            for _ in range(20):
                await _one(session, url, body.encode(), hdrs, False)
        for i in range(slices):
            for j in [(i + k) % len(urls) for k in range(len(urls))]:
                lat = [
                    (await _one(sessions[j], urls[j], body.encode(), hdrs, False))[0]
                    for _ in range(n)
                ]
                out[j].append(_pct(lat, 0.5) * 1000)
    return out


def alternate_main(argv: list[str]) -> None:
    """Entry of the c=1 client process: one JSON line, [[p50 ms per slice] per URL]."""
    p = argparse.ArgumentParser()
    p.add_argument("urls", nargs="+")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--slices", type=int, default=20)
    a = p.parse_args(argv)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    print(json.dumps(asyncio.run(_alternate(a.urls, a.n, a.slices))))


def c1(
    systems: list[System], pids: dict[str, int], n: int, slices: int
) -> tuple[list[list[float]], dict[str, float]]:
    """Each system's p50 per slice, and each server's CPU per request over the whole c=1
    phase (with its latency, it tells time spent computing from time spent waiting)."""
    argv = [PY, "-m", "bench.ab", "--alternate", *(s.url for s in systems)]
    argv += ["--n", str(n), "--slices", str(slices)]
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-500:])
    served = n * slices + 20  # the 20 warm-up requests count too
    cpu = {name: (cpu_seconds(pid) - before[name]) / served * 1e6 for name, pid in pids.items()}
    result: list[list[float]] = json.loads(out.stdout.strip().splitlines()[-1])
    return result, cpu


def burst(s: System, seconds: float, wrk: bool) -> tuple[float, int]:
    """One c=50 burst: (req/s, requests the server saw)."""
    if wrk:
        r = lean.wrk_load(s.url, payload_for("chat", s.model, "ping", False), 50, seconds)
        if r.errors:
            raise RuntimeError(f"{s.name}: {r.errors} errors: {r.first_error}")
        return r.rps, r.requests
    got = run_load(s, n=10**6, c=50, seconds=seconds)
    if got["errors"]:
        raise RuntimeError(f"{s.name}: {got['errors']} errors: {got['first_error']}")
    return got["rps"], got["n"] + 5  # the 5 warm-up requests count too


def c50(systems: list[System], pids: dict[str, int], rounds: int, seconds: float, wrk: bool) -> Any:
    """Per round, one burst per system: {name: [req/s]}, {server: [CPU us per request]}."""
    rps: dict[str, list[float]] = {s.name: [] for s in systems}
    cpu: dict[str, list[float]] = {name: [] for name in pids}
    for i in range(rounds):
        for s in systems[i % len(systems) :] + systems[: i % len(systems)]:
            before = cpu_seconds(pids[s.name]) if s.name in pids else 0.0
            got, served = burst(s, seconds, wrk)
            rps[s.name].append(got)
            if s.name in pids:
                cpu[s.name].append((cpu_seconds(pids[s.name]) - before) / served * 1e6)
    return rps, cpu


@contextlib.contextmanager
def upstream_server(port: int, nginx: bool) -> Any:
    """The fake upstream: nginx's canned answer (--lean) or bench.proxy_apps'."""
    if nginx:
        with lean.nginx_upstream(port) as proc:
            yield proc
    else:
        with started([PY, "-m", "bench.proxy_apps", "upstream", str(port)]) as proc:
            yield proc


def ratios(a: list[float], b: list[float]) -> float:
    """The median of the paired ratios b/a."""
    return statistics.median(y / x for x, y in zip(a, b, strict=True))


def report(added: dict[str, list[float]], cpu1: dict[str, float], rps: Any, cpu: Any) -> str:
    med = statistics.median
    lines = [
        "system      +p50 c1 ms   CPU us/req c1   req/s c50   CPU us/req c50",
        f"direct      {'-':>10}   {'-':>13}   {med(rps['direct']):>9.0f}   {'-':>14}",
    ]
    for role in ROLES:
        lines.append(
            f"{role:<10}  {med(added[role]):>10.3f}   {cpu1[role]:>13.0f}"
            f"   {med(rps[role]):>9.0f}   {med(cpu[role]):>14.0f}"
        )
    lines.append(
        "candidate / baseline, median of paired ratios: "
        f"+p50 c1 {ratios(added['baseline'], added['candidate']):.3f} "
        f"(CPU/req c1 {cpu1['candidate'] / cpu1['baseline']:.3f}), "
        f"req/s c50 {ratios(rps['baseline'], rps['candidate']):.3f}, "
        f"CPU/req c50 {ratios(cpu['baseline'], cpu['candidate']):.3f}"
    )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--alternate":
        alternate_main(argv[1:])
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.splitlines()[0])
    p.add_argument("--baseline", type=Path, required=True, help="the other checkout's root")
    p.add_argument("--rounds", type=int, default=8, help="c=50 bursts per system")
    p.add_argument("--seconds", type=float, default=3.0, help="length of one c=50 burst")
    p.add_argument("--n", type=int, default=100, help="c=1 requests per system per slice")
    p.add_argument("--slices", type=int, default=30, help="c=1 slices")
    p.add_argument(
        "--lean",
        action="store_true",
        help="nginx as the upstream and wrk as the c=50 load (make bench-tools): the CPU "
        "they leave free goes to the servers, so c=50 measures the servers, not the bench",
    )
    a = p.parse_args(argv)
    trees = {"baseline": a.baseline.resolve(), "candidate": ROOT}
    up_port = free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    with tempfile.TemporaryDirectory() as tmpdir, ExitStack() as stack:
        stack.enter_context(upstream_server(up_port, a.lean))
        systems, pids = [System("direct", [], up_port)], {}
        for role in ROLES:
            s = server(role, trees[role], Path(tmpdir), upstream)
            proc = stack.enter_context(started(s.argv, s.env, s.cwd))
            reason = wait_ready(s, proc)
            if reason:
                raise SystemExit(f"{role} ({trees[role]}) did not start: {reason}")
            systems.append(s)
            pids[role] = proc.pid
        time.sleep(1.0)
        p50s, cpu1 = c1(systems, pids, a.n, a.slices)
        added = {s.name: [x - d for x, d in zip(p, p50s[0], strict=True)]
                 for s, p in zip(systems[1:], p50s[1:], strict=True)}  # fmt: skip
        rps, cpu = c50(systems, pids, a.rounds, a.seconds, a.lean)
    setup = "nginx upstream, wrk load" if a.lean else "python upstream and load"
    print(f"baseline {trees['baseline']}, candidate {trees['candidate']}; {setup}; "
          f"{os.cpu_count()} cores")  # fmt: skip
    print(report(added, cpu1, rps, cpu))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
