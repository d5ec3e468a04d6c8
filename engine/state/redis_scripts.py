"""Lua scripts on the hot path: one pipelined connection instead of redis-py's client.

Every engine call with Redis state runs two to four short scripts (a rate-limit lease, a
budget hold, their settlements). Through redis-py's asyncio client one script costs about
130-250 us of this process's CPU (its pool, its connection's bookkeeping, its command
dispatch), several times the engine's own work per call, and two of them sit before the
request goes out. `ScriptConnection` sends the same EVALSHA over one TCP connection that
every coroutine of the event loop shares: commands are written as they come, answers are
matched in order (Redis answers a connection's commands in the order it read them), so
calls in flight at once share round trips and no pool is needed. Encoding and parsing are
hiredis's (`pack_command`, `Reader`); only the framing of requests to answers is here.
Measured on this machine (bench/shared_state.py and the note in docs/state.md): about 5x
less CPU per script than redis-py's client.

What it does not do is delegated: `rediss://` (TLS), sentinel and cluster URLs, and a
client passed in by a caller (fakeredis in quick tests) run the same scripts through
redis-py (`RedisPyScripts`). Errors are redis-py's classes (`ResponseError`,
`ConnectionError`, `TimeoutError`), so the stores' fail-closed handling is the same for both.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, cast

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from engine.state import before_answer
from engine.state.redis_common import ANSWER_TIMEOUT_S, CONNECT_TIMEOUT_S

Arg = int | str | bytes | float


class Script(Protocol):
    """One registered Lua script."""

    def __call__(self, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Awaitable[Any]:
        """Run it and wait for the reply."""
        ...

    def written(self, keys: Sequence[Arg], args: Sequence[Arg]) -> asyncio.Future[Any] | None:
        """Run it without waiting: written to the one open connection before this returns
        (so every later command of this process runs after it), the future gets the reply.
        None when that cannot be promised (no connection open yet, a pooled client): then
        call the script and await it."""
        ...

    def held(self, keys: Sequence[Arg], args: Sequence[Arg]) -> asyncio.Future[Any] | None:
        """As `written`, but the write waits for the end of the loop's turn or for the next
        answer this process writes, whichever comes first (engine/state/before_answer.py),
        so a turn's commands share one write. None as for `written`."""
        ...


class Scripts(Protocol):
    """Registers Lua sources as `Script`s."""

    def register(self, source: str) -> Script: ...

    async def aclose(self) -> None: ...


