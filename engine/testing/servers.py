"""Real Redis and Postgres servers for tests, started on free loopback ports and stopped after.

Shared-state backends are only proven against the real servers: fakeredis's Lua is not the
server's, and SQL dialect details only show on a real Postgres. These helpers start the
Debian binaries (`redis-server`, Postgres' `initdb`/`pg_ctl`) in a temporary directory with
nothing persisted and no network beyond 127.0.0.1. When a binary is missing they raise
`ServerUnavailableError` naming the package to install (`make test` installs both), so a
test that needs one fails loudly instead of skipping.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


class ServerUnavailableError(RuntimeError):
    """A test server's binary is not installed, or it did not come up."""


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerUnavailableError(f"server on port {port} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise ServerUnavailableError(f"nothing listened on 127.0.0.1:{port} within {timeout_s}s")


class RedisServer:
    """One `redis-server` with persistence off, on its own port and directory."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerUnavailableError(
                "redis-server is not installed (apt-get install redis-server)"
            )
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="engine-redis-")
        self._proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self._dir.name],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_for_port(self.port, self._proc)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        """The server process (benches read its CPU time from /proc)."""
        return self._proc.pid

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._dir.cleanup()


def _postgres_bin() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not candidates:
        raise ServerUnavailableError("Postgres is not installed (apt-get install postgresql)")
    return Path(candidates[-1]).parent


class PostgresServer:
    """A throwaway cluster (`initdb` + `pg_ctl`), trust auth on 127.0.0.1 only.

    Postgres refuses to run as root, so as root the cluster belongs to the `postgres` user
    the Debian package creates and every command runs through `runuser`.
    """

    def __init__(self) -> None:
        self._bin = _postgres_bin()
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="engine-pg-")
        self._data = Path(self._dir.name) / "data"
        self._sock = Path(self._dir.name) / "sock"
        self._sock.mkdir()
        self._as = self._run_as()
        if self._as:  # the cluster's files belong to the user that runs it
            shutil.chown(self._dir.name, "postgres", "postgres")
            shutil.chown(self._sock, "postgres", "postgres")
        self._cmd("initdb", "-D", str(self._data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.resume()

    def resume(self) -> None:
        """Start the cluster (again, after `pause`), on the same port."""
        options = f"-p {self.port} -k {self._sock} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._cmd("pg_ctl", "-D", str(self._data), "-o", options, "-w", "-l",
                  str(Path(self._dir.name) / "log"), "start")  # fmt: skip

    def pause(self) -> None:
        """Stop the cluster, keeping its data, as an outage would (`resume` brings it back)."""
        self._cmd("pg_ctl", "-D", str(self._data), "-m", "fast", "-w", "stop")

    @staticmethod
    def _run_as() -> list[str]:
        if os.geteuid() != 0:
            return []
        runuser = shutil.which("runuser")
        if runuser is None:
            raise ServerUnavailableError("running as root needs `runuser` to start Postgres")
        return [runuser, "-u", "postgres", "--"]

    def _cmd(self, name: str, *args: str) -> None:
        done = subprocess.run(
            [*self._as, str(self._bin / name), *args], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise ServerUnavailableError(f"{name} failed: {done.stderr.strip()[-500:]}")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        with contextlib.suppress(ServerUnavailableError):
            self._cmd("pg_ctl", "-D", str(self._data), "-m", "immediate", "-w", "stop")
        self._dir.cleanup()


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A running Redis for the duration of the block."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A running Postgres for the duration of the block."""
    server = PostgresServer()
    try:
        yield server
    finally:
        server.stop()
