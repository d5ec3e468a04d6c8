"""Proxy benchmark: what a hop through our server costs, next to the floor and other gateways.

`python -m bench.proxy [--only a,b] [--quick]` starts, each in its own process on loopback:
a fast fake OpenAI upstream, then one system at a time (direct, the bare pass-through floor,
candidate web stacks, our server, LiteLLM's proxy and Portkey's gateway when installed under
bench/), and drives it with a load generator in a separate process. Everything is bounded
by request count and wall time. It prints, per system:

- added p50 latency at concurrency 1 (system p50 minus direct p50), non-streaming;
- throughput and p99 at concurrency 50 (one server worker);
- added time to first streamed chunk at concurrency 1 (p50);
- RSS at idle and peak RSS while 1,000 streams are open at once.

The engine-messages and engine-responses rows are the same server and the same upstream call
with another API in front. Their p50 over chat is printed twice: row against row (separate
server processes, measured one after the other), and paired (`api_gaps`: one server,
interleaved c=1 rounds), which is immune to drift over the run and to process-to-process
differences.

LiteLLM: `bench/.venv/bin/pip install 'litellm[proxy]'`. Portkey: `npm install --prefix bench
@portkey-ai/gateway`. Each is skipped with a printed reason when missing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
BODY = {"model": "bench", "messages": [{"role": "user", "content": "ping"}], "max_tokens": 16}
#: The API each engine row speaks (the same upstream call behind each): its path, its body.
APIS = {
    "chat": "/v1/chat/completions",
    "messages": "/v1/messages",
    "responses": "/v1/responses",
}


def payload_for(api: str, model: str, content: str, stream: bool) -> dict[str, Any]:
    """The request body of one API for the same one-line prompt."""
    if api == "messages":
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": 16,
            "messages": [{"role": "user", "content": content}],
        }
    elif api == "responses":
        body = {"model": model, "max_output_tokens": 16, "input": content}
    else:
        body = {**BODY, "model": model, "messages": [{"role": "user", "content": content}]}
        if stream:
            body["stream_options"] = {"include_usage": True}
    if stream:
        body["stream"] = True
    return body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _raise_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --------------------------------------------------------------------------- load generator


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _one(
    session: Any, url: str, body: bytes, headers: dict[str, str], stream: bool
) -> tuple[float, float]:
    """One request; returns (total seconds, seconds to the first streamed data line)."""
    t0 = time.perf_counter()
    first = 0.0
    async with session.post(url, data=body, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {(await resp.text())[:200]}")
        if not stream:
            await resp.read()
        else:
            async for line in resp.content:
                if not first and line.startswith(b"data:"):
                    first = time.perf_counter() - t0
    return time.perf_counter() - t0, first


async def _load(
    url: str,
    n: int,
    c: int,
    seconds: float,
    stream: bool,
    headers: dict[str, str],
    model: str,
    content: str,
    api: str = "chat",
) -> dict[str, Any]:
    import aiohttp

    body = json.dumps(payload_for(api, model, content, stream)).encode()
    hdrs = {
        "Content-Type": "application/json",
        "Authorization": "Bearer sk-bench-0000000000",
        **headers,
    }
    lat: list[float] = []
    ttft: list[float] = []
    errors: list[str] = []
    remaining = [n]
    deadline = time.perf_counter() + seconds
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=c), timeout=timeout
    ) as session:

        async def worker() -> None:
            while remaining[0] > 0 and time.perf_counter() < deadline:
                remaining[0] -= 1
                try:
                    total, first = await _one(session, url, body, hdrs, stream)
                except Exception as exc:
                    errors.append(str(exc)[:200])
                    continue
                lat.append(total)
                ttft.append(first)

        for _ in range(min(c, 5)):  # warm the connections first
            with contextlib.suppress(Exception):
                await _one(session, url, body, hdrs, stream)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(c)))
        elapsed = time.perf_counter() - t0
    return {
        "n": len(lat),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "rps": len(lat) / elapsed if elapsed else 0.0,
        "p50_ms": _pct(lat, 0.5) * 1000,
        "p99_ms": _pct(lat, 0.99) * 1000,
        "ttft_p50_ms": _pct(ttft, 0.5) * 1000 if stream else None,
    }


async def _paired(
    base: str, apis: list[str], n: int, slices: int, model: str
) -> dict[str, list[float]]:
    """c=1 on one connection to one server: `slices` rounds of `n` requests per API, the
    API that goes first rotating each round; returns each API's p50 (ms) per round. Paired
    rounds cancel what drifts over a run and what differs between server processes, which
    separate rows (one server process each, one after the other) do not."""
    import aiohttp

    hdrs = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench-0000000000"}
    bodies = {a: json.dumps(payload_for(a, model, "ping", False)).encode() for a in apis}
    out: dict[str, list[float]] = {a: [] for a in apis}
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1), timeout=timeout
    ) as session:
        for api in apis:  # warm every route first
            for _ in range(20):
                await _one(session, base + APIS[api], bodies[api], hdrs, False)
        for i in range(slices):
            for api in apis[i % len(apis) :] + apis[: i % len(apis)]:
                lat = [
                    (await _one(session, base + APIS[api], bodies[api], hdrs, False))[0]
                    for _ in range(n)
                ]
                out[api].append(_pct(lat, 0.5) * 1000)
    return out


def paired_main(argv: list[str]) -> None:
    """Entry of the paired load process: prints one JSON line {api: [p50 ms per round]}."""
    p = argparse.ArgumentParser()
    p.add_argument("base")
    p.add_argument("--apis", default=",".join(APIS))
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--slices", type=int, default=20)
    p.add_argument("--model", default="bench")
    a = p.parse_args(argv)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    result = asyncio.run(_paired(a.base, a.apis.split(","), a.n, a.slices, a.model))
    print(json.dumps(result))


def load_main(argv: list[str]) -> None:
    """Entry of the load-generator process: prints one JSON line of results."""
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--c", type=int, default=1)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--stream", action="store_true")
    p.add_argument("--model", default="bench")
    p.add_argument("--content", default="ping")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--api", choices=sorted(APIS), default="chat")
    a = p.parse_args(argv)
    headers = dict(h.split(":", 1) for h in a.header)
    _raise_fd_limit()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    result = asyncio.run(
        _load(a.url, a.n, a.c, a.seconds, a.stream, headers, a.model, a.content, a.api)
    )
    print(json.dumps(result))


# --------------------------------------------------------------------------- systems


@dataclass
class System:
    name: str
    argv: list[str]
    port: int
    model: str = "bench"
    headers: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = ROOT
    startup_s: float = 60.0
    big_n: int = 20000  # request cap at c=50 (the slow gateways get fewer)
    api: str = "chat"  # which API the load speaks (APIS)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{APIS[self.api]}"


@contextlib.contextmanager
def started(
    argv: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT
) -> Iterator[subprocess.Popen[bytes]]:
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_raise_fd_limit,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        if proc.returncode not in (0, -15, 143) and os.environ.get("BENCH_VERBOSE"):
            log.seek(0)
            print(log.read().decode(errors="replace")[-2000:], file=sys.stderr)
        log.close()


def wait_ready(system: System, proc: subprocess.Popen[bytes]) -> str | None:
    """Poll with a real request until it answers 200; returns a reason when it never does."""
    import urllib.request

    body = json.dumps(payload_for(system.api, system.model, "ping", False)).encode()
    deadline = time.monotonic() + system.startup_s
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited with {proc.returncode}"
        req = urllib.request.Request(
            system.url,
            data=body,
            headers={
                "Content-Type": "application/json",
                "Authorization": "Bearer sk-bench-0000000000",
                **system.headers,
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                if resp.status == 200:
                    return None
        except Exception as exc:
            last = str(exc)[:200]
        time.sleep(0.25)
    return f"not ready after {system.startup_s:.0f}s: {last}"


def run_load(
    system: System, *, n: int, c: int, seconds: float, stream: bool = False, content: str = "ping"
) -> dict[str, Any]:
    argv = [
        PY,
        "-m",
        "bench.proxy",
        "--load",
        system.url,
        "--n",
        str(n),
        "--c",
        str(c),
        "--seconds",
        str(seconds),
        "--model",
        system.model,
        "--content",
        content,
        "--api",
        system.api,
    ]
    argv += ["--stream"] if stream else []
    for k, v in system.headers.items():
        argv += ["--header", f"{k}:{v}"]
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-500:])
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def api_gaps(system: System, apis: list[str], quick: bool) -> dict[str, float]:
    """Per API, the median over paired rounds of its c=1 p50 minus chat's (ms), all against
    this one server process (`_paired`)."""
    argv = [PY, "-m", "bench.proxy", "--paired", f"http://127.0.0.1:{system.port}"]
    argv += ["--apis", ",".join(["chat", *apis]), "--slices", "4" if quick else "20"]
    argv += ["--model", system.model]
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-500:])
    p50s = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        f"paired_{api}_ms": statistics.median(
            a - c for a, c in zip(p50s[api], p50s["chat"], strict=True)
        )
        for api in apis
    }


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and all its descendants (LiteLLM and node may fork)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def rss_under_streams(
    system: System, proc: subprocess.Popen[bytes], streams: int
) -> tuple[float, int]:
    """Peak RSS while `streams` slow streams are open at once; returns (MB, completed)."""
    argv = [
        PY,
        "-m",
        "bench.proxy",
        "--load",
        system.url,
        "--n",
        str(streams),
        "--c",
        str(streams),
        "--seconds",
        "60",
        "--stream",
        "--model",
        system.model,
        "--content",
        "delay:300",
    ]
    for k, v in system.headers.items():
        argv += ["--header", f"{k}:{v}"]
    loader = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_raise_fd_limit,
    )
    peak = 0.0
    while loader.poll() is None:
        peak = max(peak, tree_rss_mb(proc.pid))
        time.sleep(0.1)
    out, _ = loader.communicate()
    done = json.loads(out.strip().splitlines()[-1])["n"] if out.strip() else 0
    return peak, int(done)


# --------------------------------------------------------------------------- definitions


def engine_config(tmp: Path, upstream: str) -> Path:
    """A config dir routing policy `bench` to one OpenAI-protocol provider at the fake upstream."""
    (tmp / "routes").mkdir(parents=True, exist_ok=True)
    (tmp / "models.yaml").write_text(
        "providers:\n"
        "  bench:\n"
        "    protocol: openai\n"
        f"    base_url: {upstream}/v1\n"
        "    api_key: sk-bench-upstream-key\n"
        "    pool_size: 1000\n"
        "models:\n"
        "  bench/gpt-4o-mini:\n"
        "    upstream: gpt-4o-mini\n"
        "    capabilities: [chat, tools, json, streaming]\n"
        # One token-limit field whichever API asked (chat and Messages say max_tokens,
        # Responses max_output_tokens): every API row sends the upstream the same bytes.
        "    parameters: {token_limit: max_tokens}\n"
        "    input_price: 0.15\n"
        "    output_price: 0.6\n"
        "    context_window: 128000\n"
        "    max_output: 16384\n"
    )
    (tmp / "routes" / "bench.yaml").write_text(
        "strategy: ordered\ncandidates: [bench/gpt-4o-mini]\n"
    )
    (tmp / "server.yaml").write_text("access_log: false\nreload: false\n")
    return tmp


def litellm_config(tmp: Path, upstream: str) -> Path:
    path = tmp / "litellm.yaml"
    path.write_text(
        "model_list:\n"
        "  - model_name: bench\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o-mini\n"
        f"      api_base: {upstream}/v1\n"
        "      api_key: sk-bench-upstream-key\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )
    return path


def systems(tmp: Path, upstream: str, upstream_port: int) -> tuple[list[System], list[str]]:
    tmp.mkdir(parents=True, exist_ok=True)
    apps = [PY, "-m", "bench.proxy_apps"]
    out: list[System] = [System("direct", [], upstream_port)]
    for role in ("floor", "starlette-fast", "starlette-plain", "aiohttp-web"):
        port = free_port()
        out.append(System(role, [*apps, role, str(port), upstream], port))
    port = free_port()
    cfg = engine_config(tmp / "engine", upstream)
    out.append(
        System(
            "engine",
            [PY, "-m", "engine", "serve", "--config", str(cfg), "--port", str(port)],
            port,
            env={"ENGINE_LOG_LEVEL": "warning", "ENGINE_LEDGER": str(tmp / "ledger.sqlite3")},
        )
    )
    for api in ("messages", "responses"):  # the same engine, another API in front of it
        port = free_port()
        engine_argv = [PY, "-m", "engine", "serve", "--config", str(cfg), "--port", str(port)]
        env = {"ENGINE_LOG_LEVEL": "warning", "ENGINE_LEDGER": str(tmp / f"ledger-{api}.sqlite3")}
        out.append(System(f"engine-{api}", engine_argv, port, env=env, api=api))
    port = free_port()  # the same server with OpenTelemetry on, exporting to the upstream's sink
    out.append(
        System(
            "engine-traced",
            [PY, "-m", "engine", "serve", "--config", str(cfg), "--port", str(port)],
            port,
            env={
                "ENGINE_LOG_LEVEL": "warning",
                "ENGINE_LEDGER": str(tmp / "ledger-traced.sqlite3"),
                "OTEL_EXPORTER_OTLP_ENDPOINT": upstream,
            },
        )
    )
    skipped: list[str] = []
    litellm = HERE / ".venv" / "bin" / "litellm"
    if litellm.exists():
        port = free_port()
        out.append(
            System(
                "litellm",
                [
                    str(litellm),
                    "--config",
                    str(litellm_config(tmp, upstream)),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--num_workers",
                    "1",
                ],
                port,
                env={
                    "LITELLM_LOG": "ERROR",
                    "LITELLM_TELEMETRY": "False",
                    "LITELLM_MASTER_KEY": "sk-bench-0000000000",
                },
                startup_s=120,
                big_n=3000,
            )
        )
    else:
        skipped.append("litellm: not installed (bench/.venv/bin/pip install 'litellm[proxy]')")
    gateway = HERE / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    node = shutil.which("node")
    if gateway.exists() and node:
        port = free_port()
        out.append(
            System(
                "portkey",
                [node, str(gateway), f"--port={port}", "--headless"],
                port,
                model="gpt-4o-mini",
                headers={"x-portkey-provider": "openai", "x-portkey-custom-host": f"{upstream}/v1"},
                big_n=10000,
            )
        )
    else:
        skipped.append(
            "portkey: not installed (npm install --prefix bench @portkey-ai/gateway) or node missing"
        )
    return out, skipped


# --------------------------------------------------------------------------- orchestration


def measure(
    system: System, proc: subprocess.Popen[bytes] | None, quick: bool, rss: bool
) -> dict[str, Any]:
    scale = 0.2 if quick else 1.0
    res: dict[str, Any] = {}
    c1 = run_load(system, n=int(2000 * scale) or 50, c=1, seconds=15)
    res["c1_p50_ms"] = c1["p50_ms"]
    c50 = run_load(system, n=int(system.big_n * scale), c=50, seconds=10 * scale + 2)
    res |= {
        "rps": c50["rps"],
        "c50_p99_ms": c50["p99_ms"],
        "errors": c1["errors"] + c50["errors"],
        "first_error": c1["first_error"] or c50["first_error"],
    }
    st = run_load(system, n=int(1000 * scale) or 50, c=1, seconds=15, stream=True)
    res["ttft_p50_ms"] = st["ttft_p50_ms"]
    res["errors"] += st["errors"]
    res["first_error"] = res["first_error"] or st["first_error"]
    if proc is not None:
        res["rss_idle_mb"] = tree_rss_mb(proc.pid)
        if rss:
            res["rss_1000_mb"], res["streams_done"] = rss_under_streams(system, proc, 1000)
    return res


def render(results: dict[str, dict[str, Any]], skipped: list[str]) -> str:
    lines = [
        f"{'system':<16}{'+p50 c1 ms':>11}{'req/s c50':>11}{'p99 c50 ms':>12}{'+TTFT ms':>10}{'RSS idle':>10}{'RSS 1k':>9}{'errors':>8}",
    ]
    for name, r in results.items():
        if "skipped" in r:
            lines.append(f"{name:<16}skipped: {r['skipped']}")
            continue
        add = r["add_c1_ms"] if name != "direct" else r["c1_p50_ms"]
        ttft = r["add_ttft_ms"] if name != "direct" else r["ttft_p50_ms"]
        ttft_text = "failed" if ttft != ttft else f"{ttft:.3f}"  # NaN: every stream failed
        rss_idle = f"{r['rss_idle_mb']:.0f}MB" if "rss_idle_mb" in r else "-"
        rss_1k = f"{r['rss_1000_mb']:.0f}MB" if "rss_1000_mb" in r else "-"
        lines.append(
            f"{name:<16}{add:>11.3f}{r['rps']:>11.0f}{r['c50_p99_ms']:>12.1f}{ttft_text:>10}{rss_idle:>10}{rss_1k:>9}{r['errors']:>8}"
        )
        if r.get("first_error"):
            lines.append(f"{'':<16}first error: {r['first_error']}")
    lines.append("(direct row: absolute p50 and TTFT; other rows: added over direct)")
    eng = results.get("engine", {})
    if eng.get("c1_p50_ms") and results.get("floor", {}).get("c1_p50_ms"):
        lines.append(
            f"engine p50 over the bare pass-through floor at c=1: {eng['c1_p50_ms'] - results['floor']['c1_p50_ms']:+.3f} ms"
        )
    for api in ("messages", "responses"):
        other = results.get(f"engine-{api}", {})
        if eng.get("c1_p50_ms") and other.get("c1_p50_ms"):
            extra = other["c1_p50_ms"] - eng["c1_p50_ms"]
            text = f"/v1/{api} p50 over /v1/chat/completions at c=1: {extra:+.3f} ms (rows)"
            if f"paired_{api}_ms" in eng:
                text += f", {eng[f'paired_{api}_ms']:+.3f} ms (one server, paired rounds)"
            lines.append(text)
    for other in ("portkey", "litellm", "floor"):
        o = results.get(other, {})
        if eng.get("rps") and o.get("rps"):
            lines.append(f"engine/{other} throughput ratio at c=50: {eng['rps'] / o['rps']:.1f}x")
    lines += [f"skipped {s}" for s in skipped]
    return "\n".join(lines)


DEFAULT_SYSTEMS = (
    *("floor", "starlette-fast", "engine", "engine-messages", "engine-responses"),
    *("litellm", "portkey"),
)


def one_round(
    all_systems: list[System], up_proc: subprocess.Popen[bytes], quick: bool, rss: bool
) -> dict[str, dict[str, Any]]:
    """Every system once, direct first; `add_*` figures are relative to this round's direct.
    With an engine-<api> row chosen too, the engine's server also measures those APIs
    against chat in paired rounds (`api_gaps`)."""
    results: dict[str, dict[str, Any]] = {}
    chosen = {s.name for s in all_systems}
    paired = [s.api for s in all_systems if s.name.startswith("engine-") and s.api != "chat"]
    paired = paired if "engine" in chosen else []
    for system in all_systems:
        if system.name == "direct":
            if err := wait_ready(system, up_proc):
                raise RuntimeError(f"upstream failed: {err}")
            results["direct"] = measure(system, None, quick, rss=False)
        else:
            with started(system.argv, system.env, system.cwd) as proc:
                if err := wait_ready(system, proc):
                    results[system.name] = {"skipped": err}
                    continue
                results[system.name] = measure(system, proc, quick, rss=rss)
                if system.name == "engine" and paired:
                    results["engine"] |= api_gaps(system, paired, quick)
        print(f"measured {system.name}", file=sys.stderr, flush=True)
    direct = results["direct"]
    for r in results.values():
        if "skipped" not in r:
            r["add_c1_ms"] = r["c1_p50_ms"] - direct["c1_p50_ms"]
            r["add_ttft_ms"] = r["ttft_p50_ms"] - direct["ttft_p50_ms"]
    return results


HIGHER_IS_BETTER = frozenset({"rps", "n", "streams_done"})


def best(values: list[float], key: str = "") -> float:
    return max(values) if key in HIGHER_IS_BETTER else min(values)


def pick(
    rounds: list[dict[str, dict[str, Any]]], how: Callable[..., float]
) -> dict[str, dict[str, Any]]:
    """Per system, one value of each figure over the rounds (median or best)."""
    out: dict[str, dict[str, Any]] = {}
    for name in rounds[0]:
        runs = [r[name] for r in rounds if name in r and "skipped" not in r[name]]
        if not runs:
            out[name] = rounds[0][name]
            continue
        merged: dict[str, Any] = {}
        for key in runs[0]:
            values = [run[key] for run in runs if key in run]
            numbers = [v for v in values if isinstance(v, int | float) and v == v]
            if key == "first_error":
                merged[key] = next((v for v in values if v), None)
            elif key == "errors":
                merged[key] = sum(numbers)
            else:
                merged[key] = _apply(how, numbers, key) if numbers else float("nan")
        out[name] = merged
    return out


def _apply(how: Callable[..., float], numbers: list[float], key: str) -> float:
    return how(numbers, key) if how is best else how(numbers)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--load":
        load_main(argv[1:])
        return 0
    if argv and argv[0] == "--paired":
        paired_main(argv[1:])
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.proxy", description=__doc__.splitlines()[0])
    p.add_argument(
        "--only",
        default=",".join(DEFAULT_SYSTEMS),
        help="comma-separated systems (direct always runs); also: starlette-plain, aiohttp-web, "
        "engine-traced (OpenTelemetry on)",
    )
    p.add_argument(
        "--rounds", type=int, default=3, help="rounds over all systems; figures are medians"
    )
    p.add_argument(
        "--quick", action="store_true", help="a fifth of the requests, one round (smoke run)"
    )
    p.add_argument("--no-rss", action="store_true", help="skip the 1,000-stream RSS measurement")
    p.add_argument("--json", action="store_true", help="also print the raw figures as JSON")
    a = p.parse_args(argv)
    only = {s for s in a.only.split(",") if s} | {"direct"}
    rounds = 1 if a.quick else max(1, a.rounds)
    upstream_port = free_port()
    upstream = f"http://127.0.0.1:{upstream_port}"
    done: list[dict[str, dict[str, Any]]] = []
    with (
        tempfile.TemporaryDirectory() as tmpdir,
        started([PY, "-m", "bench.proxy_apps", "upstream", str(upstream_port)]) as up_proc,
    ):
        skipped: list[str] = []
        for i in range(rounds):  # fresh ports each round: old ones may now be a client's
            all_systems, skipped = systems(Path(tmpdir) / str(i), upstream, upstream_port)
            chosen = [s for s in all_systems if s.name in only]
            done.append(one_round(chosen, up_proc, a.quick, rss=not a.no_rss and i == 0))
    load = os.getloadavg()[0]
    print(f"{rounds} round(s) on {os.cpu_count()} cores; load average at the end {load:.1f}")
    print("\nmedian over rounds:")
    print(render(pick(done, statistics.median), skipped))
    if rounds > 1:
        print("\nbest round per figure (least disturbed by other load on the machine):")
        print(render(pick(done, best), skipped))
    if a.json:
        print(json.dumps(done, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
