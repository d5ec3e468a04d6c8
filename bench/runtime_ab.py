"""A/B for the library: this checkout's engine against another checkout's, interleaved.

    python -m bench.runtime_ab --baseline DIR [--rounds 12] [--calls 2000] [--concurrent 50]

What bench.ab does for the server, for `engine.arun` itself: one fake upstream (nginx's
canned answer, `make bench-tools`; `--upstream python` for bench.proxy_apps'), and one
driver process per checkout, each importing its own `engine` (its own `.venv` when it has
one) and building the engine bench.runtime builds (one OpenAI-protocol provider, the SQLite
ledger on). The driver warms up, then runs bursts on command: `--calls` calls of
`await engine.arun(...)` with `--concurrent` in flight (1 for sequential). Bursts alternate
between the two drivers, the order rotating, for `--rounds` rounds; each burst reports the
driver's CPU time (getrusage: every thread, the ledger writer's too) and wall time.

Printed: per checkout, the median CPU per call and calls per second, and the medians of the
per-round ratios candidate / baseline, which are what to quote: two runs of
bench.runtime one after the other differ by more than a change does on a shared VM.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path

# Only the standard library at module level: a driver runs this file by its path inside the
# other checkout, whose `bench` package is the one it imports (and may not have this module).
ROLES = ("baseline", "candidate")
HERE = Path(__file__).resolve()


def driver_main(argv: list[str]) -> None:
    """Entry of a driver process (cwd: its checkout): answers `burst N C` lines on stdin
    with one JSON line {"cpu_s", "wall_s"}; `warm N` runs calls without answering figures."""
    import asyncio

    sys.path[0] = str(Path.cwd())  # the checkout's engine and bench, not this file's folder
    from bench.runtime import engine_client  # the checkout's own way to build its engine

    url = argv[0]

    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            call, close = engine_client(url, tmp)
            loop = asyncio.get_running_loop()
            while True:
                line = await loop.run_in_executor(None, sys.stdin.readline)
                if not line.strip():
                    break
                verb, n, c = line.split()
                t0, r0 = time.perf_counter(), _cpu()
                await _burst(call, int(n), int(c))
                figures = {"cpu_s": _cpu() - r0, "wall_s": time.perf_counter() - t0}
                print(json.dumps(figures if verb == "burst" else {}), flush=True)
            await close()

    asyncio.run(main())


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _burst(call: Callable[[], Awaitable[None]], n: int, c: int) -> None:
    import asyncio

    async def worker(count: int) -> None:
        for _ in range(count):
            await call()

    await asyncio.gather(*(worker(n // c + (i < n % c)) for i in range(c)))


class Driver:
    """One checkout's driver process, spoken to over its stdin/stdout."""

    def __init__(self, python: str, tree: Path, url: str) -> None:
        argv = [python, str(HERE), "--driver", url]
        self.proc = subprocess.Popen(
            argv, cwd=tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def run(self, verb: str, n: int, c: int) -> dict[str, float]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{verb} {n} {c}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"driver exited with {self.proc.wait()}")
        figures: dict[str, float] = json.loads(line)
        return figures

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(60)


Bursts = dict[str, list[dict[str, float]]]


def measure(trees: dict[str, Path], url: str, a: argparse.Namespace) -> Bursts:
    """Warm both drivers, then `a.rounds` rounds of one burst each, the order alternating."""
    from bench.ab import python_of

    out: Bursts = {role: [] for role in ROLES}
    with ExitStack() as stack:
        drivers = {}
        for role, tree in trees.items():
            drivers[role] = Driver(python_of(tree), tree, url)
            stack.callback(drivers[role].close)
        for driver in drivers.values():
            driver.run("warm", a.warmup, a.concurrent)
        for i in range(a.rounds):
            order = ROLES if i % 2 == 0 else ROLES[::-1]
            for role in order:
                out[role].append(drivers[role].run("burst", a.calls, a.concurrent))
    return out


def report(bursts: Bursts, calls: int, concurrent: int) -> str:
    med = statistics.median
    cpu = {r: [b["cpu_s"] / calls * 1e6 for b in bursts[r]] for r in ROLES}
    rate = {r: [calls / b["wall_s"] for b in bursts[r]] for r in ROLES}
    lines = [
        f"{calls} calls a burst, {concurrent} in flight, {len(cpu['baseline'])} rounds",
        "checkout    CPU us/call   calls/s",
    ]
    for role in ROLES:
        lines.append(f"{role:<10}  {med(cpu[role]):>11.1f}   {med(rate[role]):>7.0f}")
    cpu_ratio = med(y / x for x, y in zip(cpu["baseline"], cpu["candidate"], strict=True))
    rate_ratio = med(y / x for x, y in zip(rate["baseline"], rate["candidate"], strict=True))
    lines.append(
        f"candidate / baseline, median of per-round ratios: CPU/call {cpu_ratio:.3f}, "
        f"calls/s {rate_ratio:.3f}"
    )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--driver"]:
        driver_main(argv[1:])
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.runtime_ab", description=__doc__)
    p.add_argument("--baseline", type=Path, required=True, help="the other checkout's root")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--calls", type=int, default=2000, help="calls per burst")
    p.add_argument("--concurrent", type=int, default=50, help="calls in flight (1: sequential)")
    p.add_argument("--warmup", type=int, default=2000, help="calls before the first burst")
    p.add_argument("--upstream", choices=["nginx", "python"], default="nginx")
    a = p.parse_args(argv)
    from bench.ab import upstream_server
    from bench.proxy import ROOT, free_port

    trees = {"baseline": a.baseline.resolve(), "candidate": ROOT}
    port = free_port()
    with upstream_server(port, a.upstream == "nginx"):
        bursts = measure(trees, f"http://127.0.0.1:{port}/v1", a)
    print(report(bursts, a.calls, a.concurrent))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
