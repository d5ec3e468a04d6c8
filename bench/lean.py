"""A load generator and an upstream that cost almost no CPU, and a meter of who used the cores.

On a 2-core machine a Python load generator and a Python fake upstream take as much CPU as
the server they measure, so a figure of `serve --workers 2` says more about them than about
the workers. Here the load comes from `wrk` (C, one thread) and the upstream is `nginx`
answering a canned chat completion from its config (no body parsing, no Python): both are
Debian packages, installed for benchmarks only by `make bench-tools`. The meter reads each
process's utime+stime from /proc/<pid>/stat before and after a run (and the load
generator's own from wait4), so a report can say where the cores went.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.proxy_apps import _ANSWER, _MODELS

TICKS = os.sysconf("SC_CLK_TCK")


def tools_missing() -> list[str]:
    """The Debian packages this module needs that are not installed."""
    wanted = {"wrk": "wrk", "nginx": "nginx-light"}
    return [pkg for binary, pkg in wanted.items() if not _which(binary)]


def _which(binary: str) -> str | None:
    return shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/local/sbin")


# --------------------------------------------------------------------------- nginx upstream


def _nginx_conf(prefix: Path, port: int) -> str:
    def literal(body: bytes) -> str:
        return "'" + body.decode().replace("\\", "\\\\").replace("'", "\\'") + "'"

    answer = literal(orjson.dumps(_ANSWER))
    return f"""
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log error;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_buffer_size 64k;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        default_type application/json;
        location = /v1/chat/completions {{ return 200 {answer}; }}
        location = /v1/models {{ return 200 {literal(_MODELS)}; }}
    }}
}}
"""


@contextlib.contextmanager
def nginx_upstream(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """nginx (one process: master_process off) answering the fake upstream's canned reply."""
    binary = _which("nginx")
    if binary is None:
        raise RuntimeError("nginx is not installed: make bench-tools")
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as tmp:
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(_nginx_conf(Path(tmp), port))
        argv = [binary, "-p", tmp, "-c", str(conf), "-e", f"{tmp}/error.log"]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_port(port, proc)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_port(port: int, proc: subprocess.Popen[bytes], within_s: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"nginx exited with {proc.returncode}: {err[-500:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nginx did not listen on {port}")


# --------------------------------------------------------------------------- wrk load


@dataclass
class LoadResult:
    rps: float
    requests: int
    errors: int
    first_error: str | None
    cpu_s: float  # the load generator's own user+system CPU over the run


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench-0000000000"
"""


def wrk_load(url: str, body: Mapping[str, Any], c: int, seconds: float) -> LoadResult:
    """`c` connections for `seconds` from one wrk thread; non-2xx and socket errors count."""
    binary = _which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed: make bench-tools")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT.format(body=_lua_string(orjson.dumps(body).decode())))
    try:
        argv = [binary, "-t1", f"-c{c}", f"-d{max(1, round(seconds))}s", "-s", script.name, url]
        out, cpu = run_metered(argv, timeout=seconds + 60)
    finally:
        os.unlink(script.name)
    return parse_wrk(out, cpu)


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_wrk(out: str, cpu_s: float) -> LoadResult:
    """wrk's summary as numbers (its 'Non-2xx' and 'Socket errors' lines are the errors)."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rps is None or total is None:
        raise RuntimeError(f"wrk printed no summary: {out[-500:]}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    first = out.strip().splitlines()[-1] if errors else None
    return LoadResult(float(rps.group(1)), int(total.group(1)), errors, first, cpu_s)


def run_metered(argv: list[str], timeout: float) -> tuple[str, float]:
    """Run a child to its end; its stdout and the user+system CPU it used (wait4)."""
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{argv[0]} did not finish in {timeout:.0f}s")
            time.sleep(0.05)
        log.seek(0)
        out = log.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited with {proc.returncode}: {out[-500:]}")
    return out, usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- the CPU meter


def cpu_of(pid: int) -> float:
    """utime+stime of one live process, in seconds (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (uvicorn's workers, multiprocessing's helpers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / TICKS, sum(values[:8]) / TICKS


class Meter:
    """CPU seconds per named group of processes over one stretch of time."""

    def __init__(self, groups: Mapping[str, list[int]]) -> None:
        self.groups = groups
        self._start = {name: [cpu_of(p) for p in pids] for name, pids in groups.items()}
        self._machine = machine_busy()
        self._t0 = time.monotonic()

    def stop(self, extra: Mapping[str, float] | None = None) -> dict[str, float]:
        """Cores each group used on average (CPU seconds / wall seconds), plus `other`
        (everything else on the machine) and `idle`."""
        wall = time.monotonic() - self._t0
        busy0, total0 = self._machine
        busy1, total1 = machine_busy()
        cores = (total1 - total0) / wall if wall else 0.0
        out: dict[str, float] = {}
        for name, pids in self.groups.items():
            used = sum(cpu_of(p) - s for p, s in zip(pids, self._start[name], strict=True))
            out[name] = max(0.0, used) / wall
        for name, seconds in (extra or {}).items():
            out[name] = seconds / wall
        out["other"] = max(0.0, (busy1 - busy0) / wall - sum(out.values()))
        out["idle"] = max(0.0, cores - (busy1 - busy0) / wall)
        return out


def shares(used: Mapping[str, float]) -> str:
    """'workers 1.52, redis 0.30, ...' in cores."""
    return ", ".join(f"{name} {value:.2f}" for name, value in used.items())
