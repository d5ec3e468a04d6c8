"""Transport and adapter overhead: the engine's client vs aiohttp vs httpx on loopback.

    python -m bench.adapters [--calls 400] [--concurrent 50] [--total 2000]

Runs a minimal chat/completions server in a subprocess (so its work does not share our
event loop), then measures, for each client:

- sequential per-call time (median and p90 over `--calls` keep-alive POSTs),
- throughput with `--concurrent` requests in flight (`--total` requests) and the client's
  CPU time per call there (the figure a shared, noisy machine disturbs least),
  all interleaved over `--rounds` rounds (engine, aiohttp, httpx, engine, ...) so that load
  from other processes falls on every client alike,
- and the full OpenAI adapter (`engine.providers.openai`: build body, send, parse) over
  the engine's client and over the aiohttp transport (`transport: aiohttp`), sequential
  and streaming: the end-to-end comparison that decides which client is the default.

Prints figures only; nothing here asserts timing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import httpx
import orjson

BODY = orjson.dumps(
    {
        "model": "gpt-bench",
        "messages": [{"role": "user", "content": "Say hello in one word."}],
        "max_tokens": 16,
    }
)

SERVER = r"""
import sys, time, orjson
from aiohttp import web
ANSWER = orjson.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 1,
    "model": "gpt-bench", "choices": [{"index": 0, "message": {"role": "assistant",
    "content": "Hello!", "refusal": None}, "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}})
def chunk(delta, finish=None):
    return b"data: " + orjson.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1,
        "model": "gpt-bench", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + b"\n\n"
STREAM = (chunk({"role": "assistant", "content": ""}) + b"".join(chunk({"content": w + " "})
    for w in "one two three four five six seven eight nine ten".split()) + chunk({}, "stop")
    + b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],'
    b'"usage":{"prompt_tokens":12,"completion_tokens":10,"total_tokens":22}}\n\n'
    + b"data: [DONE]\n\n")
HEADERS = {"x-ratelimit-remaining-requests": "9999", "x-ratelimit-remaining-tokens": "99999",
           "x-ratelimit-reset-requests": "6m0s"}
async def handle(request):
    body = orjson.loads(await request.read())
    if body.get("stream"):
        resp = web.StreamResponse(headers={**HEADERS, "Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(STREAM)
        await resp.write_eof()
        return resp
    return web.Response(body=ANSWER, headers=HEADERS, content_type="application/json")
app = web.Application()
app.router.add_post("/v1/chat/completions", handle)
import socket
sock = socket.socket(); sock.bind(("127.0.0.1", 0)); sock.listen(1024)
print(sock.getsockname()[1], flush=True)
web.run_app(app, sock=sock, print=None, access_log=None, backlog=1024)
"""


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}/v1"


async def sequential(call: Callable[[], Awaitable[None]], n: int) -> list[float]:
    for _ in range(20):  # warm the pool and the code paths
        await call()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        times.append(time.perf_counter() - t0)
    return times


async def concurrent(
    call: Callable[[], Awaitable[None]], total: int, width: int
) -> tuple[float, float]:
    """Requests per second, and this process's CPU seconds per call, at `width` in flight."""
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    await asyncio.gather(*(call() for _ in range(width)))  # open the connections first
    t0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(width)))
    return total / (time.perf_counter() - t0), (time.process_time() - cpu0) / total


def report(name: str, times: list[float], rate: tuple[float, float] | None) -> float:
    times = sorted(times)
    median = statistics.median(times) * 1e6
    p90 = times[int(len(times) * 0.9)] * 1e6
    extra = f"   {rate[0]:8.0f} req/s, {rate[1] * 1e6:5.1f} us CPU/call at width" if rate else ""
    print(f"  {name:<34} median {median:7.0f} us   p90 {p90:7.0f} us{extra}")
    return median


def _median_rate(rates: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r[0] for r in rates), statistics.median(r[1] for r in rates)


async def bench_transports(url: str, args: argparse.Namespace) -> None:
    """The engine's client, aiohttp and httpx, interleaved in rounds (noise hits all alike)."""
    from engine.endpoints import Endpoint
    from engine.providers.http import HttpClient

    connector = aiohttp.TCPConnector(limit=100)
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    headers = {"Content-Type": "application/json"}
    ours = HttpClient()
    endpoint = Endpoint("bench", "openai", url, "gpt-bench")
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        httpx.AsyncClient(limits=limits) as client,
    ):

        async def via_engine() -> None:
            reply = await ours.post(endpoint, url + "/chat/completions", headers, BODY)
            orjson.loads(reply.body)

        async def via_aiohttp() -> None:
            async with session.post(url + "/chat/completions", data=BODY, headers=headers) as r:
                orjson.loads(await r.read())

        async def via_httpx() -> None:
            r = await client.post(url + "/chat/completions", content=BODY, headers=headers)
            orjson.loads(r.content)

        calls = {"engine": via_engine, "aiohttp": via_aiohttp, "httpx": via_httpx}
        times: dict[str, list[float]] = {name: [] for name in calls}
        rates: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
        for _ in range(args.rounds):
            for name, call in calls.items():
                times[name] += await sequential(call, args.calls // args.rounds)
                rates[name].append(
                    await concurrent(call, args.total // args.rounds, args.concurrent)
                )
        await ours.aclose()
    rate = {name: _median_rate(r) for name, r in rates.items()}
    e = report("engine transport POST (httptools)", times["engine"], rate["engine"])
    a = report("raw aiohttp POST", times["aiohttp"], rate["aiohttp"])
    h = report("raw httpx POST", times["httpx"], rate["httpx"])
    for name, median in (("aiohttp", a), ("httpx", h)):
        print(
            f"  -> {name} / engine transport: per-call {median / e:.2f}x, "
            f"CPU per call at width {rate[name][1] / rate['engine'][1]:.2f}x, "
            f"throughput {rate['engine'][0] / rate[name][0]:.2f}x in the engine's favour"
        )


async def bench_adapter(url: str, args: argparse.Namespace) -> None:
    """The OpenAI adapter end to end over each transport: the engine's own client and the
    aiohttp one (`transport: aiohttp`), interleaved in rounds like the raw transports."""
    from engine.endpoints import Endpoint
    from engine.messages import parse_request
    from engine.providers import aclose_all, get_adapter
    from engine.secrets import Secret

    adapter = get_adapter("openai")
    request = parse_request(
        {"messages": [{"role": "user", "content": "Say hello in one word."}], "max_tokens": 16}
    )
    calls = {}
    for transport in ("engine", "aiohttp"):
        endpoint = Endpoint(
            "bench",
            "openai",
            url,
            "gpt-bench",
            api_key=Secret("sk-bench-key"),
            options={"transport": transport},
        )

        async def complete(endpoint: Endpoint = endpoint) -> None:
            await adapter.complete(request, endpoint)

        async def stream(endpoint: Endpoint = endpoint) -> None:
            async for _ in adapter.stream(request, endpoint):
                pass

        calls[f"OpenAIAdapter.complete ({transport})"] = complete
        calls[f"OpenAIAdapter.stream ({transport})"] = stream
    times: dict[str, list[float]] = {name: [] for name in calls}
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
    for _ in range(args.rounds):
        for name, call in calls.items():
            times[name] += await sequential(call, args.calls // args.rounds)
            rates[name].append(await concurrent(call, args.total // args.rounds, args.concurrent))
    rate = {name: _median_rate(r) for name, r in rates.items()}
    medians = {name: report(name, times[name], rate[name]) for name in calls}
    for kind in ("complete", "stream"):
        e, a = f"OpenAIAdapter.{kind} (engine)", f"OpenAIAdapter.{kind} (aiohttp)"
        print(
            f"  -> {kind} over aiohttp / over the engine's client: per-call "
            f"{medians[a] / medians[e]:.2f}x, CPU per call {rate[a][1] / rate[e][1]:.2f}x, "
            f"throughput {rate[e][0] / rate[a][0]:.2f}x in the engine client's favour"
        )
    await aclose_all()


async def bench_sse_decoder() -> None:
    """Our SSE decoder alone (no network): microseconds per event over typical chunk lines."""
    from engine.providers.sse import iter_sse

    line = b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"word "}}]}'
    lines = [line, b""] * 20000

    async def source():  # type: ignore[no-untyped-def]
        for item in lines:
            yield item

    t0 = time.perf_counter()
    count = 0
    async for _ in iter_sse(source()):
        count += 1
    per_event = (time.perf_counter() - t0) / count * 1e6
    print(
        f"  {'SSE decoder (engine.providers.sse)':<34} {per_event:7.2f} us/event over {count} events"
    )


def canned_transport(body: bytes, headers: dict[str, str]) -> Any:
    """A transport whose every POST answers 200 with this body at once (no network)."""
    from multidict import CIMultiDict

    from engine.providers.http import HttpClient, Reply

    class Canned(HttpClient):
        def __init__(self) -> None:
            super().__init__()
            self.reply = Reply(200, CIMultiDict(headers), body)

        async def post(self, endpoint, url, headers, body):  # type: ignore[no-untyped-def,override]
            return self.reply

    return Canned()


async def bench_translation(calls: int) -> None:
    """Each adapter's own work (build body, encode, parse, normalise) with no network:
    the transport is replaced by one that returns the fake upstream's canned answer."""
    from engine.endpoints import Endpoint
    from engine.messages import parse_request
    from engine.providers.anthropic import AnthropicAdapter
    from engine.providers.gemini import GeminiAdapter
    from engine.providers.ollama import OllamaAdapter
    from engine.providers.openai import OpenAIAdapter
    from engine.secrets import Secret
    from engine.testing.fakes import Ask, FakeAnthropic, FakeGemini, FakeOllama, FakeOpenAI

    request = parse_request(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Say hello in one word."},
            ],
            "max_tokens": 16,
            "temperature": 0.2,
        }
    )
    ask = Ask(
        model="m", stream=False, prompt_texts=["Be brief.", "Say hello"], last_user="Say hello"
    )
    for name, fake, adapter_cls in [
        ("openai", FakeOpenAI, OpenAIAdapter),
        ("anthropic", FakeAnthropic, AnthropicAdapter),
        ("gemini", FakeGemini, GeminiAdapter),
        ("ollama", FakeOllama, OllamaAdapter),
    ]:
        up = fake()
        body = orjson.dumps(up.render(ask, ask.answer()))
        adapter = adapter_cls(canned_transport(body, up.success_headers()))
        endpoint = Endpoint("b", name, "http://127.0.0.1:1", "m", api_key=Secret("k"))

        async def call(adapter: Any = adapter, endpoint: Endpoint = endpoint) -> None:
            await adapter.complete(request, endpoint)

        report(f"{name} adapter, no network", await sequential(call, calls), None)


async def main(args: argparse.Namespace) -> None:
    proc, url = start_server()
    try:
        print(
            f"loopback chat/completions server; {args.calls} sequential calls, "
            f"{args.total} calls {args.concurrent} wide"
        )
        await bench_transports(url, args)
        await bench_adapter(url, args)
        await bench_sse_decoder()
        await bench_translation(args.calls)
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--total", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per client")
    asyncio.run(main(parser.parse_args()))
