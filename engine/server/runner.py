"""Start-up: settings, the bind-safety check, the provider banner, and uvicorn.

`build_app()` is the factory uvicorn imports in every worker; it reads everything from
ENGINE_* environment variables (the serve command exports its flags there first), so one
worker or many behave the same. uvicorn handles SIGTERM: it stops accepting, drains
in-flight requests and streams (up to `drain_timeout_s`), then runs the app's lifespan
shutdown, which closes the engine and flushes the ledger.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from starlette.applications import Starlette

from engine.assemble import budgets_path, for_workers, limits_path, load_plan
from engine.plan.compiled import Plan
from engine.server.app import create_app
from engine.server.orphan import exit_with_parent
from engine.server.reload import ConfigWatcher
from engine.server.settings import ServerSettings, load_settings

log = logging.getLogger("engine.server")


def bind_problem(settings: ServerSettings) -> str | None:
    """Why this server must not start as configured (None when it may)."""
    if settings.loopback_only or settings.api_keys or settings.insecure:
        return None
    return (
        f"refusing to listen on {settings.host} without API keys: set ENGINE_API_KEYS or "
        "api_keys in server.yaml, bind to 127.0.0.1, or pass --insecure"
    )


def banner(plan: Plan, settings: ServerSettings) -> str:
    """What a person wants to see at start: which providers work, and why the others do not."""
    counts = f"{len(plan.policies)} policies, {len(plan.models)} models"
    lines = [f"engine: serving {counts} from {settings.config_dir}"]
    for provider in sorted(plan.providers.values(), key=lambda p: p.id):
        if provider.enabled:
            lines.append(f"  provider {provider.id:<14} enabled  ({provider.protocol})")
        else:
            reason = provider.disabled_reason or "disabled"
            lines.append(f"  provider {provider.id:<14} disabled: {reason}")
    if settings.state_url:  # never the URL itself: it may carry a password
        lines.append("  state: budgets, rate limits and cache shared in Redis (state_url)")
    elif settings.workers > 1:
        lines.append(
            f"  {settings.workers} workers: budgets shared in {budgets_path(settings.config_dir)}, "
            f"rate limits in {limits_path(settings.config_dir)}"
        )
    if settings.ledger_url and settings.ledger_url.startswith(("postgresql://", "postgres://")):
        lines.append("  ledger: Postgres (ledger_url)")
    auth = f"{len(settings.api_keys)} API keys" if settings.api_keys else "no API keys (open)"
    lines.append(f"  listening on http://{settings.host}:{settings.port}  auth: {auth}")
    return "\n".join(lines)


#: The directory one server's workers share, created by the supervisor (`serve`); the
#: variable is prometheus-client's own, read when a worker first imports it.
WORKERS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def workers_dir(settings: ServerSettings) -> Path | None:
    """Where this worker and its siblings meet (metrics files, sockets); None alone."""
    shared = os.environ.get(WORKERS_DIR_ENV)
    return Path(shared) if settings.workers > 1 and shared else None


@contextlib.contextmanager
def shared_workers_dir() -> Iterator[Path]:
    """A fresh private directory for one server's workers, named in the environment they
    inherit, removed when the server stops: prometheus-client's multiprocess files must
    not outlive the processes that wrote them, or a restarted server would count on from
    the last run's totals."""
    directory = Path(tempfile.mkdtemp(prefix="engine-workers-"))
    previous = os.environ.get(WORKERS_DIR_ENV)
    os.environ[WORKERS_DIR_ENV] = str(directory)
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop(WORKERS_DIR_ENV, None)
        else:
            os.environ[WORKERS_DIR_ENV] = previous
        shutil.rmtree(directory, ignore_errors=True)


def build_app(settings: ServerSettings | None = None) -> Starlette:
    """The app for one worker: settings from env, engine from the config dir, watcher on."""
    settings = settings or load_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s"
    )
    if settings.workers > 1:
        exit_with_parent()  # a SIGKILLed supervisor must not leave workers serving
    engine = for_workers(
        settings.config_dir,
        settings.workers,
        state_url=settings.state_url,
        ledger_url=settings.ledger_url,
    )
    watcher = ConfigWatcher(
        settings.config_dir, load_plan, engine.reload, settings.reload_interval_s
    )
    app = create_app(engine, settings, watcher, workers_dir(settings))
    settle_heap()
    return app


#: Container allocations (net) between young-generation collections; CPython's default is 700.
GC_YOUNG_THRESHOLD = 20_000


def settle_heap(young_threshold: int = GC_YOUNG_THRESHOLD) -> None:
    """Tune the cyclic GC for a long-running server, once its start-up objects exist.

    Measured under load (c=50, one worker, CPython 3.11) the collector took ~75 us of CPU
    per request, mostly in full collections that walked the ~80,000 objects imports, the
    plan and the clients leave behind: a 40-65 ms pause each, which *was* the p99 (~75 ms;
    ~32 ms after, ~4 us of GC per request). So: collect once,
    `gc.freeze()` what is left (start-up objects never become garbage; a full collection no
    longer walks them), and collect the young generation every 20,000 net allocations
    rather than 700, which keeps the count of collections, and of objects promoted to
    older generations, small. Refcounting still frees almost everything at once; only
    cyclic garbage waits a little longer. A plan replaced by a hot reload holds no cycles,
    so it is still freed (by refcounting) although it was frozen. The server process only:
    tests that build apps must not freeze their heap.
    """
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, young_threshold), middle, old)


def serve(settings: ServerSettings) -> None:
    """Run uvicorn until SIGTERM/SIGINT; blocks, and returns normally after a graceful stop.

    uvicorn re-raises the signal it caught once it has drained, restoring the previous
    handler first; a no-op SIGTERM handler installed here turns that into a clean exit 0.
    This is `uvicorn.run` spelled out, because the protocol's limits (server/guard.py) ride
    in a Config of our own, which uvicorn pickles into every worker.
    """
    import signal

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from engine.server.guard import GuardedConfig, GuardedHttpToolsProtocol, ProtocolLimits

    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    limits = ProtocolLimits(
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_headers,
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
    )
    config = GuardedConfig(
        "engine.server.runner:build_app",
        limits,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=False,  # the app writes its own JSON access log (server/access.py)
        timeout_graceful_shutdown=int(settings.drain_timeout_s) or None,
        timeout_keep_alive=settings.idle_timeout_s,  # a float works as well as an int
        server_header=False,
        http=GuardedHttpToolsProtocol,
        # A worker answers the supervisor's health pings only once it has unpickled this
        # Config, which imports the engine (seconds on a loaded machine); uvicorn's 5 s
        # default killed every worker of `--workers 2` there before it could start.
        timeout_worker_healthcheck=60,
    )
    server = uvicorn.Server(config)
    if config.workers > 1:
        with shared_workers_dir():
            Multiprocess(config, sockets=[config.bind_socket()]).run()
    else:
        server.run()
    if not server.started and config.workers == 1:
        raise SystemExit(3)  # uvicorn's STARTUP_FAILURE: the port was taken, the app failed
