"""What shared state costs: the engine with in-process state beside the engine on Redis.

    python -m bench.shared_state [--calls 1000] [--concurrent 50] [--total 3000] [--rounds 5]

Starts the fake OpenAI upstream in a subprocess (as bench.runtime does) and a real
`redis-server` on a free loopback port, then measures side by side, in one run, the same
engine configuration twice: once with the in-process budget store, rate limiter and cache
(`inprocess`), once with `state_url` pointing at that Redis (`redis`). The route has a
daily budget and the key a requests-per-minute limit far above what the bench sends, so
every call reserves and settles a budget and books a rate-limit lease: the work that moves
to Redis. A raw aiohttp POST is the baseline both are read against.

Figures: sequential latency (median, p90) and what Redis adds to the median (target
<= 0.3 ms on loopback); throughput at `--concurrent` in flight, Redis / in-process (target
>= 60%), and CPU per call in this process; the redis-server's own CPU per call with Redis
state (from /proc, so it holds on a busy machine) and its scripts' share of it (`INFO
commandstats`). Nothing asserts; it prints.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
from collections.abc import Awaitable, Callable

import aiohttp
import redis

from bench.runtime import (
    KEY,
    MODEL,
    REQUEST,
    concurrent_rounds,
    raw_client,
    sequential,
    start_upstream,
)

Call = Callable[[], Awaitable[None]]


def engine_client(
    url: str, ledger_dir: str, state_url: str | None
) -> tuple[Call, Callable[[], Awaitable[None]]]:
    """An engine over the upstream with a budget and a key limit; state in Redis or not."""
    from engine import Engine

    models = (
        "providers:\n"
        f"  bench: {{protocol: openai, base_url: '{url}', api_key: {KEY},"
        " limits: {rpm: 10000000}}\n"
        "models:\n"
        f"  bench/{MODEL}: {{capabilities: [chat], context_window: 128000,"
        " max_output: 16384, input_price: 0.15, output_price: 0.6}\n"
    )
    config = os.path.join(ledger_dir, "state" if state_url else "local")
    os.makedirs(os.path.join(config, "routes"))
    with open(os.path.join(config, "models.yaml"), "w") as f:
        f.write(models)
    with open(os.path.join(config, "routes", "bench.yaml"), "w") as f:
        f.write(f"strategy: ordered\ncandidates: [bench/{MODEL}]\nbudget: {{daily_usd: 1000000}}\n")
    eng = Engine.from_config(
        config, state_url=state_url, ledger_path=os.path.join(config, "ledger.sqlite3")
    )

    async def call() -> None:
        resp = await eng.arun(REQUEST, policy="bench")
        assert resp.content is not None

    return call, eng.aclose


class RedisMeter:
    """The redis-server's CPU and its scripts' time per call with Redis state, per phase."""

    def __init__(self, pid: int, port: int) -> None:
        self._pid, self._admin = pid, redis.Redis(port=port)
        self.calls, self._cpu = 0, 0.0
        self.phases: dict[str, tuple[float, float]] = {}

    def counted(self, call: Call) -> Call:
        async def counting() -> None:
            self.calls += 1
            await call()

        return counting

    def start(self) -> None:
        self._admin.config_resetstat()
        self.calls, self._cpu = 0, _cpu_s(self._pid)

    def stop(self, phase: str) -> None:
        cpu = (_cpu_s(self._pid) - self._cpu) / max(self.calls, 1)
        scripts = self._admin.info("commandstats").get("cmdstat_evalsha", {"usec": 0})
        self.phases[phase] = (cpu, scripts["usec"] / 1e6 / max(self.calls, 1))


def _cpu_s(pid: int) -> float:
    """A process's user + system CPU seconds (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(seq: dict[str, list[float]], rps: dict[str, tuple[float, float]]) -> None:
    med = {k: statistics.median(v) for k, v in seq.items()}
    p90 = {k: statistics.quantiles(v, n=10)[-1] for k, v in seq.items()}
    print("sequential latency (median, p90):")
    for name in seq:
        print(f"  {name:10s} {med[name] * 1e3:8.3f} ms {p90[name] * 1e3:8.3f} ms")
    added = med["redis"] - med["inprocess"]
    print(f"  Redis state adds {added * 1e3:.3f} ms per call (target <= 0.3 ms)")
    print("throughput (median req/s, CPU per call in this process):")
    for name, (value, cpu) in rps.items():
        print(f"  {name:10s} {value:8.0f} req/s {cpu * 1e6:8.1f} us")
    ratio = rps["redis"][0] / rps["inprocess"][0]
    print(f"  redis / inprocess {ratio:6.1%} (target >= 60%)")


async def main(args: argparse.Namespace) -> None:
    from engine.testing.servers import redis_server

    proc, url = start_upstream()
    try:
        with redis_server() as server, tempfile.TemporaryDirectory() as tmp:
            connector = aiohttp.TCPConnector(limit=100)
            async with aiohttp.ClientSession(connector=connector) as session:
                meter = RedisMeter(server.pid, server.port)
                local, close_local = engine_client(url, tmp, None)
                shared, close_shared = engine_client(url, tmp, server.url)
                calls = {
                    "raw": raw_client(url, session),
                    "inprocess": local,
                    "redis": meter.counted(shared),
                }
                meter.start()
                seq = await sequential(calls, args.calls, args.rounds)
                meter.stop("sequential")
                meter.start()
                rps = await concurrent_rounds(calls, args.concurrent, args.total, args.rounds)
                meter.stop(f"{args.concurrent} in flight")
                await close_local()
                await close_shared()
        print(f"upstream: FakeOpenAI; {args.calls} sequential, {args.total} at {args.concurrent}")
        report(seq, rps)
        print("redis-server per call with Redis state (its CPU, its scripts' part of it):")
        for phase, (cpu, scripts) in meter.phases.items():
            print(f"  {phase:14s} {cpu * 1e6:8.1f} us {scripts * 1e6:8.1f} us")
    finally:
        proc.terminate()
        proc.wait()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.shared_state", description=__doc__.split("\n")[0]
    )
    p.add_argument("--calls", type=int, default=1000, help="sequential calls per client")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    p.add_argument("--concurrent", type=int, default=50, help="requests in flight")
    p.add_argument("--total", type=int, default=3000, help="requests per throughput run")
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
