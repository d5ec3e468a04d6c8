"""A worker process ends when the supervisor that started it dies.

`engine serve --workers N` runs uvicorn's supervisor, which spawns N workers sharing one
listening socket. When the supervisor is SIGKILLed (an OOM kill, `kill -9`, a crashed
container init) nobody tells the workers: they kept serving on the old socket, with the
old config, and a restart on the same port failed because they still held it.

Two mechanisms, since either alone has gaps: on Linux `prctl(PR_SET_PDEATHSIG, SIGTERM)`
asks the kernel to send SIGTERM the moment the parent goes; everywhere, a daemon thread
checks once a second whether the parent pid changed (a dead parent's children are
re-parented) and sends the same SIGTERM. SIGTERM is the graceful path: uvicorn stops
accepting, drains in-flight requests and streams, and the app flushes its ledger.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading

log = logging.getLogger("engine.server")

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def exit_with_parent(poll_s: float = 1.0) -> None:
    """From now on, SIGTERM this process when its parent process dies."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        _pdeathsig(signal.SIGTERM)
    if os.getppid() != parent or parent == 1:  # the parent died before we were watching
        os.kill(os.getpid(), signal.SIGTERM)
        return
    threading.Thread(target=_watch, args=(parent, poll_s), name="parent-watch", daemon=True).start()


def _pdeathsig(sig: int) -> None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    except OSError as exc:  # no libc to load: the watch thread still covers it
        log.warning("prctl unavailable: %s", exc)


def _watch(parent: int, poll_s: float) -> None:
    stop = threading.Event()
    while not stop.wait(poll_s):
        if os.getppid() != parent:
            log.warning("supervisor %d is gone; worker %d shutting down", parent, os.getpid())
            os.kill(os.getpid(), signal.SIGTERM)
            return