class RedisPyScripts:
    """The scripts through a redis-py client (TLS, cluster, or a client given by a test)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client

    def register(self, source: str) -> Script:
        return _PyScript(self._client.register_script(source))

    async def aclose(self) -> None:
        """The client belongs to the store, which closes it."""


class _Wire(asyncio.Protocol):
    """One connection: replies handed to the waiting futures in the order sent.

    A command whose reply is awaited while no other awaited reply is outstanding is written
    at once; otherwise commands leave together in one write at the end of the loop's turn
    (a `call_soon`). Each write is a system call that also wakes the server (measured the
    largest part of this process's CPU per call with Redis state before commands were
    coalesced), so under load they share writes; but a lone command, such as a sequential
    call's budget hold, should not wait for the rest of its caller's turn: its caller went
    on for 50-100 us before the turn ended, while Redis could have answered (the hold's
    write left ~90 us after it was asked for).

    A reply settles its future directly (no task, no coroutine per command), and one timer
    per connection, armed while answers are awaited, enforces the answer timeout instead of
    one `asyncio.timeout` per command: answers come in order, so when the oldest is late
    every later one is too, and the connection is dropped (saves ~15 us of CPU per script
    in this process, bench/shared_state.py)."""

    def __init__(self, answer_timeout_s: float = ANSWER_TIMEOUT_S) -> None:
        self.reader = hiredis.Reader()
        self.waiting: deque[_Pending] = deque()
        self.transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._timeout_s = answer_timeout_s
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Handle | None = None  # the end-of-turn write, when queued
        self._awaited = 0  # replies a caller waits for, not yet read

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports (the server runs on uvloop) are not asyncio.Transport subclasses
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if not self.waiting:  # an answer nobody asked for: the stream is out of step
                self.fail(RedisConnectionError("unexpected reply from Redis"))
                return
            fut, _, script, keys, args, awaited = self.waiting.popleft()
            self._awaited -= awaited
            if fut.done():
                continue
            if type(reply) is not hiredis.ReplyError:
                fut.set_result(reply)
            elif script is not None and str(reply).startswith("NOSCRIPT"):
                # EVAL also caches the script, so the next EVALSHA finds it.
                eval_ = ("EVAL", script.source, len(keys), *keys, *args)
                self.send(eval_, fut, now=not awaited)
            else:
                fut.set_exception(ResponseError(str(reply)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail_waiting(RedisConnectionError("Redis closed the connection"))

    def send(
        self,
        command: Sequence[Arg],
        fut: asyncio.Future[Any] | None = None,
        script: _Script | None = None,
        keys: Sequence[Arg] = (),
        args: Sequence[Arg] = (),
        now: bool = False,
        held: bool = False,
    ) -> asyncio.Future[Any]:
        """Queue one command; its future gets the reply (a Redis error reply raised as
        ResponseError; a script's NOSCRIPT is answered by sending it again with EVAL).
        `now` writes it (and whatever is queued) at once, `held` at the end of the turn or
        before this process's next answer (before_answer): both are commands nobody
        awaits (the caller keeps the future only to learn of a failure)."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        if fut is None:
            fut = loop.create_future()
        deadline = loop.time() + self._timeout_s
        awaited = not (now or held)
        self.waiting.append((fut, deadline, script, keys, args, awaited))
        self._awaited += awaited
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._watch)
        self._out.append(hiredis.pack_command(tuple(command)))  # type: ignore[arg-type]  # its stub types a 1-tuple
        if now or (awaited and self._flushing is None and self._awaited == 1):
            self.flush()  # nothing to share a write with: Redis works while the caller does
        elif self._flushing is None:
            self._flushing = loop.call_soon(self.flush)
        if held:
            before_answer.hold(self, self.flush)
        return fut

    def flush(self) -> None:
        """Write what is queued (at the end of the loop's turn, or at once for `written`:
        then the turn's flush is dropped, so what the next turn sends leaves together)."""
        if self._flushing is not None:
            self._flushing.cancel()
            self._flushing = None
        out, self._out = self._out, []
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    def _watch(self) -> None:
        """The answer timeout: the oldest command unanswered past its deadline drops the
        connection (every later answer is behind it); otherwise look again at its deadline."""
        self._timer = None
        if not self.waiting:
            return
        loop = asyncio.get_running_loop()
        deadline = self.waiting[0][1]
        if deadline <= loop.time():
            self.fail(RedisTimeoutError("Redis did not answer in time"))
        else:
            self._timer = loop.call_at(deadline, self._watch)

    def fail(self, exc: Exception) -> None:
        """Drop the connection: once one answer is missed, every later one is misaligned."""
        self._out.clear()
        if self._flushing is not None:
            self._flushing.cancel()
            self._flushing = None
        if self.transport is not None:
            self.transport.abort()
            self.transport = None
        self._fail_waiting(exc)

    def _fail_waiting(self, exc: Exception) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._awaited = 0
        while self.waiting:
            fut = self.waiting.popleft()[0]
            if not fut.done():
                fut.set_exception(exc)


#: A command awaiting its reply: the future, its deadline, for a script what NOSCRIPT needs
#: to send it again (the script, its keys and arguments), and whether a caller awaits it.
_Pending = tuple[asyncio.Future[Any], float, "_Script | None", Sequence[Arg], Sequence[Arg], bool]


