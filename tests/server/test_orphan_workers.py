"""`engine serve --workers 2` whose supervisor is SIGKILLed: the workers exit too, and the
port is free for a restart (issue 14: they used to keep serving and block it)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.server.test_process import ROOT, _free_port, _wait_ready

WAIT_S = 30.0


def workers_of(pid: int) -> list[int]:
    """The spawned worker processes whose parent is `pid` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def test_workers_exit_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    """SIGKILL the supervisor: both workers end (PR_SET_PDEATHSIG / parent watch) and the
    port can be bound again."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.endswith("_BASE_URL")}
    env["ENGINE_LEDGER"] = str(tmp_path / "ledger.sqlite3")
    argv = [sys.executable, "-m", "engine", "serve", "--config", str(ROOT)]
    argv += ["--port", str(port), "--workers", "2"]
    with (tmp_path / "server.log").open("wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=out)
    workers: list[int] = []
    try:
        await _wait_ready(f"http://127.0.0.1:{port}", proc)
        deadline = time.monotonic() + WAIT_S
        while len(workers) < 2 and time.monotonic() < deadline:
            workers = workers_of(proc.pid)
        assert len(workers) == 2
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + WAIT_S
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(w) for w in workers), (tmp_path / "server.log").read_text()
        assert port_free(port)
    finally:
        for pid in [proc.pid, *workers]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
