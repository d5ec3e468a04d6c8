"""What the engine adds on top of one HTTP call, beside a raw client and LiteLLM's Router.

    python -m bench.runtime [--calls 2000] [--concurrent 50] [--total 4000] [--rounds 5]

Starts the providers' fake OpenAI upstream (`engine.testing.fakes.FakeOpenAI`) in a
subprocess, so its work shares neither our event loop nor our GIL, then measures against
that same upstream, side by side in one run:

- raw: aiohttp, one keep-alive session, POST /chat/completions, parse the JSON body
  (the fastest general-purpose Python client measured here, see bench/adapters.py): the
  issue's baseline;
- transport: the same POST through the engine's own client (`engine.providers.http`, which
  the engine uses underneath), so what the engine adds over its own transport shows too;
- engine: `await eng.arun(request, policy="bench")`, an Engine built with `from_data` over
  one OpenAI-protocol provider at that URL, with the SQLite cost ledger switched on;
- litellm (optional): `litellm.Router.acompletion` over the same upstream.

Figures: sequential per-call latency (median over `--calls`, in interleaved rounds so both
see the same machine noise) and "added" = engine median minus raw median (target <= 150 us);
throughput with `--concurrent` requests in flight (`--total` requests): engine / raw
(target >= 70%) and engine / litellm (target >= 10x), plus the same two figures against
`transport`, and each client's CPU time per call (the figure least disturbed by other load
on a shared machine). Nothing asserts; it prints.

LiteLLM never enters the project's dependencies. To include it, give the benchmark its own
environment and run this module from there (same run, same upstream):

    python3 -m venv bench/.venv
    bench/.venv/bin/pip install -e . -r bench/requirements-litellm.txt
    bench/.venv/bin/python -m bench.runtime

When the current interpreter cannot import litellm but bench/.venv can, the LiteLLM part
runs in a bench/.venv subprocess against the same upstream and reports back as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import orjson

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Say hello in one word."}]
REQUEST = {"messages": MESSAGES, "max_tokens": 16}
KEY = "sk-bench-0123456789abcdef"
VENV_PYTHON = Path(__file__).parent / ".venv" / "bin" / "python"

UPSTREAM = r"""
import asyncio, sys
from engine.testing.fakes import FakeOpenAI
class Roomy(FakeOpenAI):
    # The stock fake counts down from 10000 requests and never resets, which the engine's
    # rate limiter (rightly) obeys; a benchmark of tens of thousands of calls needs room.
    def success_headers(self):
        return {**super().success_headers(), "x-ratelimit-remaining-requests": "999999",
                "x-ratelimit-limit-requests": "1000000",
                "x-ratelimit-remaining-tokens": "99999999",
                "x-ratelimit-limit-tokens": "100000000"}
