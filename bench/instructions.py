"""Instructions per request: this checkout's server against another checkout's, counted.

    python -m bench.instructions --baseline DIR [--n 1000] [--c 1] [--upstream nginx|python]

Runs each checkout's `engine serve` (one worker, the config bench.proxy writes) under
valgrind's callgrind with instrumentation off, warms it (`--warmup` requests), then counts the
user-space instructions the server process (every thread) executes while it answers `--n`
chat requests at `--c` in flight, and prints instructions per request for both and their
ratio.

Why: on a shared 2-core VM the machine's speed drifts by 2x within minutes, and even
interleaved timing (bench.ab) moves by +-5% between runs, which is as large as the changes
worth measuring. An instruction count is the same to ~0.1% from one run to the next, so a
change of 1% shows. What it leaves out is what only a clock sees: the kernel's share
(system calls, page faults), cache misses, waiting; bench.ab measures those.
Needs valgrind (`make bench-tools`); each run takes about 20 s per 1,000 requests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import lean
from bench.ab import server, upstream_server
from bench.proxy import ROOT, free_port


async def drive(url: str, n: int, c: int) -> None:
    """`n` chat requests, `c` at a time, each answered 200."""
    import aiohttp

    body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "ping"}]})
    hdrs = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench-0000000000"}
    connector = aiohttp.TCPConnector(limit=c)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(count: int) -> None:
            for _ in range(count):
                async with session.post(url, data=body.encode(), headers=hdrs) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"{url}: HTTP {r.status}")

        await asyncio.gather(*(worker(n // c + (i < n % c)) for i in range(c)))


def _ready(url: str, proc: subprocess.Popen[bytes], within_s: float = 300.0) -> None:
    """Until the server (slow to start under valgrind) answers one request."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        with contextlib.suppress(Exception):
            asyncio.run(drive(url, 1, 1))
            return
        time.sleep(0.5)
    raise RuntimeError(f"the server did not answer within {within_s:.0f} s")


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True)


def _total(directory: Path) -> int:
    """The instructions of the dump `callgrind_control -d` wrote (the one dump with a
    number in its name; the file written at exit counts nothing: instrumentation is off)."""
    counts = []
    for path in directory.glob("callgrind.out.*.*"):
        found = re.search(r"^totals:\s*(\d+)", path.read_text(errors="replace"), re.M)
        if found:
            counts.append(int(found.group(1)))
    if not counts:
        raise RuntimeError(f"callgrind wrote no dump in {directory}")
    return max(counts)


def count(role: str, tree: Path, tmp: Path, upstream: str, n: int, c: int, warmup: int) -> float:
    """Instructions per request of `tree`'s server over `n` requests at `c` in flight."""
    system = server(role, tree, tmp, upstream)
    dumps = tmp / f"{role}-callgrind"
    dumps.mkdir()
    argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=no"]
    argv += [f"--callgrind-out-file={dumps}/callgrind.out.%p", *system.argv]
    env = {**os.environ, **(system.env or {})}
    proc = subprocess.Popen(argv, cwd=tree, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        _ready(system.url, proc)
        asyncio.run(drive(system.url, warmup, c))  # connections, caches, lazy imports
        _control("-i", "on", str(proc.pid))
        asyncio.run(drive(system.url, n, c))
        _control("-i", "off", str(proc.pid))
        _control("-d", str(proc.pid))
        return _total(dumps) / n
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    p.add_argument("--baseline", type=Path, required=True, help="the other checkout's root")
    p.add_argument("--n", type=int, default=1000, help="requests counted per server")
    p.add_argument("--c", type=int, default=1, help="requests in flight")
    p.add_argument(
        "--warmup",
        type=int,
        default=1000,
        help="requests before counting: enough that one-time work (a statement compiled "
        "per ledger batch size first seen, say) does not land in the count",
    )
    p.add_argument("--upstream", choices=["nginx", "python"], default="nginx")
    a = p.parse_args(argv)
    missing = [t for t in ("valgrind", "callgrind_control") if shutil.which(t) is None]
    if a.upstream == "nginx" and "nginx-light" in lean.tools_missing():
        missing.append("nginx")
    if missing:
        raise SystemExit(f"not installed: {', '.join(missing)}: run `make bench-tools`")
    trees = {"baseline": a.baseline.resolve(), "candidate": ROOT}
    port = free_port()
    counts = {}
    with tempfile.TemporaryDirectory() as tmpdir, upstream_server(port, a.upstream == "nginx"):
        for role, tree in trees.items():
            url = f"http://127.0.0.1:{port}"
            counts[role] = count(role, tree, Path(tmpdir), url, a.n, a.c, a.warmup)
    print(f"instructions per request, server process, {a.n} requests at c={a.c}:")
    for role, tree in trees.items():
        print(f"{role:<10} {counts[role]:>12,.0f}   {tree}")
    print(f"candidate / baseline: {counts['candidate'] / counts['baseline']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