class ScriptConnection:
    """`Scripts` over one pipelined connection to a plain `redis://` server."""

    def __init__(self, url: str, *, answer_timeout_s: float = ANSWER_TIMEOUT_S) -> None:
        options = parse_url(url)
        self._host = str(options.get("host", "localhost"))
        self._port = int(options.get("port", 6379))
        self._db = int(options.get("db", 0))
        self._username: str | None = options.get("username")
        self._password: str | None = options.get("password")
        self._timeout_s = answer_timeout_s
        self._wire: _Wire | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Future[_Wire] | None = None
        self._scripts: list[_Script] = []

    def __repr__(self) -> str:  # never the URL or the password
        return f"ScriptConnection({self._host}:{self._port}/{self._db})"

    def register(self, source: str) -> Script:
        script = _Script(self, source)
        self._scripts.append(script)
        return script

    def open_wire(self) -> _Wire | None:
        """The connection when it is open on the running loop (no await), else None."""
        wire = self._wire
        live = wire is not None and wire.transport is not None
        return wire if live and self._loop is asyncio.get_running_loop() else None

    async def connected(self) -> _Wire:
        """The open connection, opened (once, for every caller waiting) if need be."""
        loop = asyncio.get_running_loop()
        wire = self._wire
        if wire is not None and wire.transport is not None and self._loop is loop:
            return wire
        if self._connecting is None or self._loop is not loop:
            self._loop = loop
            self._connecting = loop.create_future()
            connecting = self._connecting
            try:
                self._wire = await self._open(loop)
                connecting.set_result(self._wire)
            except BaseException as exc:
                connecting.set_exception(exc)
                connecting.exception()  # retrieved: the waiters below see it too
                raise
            finally:
                self._connecting = None
            return self._wire
        return await asyncio.shield(self._connecting)

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Wire:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                _, wire = await loop.create_connection(
                    lambda: _Wire(self._timeout_s), self._host, self._port
                )
                handshake = []
                if self._password is not None:
                    auth = (self._username, self._password) if self._username else (self._password,)
                    handshake.append(wire.send(("AUTH", *auth)))
                if self._db:
                    handshake.append(wire.send(("SELECT", self._db)))
                # Loaded up front, so a script is not answered NOSCRIPT (and sent again,
                # behind commands issued after it) on a new connection; refusals ignored.
                loads = [wire.send(("SCRIPT", "LOAD", s.source)) for s in self._scripts]
                replies = await asyncio.gather(*handshake, *loads, return_exceptions=True)
                for i, reply in enumerate(replies):
                    if isinstance(reply, ResponseError) and i < len(handshake):
                        wire.fail(RedisConnectionError("Redis refused the connection"))
                        raise RedisConnectionError(f"Redis refused the connection: {reply}")
                    if isinstance(reply, BaseException) and not isinstance(reply, ResponseError):
                        raise reply
                return wire
        except TimeoutError:
            raise RedisTimeoutError("timed out connecting to Redis") from None
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to Redis ({type(exc).__name__})") from None

    async def aclose(self) -> None:
        if self._wire is not None:
            self._wire.fail(RedisConnectionError("closed"))
            self._wire = None


class _PyScript:
    """A redis-py script as a `Script`."""

    def __init__(self, script: Callable[..., Awaitable[Any]]) -> None:
        self._script = script

    def __call__(self, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Awaitable[Any]:
        """Started at once (a task), as the pipelined connection's scripts are sent at once."""
        return asyncio.ensure_future(self._script(keys=keys, args=args))

    def written(self, keys: Sequence[Arg], args: Sequence[Arg]) -> asyncio.Future[Any] | None:
        """Never: a pooled client's commands may run in any order."""
        return None

    def held(self, keys: Sequence[Arg], args: Sequence[Arg]) -> asyncio.Future[Any] | None:
        return None


class _Script:
    """One registered script on the pipelined connection."""

    def __init__(self, conn: ScriptConnection, source: str) -> None:
        self._conn, self.source = conn, source
        self._sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Awaitable[Any]:
        """Sent at once when the connection is open (so anything this process sends later
        is run after it); the returned future gets the reply."""
        wire = self._conn.open_wire()
        if wire is None:
            return asyncio.ensure_future(self._connect_and_call(keys, args))
        return wire.send(("EVALSHA", self._sha, len(keys), *keys, *args), None, self, keys, args)

    def written(self, keys: Sequence[Arg], args: Sequence[Arg]) -> asyncio.Future[Any] | None:
        return self._unawaited(keys, args, now=True)  # with what is queued

    def held(self, keys: Sequence[Arg], args: Sequence[Arg]) -> asyncio.Future[Any] | None:
        return self._unawaited(keys, args, held=True)

    def _unawaited(
        self, keys: Sequence[Arg], args: Sequence[Arg], *, now: bool = False, held: bool = False
    ) -> asyncio.Future[Any] | None:
        wire = self._conn.open_wire()
        if wire is None:
            return None
        evalsha = ("EVALSHA", self._sha, len(keys), *keys, *args)
        return wire.send(evalsha, None, self, keys, args, now=now, held=held)

    async def _connect_and_call(self, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        wire = await self._conn.connected()
        evalsha = ("EVALSHA", self._sha, len(keys), *keys, *args)
        return await wire.send(evalsha, None, self, keys, args)


def scripts_for(url: str, client: aioredis.Redis, given: bool) -> Scripts:
    """The pipelined connection for a plain redis:// URL; redis-py's client otherwise (TLS,
    unix sockets, or a client a caller passed in)."""
    if given or not url.startswith("redis://"):
        return RedisPyScripts(client)
    return ScriptConnection(url)