async def main():
    async with Roomy() as up:
        print(up.url, flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""

Call = Callable[[], Awaitable[None]]


def start_upstream() -> tuple[subprocess.Popen[str], str]:
    """The fake OpenAI server in its own process; returns it and its base URL."""
    proc = subprocess.Popen([sys.executable, "-c", UPSTREAM], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


# -- the three clients ----------------------------------------------------------------------


def raw_client(url: str, session: aiohttp.ClientSession) -> Call:
    body = orjson.dumps({"model": MODEL, **REQUEST})
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    endpoint = f"{url}/chat/completions"

    async def call() -> None:
        async with session.post(endpoint, data=body, headers=headers) as resp:
            data = orjson.loads(await resp.read())
            assert data["choices"][0]["message"]["content"] is not None

    return call


def transport_client(url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    from engine.endpoints import Endpoint
    from engine.providers.http import HttpClient

    client = HttpClient()
    body = orjson.dumps({"model": MODEL, **REQUEST})
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    endpoint = Endpoint("bench", "openai", url, MODEL)
    target = f"{url}/chat/completions"

    async def call() -> None:
        data = orjson.loads((await client.post(endpoint, target, headers, body)).body)
        assert data["choices"][0]["message"]["content"] is not None

    return call, client.aclose


def engine_client(url: str, ledger_dir: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    from engine import Engine
    from engine.clock import SystemClock
    from engine.state.ledger import SQLiteLedger

    models = {
        "providers": {"bench": {"protocol": "openai", "base_url": url, "api_key": KEY}},
        "models": {
            f"bench/{MODEL}": {
                "capabilities": ["chat"],
                "context_window": 128000,
                "max_output": 16384,
                "input_price": 0.15,
                "output_price": 0.6,
            }
        },
    }
    routes = {"bench": {"strategy": "ordered", "candidates": [f"bench/{MODEL}"]}}
    clock = SystemClock()
    ledger = SQLiteLedger(os.path.join(ledger_dir, "ledger.sqlite3"), clock)
    eng = Engine.from_data(models, routes, ledger=ledger, clock=clock)

    async def call() -> None:
        resp = await eng.arun(REQUEST, policy="bench")
        assert resp.content is not None

    return call, eng.aclose


def litellm_client(url: str) -> Call:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch at import
    import litellm

    litellm.telemetry = False

    router = litellm.Router(
        model_list=[
            {
                "model_name": "bench",
                "litellm_params": {"model": f"openai/{MODEL}", "api_base": url, "api_key": KEY},
            }
        ]
    )

    async def call() -> None:
        resp = await router.acompletion(model="bench", messages=MESSAGES, max_tokens=16)
        assert resp.choices[0].message.content is not None

    return call


# -- measurements ---------------------------------------------------------------------------


async def timed(call: Call, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await call()
        out.append(time.perf_counter() - t)
    return out


async def sequential(calls: dict[str, Call], n: int, rounds: int) -> dict[str, list[float]]:
    """Per-call latencies, the clients interleaved in rounds so drift hits all alike."""
    for call in calls.values():
        await timed(call, 200)  # warm pools, caches, JIT-less but branchy paths
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            samples[name] += await timed(call, n // rounds)
    return samples


async def throughput(call: Call, concurrent: int, total: int) -> tuple[float, float]:
    """Requests per second with `concurrent` in flight until `total` are done, and this
    process's CPU seconds per call meanwhile."""
    left = total

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    t, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrent)))
    return total / (time.perf_counter() - t), (time.process_time() - cpu) / total


async def concurrent_rounds(
    calls: dict[str, Call], concurrent: int, total: int, rounds: int
) -> dict[str, tuple[float, float]]:
    """Median throughput per client over interleaved rounds, after a concurrent warm-up
    (which opens the `concurrent` pooled connections each client will use)."""
    for call in calls.values():
        await throughput(call, concurrent, concurrent * 4)
    seen: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            seen[name].append(await throughput(call, concurrent, max(total // rounds, concurrent)))
    return {
        name: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v))
        for name, v in seen.items()
    }


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:9.1f} us"


def report(seq: dict[str, list[float]], rps: dict[str, tuple[float, float]]) -> None:
    med = {k: statistics.median(v) for k, v in seq.items()}
    p90 = {k: statistics.quantiles(v, n=10)[-1] for k, v in seq.items()}
    print("sequential latency (median, p90):")
    for name in seq:
        print(f"  {name:9s} {_us(med[name])} {_us(p90[name])}")
    print(f"  engine adds  {_us(med['engine'] - med['raw'])}  over raw aiohttp (target <= 150 us)")
    print(f"  engine adds  {_us(med['engine'] - med['transport'])}  over its own transport")
    if "litellm" in med:
        added = med["litellm"] - med["raw"]
        # The engine's addition over its own transport: the fair one once that transport is
        # faster than aiohttp (its addition over raw aiohttp can then be near zero).
        ours = max(med["engine"] - med["raw"], med["engine"] - med["transport"], 1e-9)
        print(f"  litellm adds {_us(added)}  ({added / ours:.1f}x the engine's addition)")
    print("throughput (median req/s, CPU per call in this process):")
    for name, (value, cpu) in rps.items():
        print(f"  {name:9s} {value:9.0f} req/s {_us(cpu)}")
    engine = rps["engine"][0]
    print(f"  engine / raw aiohttp  {engine / rps['raw'][0]:6.1%}  (target >= 70%)")
    print(f"  engine / transport    {engine / rps['transport'][0]:6.1%}")
    if "litellm" in rps:
        print(f"  engine / litellm      {engine / rps['litellm'][0]:6.1f}x  (target >= 10x)")


async def litellm_only(url: str, n: int, rounds: int, concurrent: int, total: int) -> None:
    """The worker side of the bench/.venv subprocess: measure LiteLLM, print JSON."""
    call = litellm_client(url)
    seq = await sequential({"litellm": call}, n, rounds)
    rps = await concurrent_rounds({"litellm": call}, concurrent, total, rounds)
    print(json.dumps({"seq": seq["litellm"], "rps": list(rps["litellm"])}))


def litellm_elsewhere(
    url: str, args: argparse.Namespace
) -> tuple[list[float], tuple[float, float]] | None:
    if not VENV_PYTHON.exists():
        return None
    cmd = [
        str(VENV_PYTHON),
        "-m",
        "bench.runtime",
        "--litellm-only",
        url,
        "--calls",
        str(args.calls),
        "--rounds",
        str(args.rounds),
        "--concurrent",
        str(args.concurrent),
        "--total",
        str(args.total),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"(litellm in bench/.venv failed: {done.stderr.strip()[-300:]})")
        return None
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return data["seq"], (data["rps"][0], data["rps"][1])


def have_litellm() -> bool:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm  # noqa: F401
    except ImportError:
        return False
    return True


async def main(args: argparse.Namespace) -> None:
    if args.litellm_only:
        await litellm_only(args.litellm_only, args.calls, args.rounds, args.concurrent, args.total)
        return
    proc, url = start_upstream()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            connector = aiohttp.TCPConnector(limit=100)
            async with aiohttp.ClientSession(connector=connector) as session:
                engine_call, close = engine_client(url, tmp)
                transport_call, close_transport = transport_client(url)
                calls = {
                    "raw": raw_client(url, session),
                    "transport": transport_call,
                    "engine": engine_call,
                }
                if have_litellm():
                    calls["litellm"] = litellm_client(url)
                seq = await sequential(calls, args.calls, args.rounds)
                rps = await concurrent_rounds(calls, args.concurrent, args.total, args.rounds)
                await close()
                await close_transport()
            if "litellm" not in calls:
                found = litellm_elsewhere(url, args)
                if found is None:
                    print("(litellm not measured: not importable here, no bench/.venv)")
                else:
                    seq["litellm"], rps["litellm"] = found
        print(
            f"upstream: FakeOpenAI at {url}; {args.calls} sequential calls, "
            f"{args.total} at {args.concurrent} concurrent"
        )
        report(seq, rps)
    finally:
        proc.terminate()
        proc.wait()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.runtime", description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=2000, help="sequential calls per client")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    p.add_argument("--concurrent", type=int, default=50, help="requests in flight")
    p.add_argument("--total", type=int, default=4000, help="requests per throughput run")
    p.add_argument("--litellm-only", metavar="URL", help=argparse.SUPPRESS)
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
