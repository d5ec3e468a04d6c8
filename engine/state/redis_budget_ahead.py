"""Budget room booked ahead: most calls hold their worst case in this process, not in Redis.

Why: with the Redis budget store every call ran two scripts, a hold before the request and
a close after it, and the hold's round trip sat on the call's path. Measured on this
2-core machine they were most of redis-server's CPU per call (docs/state.md). Here a
replica holds a block of room in Redis (a grant: one hold of the store, `want` nano-dollars)
and lends calls their worst case out of it with no round trip; a call's settle books only
its cost (the store's BOOK script, written at once and not awaited, so a replica killed
after answering has booked what it answered); the unused part of its worst case goes back
to the block. A block lends for LEND_S after it was asked for, then is given back (one
close) as soon as its last call is closed.

Why money stays exact: a block is granted by the same atomic check as a call's hold (room
left on the day, the month and the total, counting every hold of every replica), so what
it covers fits. What a block lends plus what its calls booked never exceeds the block; and
Redis counts the whole block as held until it is given back, on top of the costs its calls
booked. So what Redis counts is an upper bound of what may be spent, as with one hold per
call. A call's hold lasts the block's life: a block lends only while it has at least a
call's hold time (`hold_s`) left before it expires, so a replica killed mid-call gives its
block back by itself when the block expires, as it gave back its holds.

What it costs in exactness, stated: while a replica holds a block, the unused part counts
against the budget for every replica (and, from another process, in `spent`): a call may
be refused while room sits unused in another replica's block, for at most LEND_S plus the
time its last call takes. A block is at most a quarter of the room left, and only taken
while every limited period has AHEAD times the call's worst case left; nearer the limit
each call is held exactly (a block of its own worst case). `spent` read through the
replica that holds a block counts that block's calls as if each held its own worst case.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field

from engine.state.money import NANO, check_amount, nanos, nanos_up
from engine.state.protocols import Reservation, SpendSource
from engine.state.redis_budget import RedisBudgetStore, held_nanos

#: A block lends for this long after it was asked for, then goes back once its calls close.
LEND_S = 1.0
#: Book ahead only while every limited period has this many worst cases left.
AHEAD = 32
#: A line's first block in worst cases of the call asking; doubled while blocks run dry
#: before LEND_S ends, up to MOST worst cases; halved when a block ends mostly unused.
FIRST = 16
MOST = 1024

Limits = tuple[float | None, float | None, float | None]


@dataclass(eq=False, slots=True)
class _Block:
    """Room held in Redis (`hold`, `size` nanos) and lent to this process's calls."""

    hold: Reservation
    size: int
    until: float  # loop time after which it lends no more
    left: int  # not lent, not booked
    lent: int = 0  # worst cases of its open calls
    open: int = 0
    lends: bool = True
    once: bool = False  # held exactly for the call that asked (no room to book ahead)


@dataclass(eq=False, slots=True)
class _Line:
    """One workspace and its limits on one event loop: its block, the block being asked for."""

    workspace: str
    limits: Limits
    block: _Block | None = None
    asking: asyncio.Future[Reservation] | None = None
    asked: int = 0  # the worst case of the call that asked
    asked_at: float = 0.0
    want: int = 0
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


#: Blocks held in Redis by this process, per (store prefix, workspace): `spent` counts their
#: unused room out (every store of the process, as replicas built in one test process are).
_HELD: dict[tuple[str, str], set[_Block]] = {}


async def _ready(reservation: Reservation) -> Reservation:
    return reservation


class BookedAheadBudget:
    """`BudgetStore` on a RedisBudgetStore, lending calls room booked ahead (module doc)."""

    def __init__(self, store: RedisBudgetStore, *, lend_s: float = LEND_S) -> None:
        self._store = store
        self._lend_s = lend_s
        self._lines: dict[tuple[asyncio.AbstractEventLoop, str, Limits], _Line] = {}
        self._calls: dict[int, tuple[_Block, int]] = {}  # token -> its block, its worst case
        self._tokens = itertools.count(-1, -1)  # below the store's tokens, which are >= 0
        self._blocks: set[_Block] = set()  # held in Redis, not yet given back

    def __repr__(self) -> str:
        return f"BookedAheadBudget({self._store!r})"

    async def restore(self, source: SpendSource) -> None:
        await self._store.restore(source)

    def reserve(
        self,
        workspace: str,
        amount_usd: float,
        daily_usd: float | None,
        monthly_usd: float | None,
        total_usd: float | None = None,
    ) -> Awaitable[Reservation]:
        """Lend the worst case from this line's block at once; otherwise ask Redis for a
        block (sent before this returns; calls arriving meanwhile wait for the same one)."""
        check_amount(amount_usd)
        amount = nanos_up(amount_usd)
        loop = asyncio.get_running_loop()
        line = self._line(loop, workspace, (daily_usd, monthly_usd, total_usd))
        token = self._lend(loop, line, amount)
        if token is not None:
            return _ready(Reservation(workspace, amount / NANO, token))
        self._ask(loop, line, amount)
        return self._waited(loop, line, amount)

    def _line(self, loop: asyncio.AbstractEventLoop, workspace: str, limits: Limits) -> _Line:
        key = (loop, workspace, limits)
        line = self._lines.get(key)
        if line is None:
            if len(self._lines) > 4096:  # workspaces come and go: forget idle lines
                idle = [k for k, v in self._lines.items() if v.block is None and v.asking is None]
                for k in idle:
                    del self._lines[k]
            line = self._lines[key] = _Line(workspace, limits)
        return line

    def _lend(self, loop: asyncio.AbstractEventLoop, line: _Line, amount: int) -> int | None:
        block = line.block
        if block is None or block.left < amount or loop.time() >= block.until:
            return None
        block.left -= amount
        block.lent += amount
        block.open += 1
        token = next(self._tokens)
        self._calls[token] = (block, amount)
        if block.once:  # goes back as soon as its one call closes
            self._stop(line, block)
        return token

    def _ask(self, loop: asyncio.AbstractEventLoop, line: _Line, amount: int) -> None:
        """Ask for a new block, unless one is on its way; the current one lends no more."""
        if line.asking is not None and not line.asking.done():
            return
        block = line.block
        if block is not None:
            if block.left < amount and loop.time() < block.until:  # ran dry early: ask more
                line.want = min(2 * block.size, MOST * amount)
            self._stop(line, block)
        want = max(FIRST * amount, line.want)
        granting = self._store.grant(
            line.workspace, amount, line.limits,
            want=want, ahead=AHEAD, longer_ms=round(self._lend_s * 1000),
        )  # fmt: skip
        line.asked, line.asked_at = amount, loop.time()
        line.asking = asyncio.ensure_future(self._install(loop, line, granting))

    async def _install(
        self, loop: asyncio.AbstractEventLoop, line: _Line, granting: Awaitable[Reservation]
    ) -> Reservation:
        """Wait for the block Redis grants and make it the line's (before the ask counts as
        done, so no call asks again in between); its waiters lend from it next."""
        hold = await granting
        size = held_nanos(hold)
        until = line.asked_at + self._lend_s
        block = _Block(hold, size, until, left=size, once=size <= line.asked)
        line.block = block  # none lends meanwhile: _ask stopped it before asking
        self._blocks.add(block)
        _HELD.setdefault((self._store.prefix, line.workspace), set()).add(block)
        line.timer = loop.call_at(block.until, self._ended, line, block)
        return hold

    async def _waited(
        self, loop: asyncio.AbstractEventLoop, line: _Line, amount: int
    ) -> Reservation:
        """Wait for the block being asked for and lend from it; ask again when it cannot
        serve this call (others took it, or it was refused for a larger call)."""
        while True:
            asking = line.asking
            assert asking is not None  # _ask was called
            try:
                await asyncio.shield(asking)
            except Exception:
                if asking is line.asking and line.asked <= amount:
                    raise  # refused (or unreachable) for a call at least as large as this one
            token = self._lend(loop, line, amount)
            if token is not None:
                return Reservation(line.workspace, amount / NANO, token)
            self._ask(loop, line, amount)

    def _ended(self, line: _Line, block: _Block) -> None:
        """The block's lending time is over: given back once its calls are closed."""
        if block.lends and block.left > block.size // 2:  # mostly unused: ask less next
            line.want //= 2
        self._stop(line, block)

    def _stop(self, line: _Line, block: _Block) -> None:
        block.lends = False
        if line.block is block:
            line.block = None
            if line.timer is not None:
                line.timer.cancel()
                line.timer = None
        if block.open == 0:
            self._give_back(block)

    def _give_back(self, block: _Block) -> None:
        if block not in self._blocks:
            return
        self._blocks.discard(block)
        owner = (self._store.prefix, block.hold.workspace)
        held = _HELD.get(owner)
        if held is not None:
            held.discard(block)
            if not held:
                del _HELD[owner]
        self._store.give_back(block.hold)  # before any block this process asks for next

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Book the cost (before this process's next answer leaves: RedisBudgetStore.book);
        the rest of the worst case goes back to the block. A second settle or release of
        the same call does nothing."""
        call = self._calls.pop(reservation.token, None)
        if call is None:
            return
        self._store.book(reservation.workspace, actual_usd)
        self._closed(*call, spent=max(0, nanos(actual_usd)))

    async def release(self, reservation: Reservation) -> None:
        """The whole worst case goes back to the block; nothing is booked."""
        call = self._calls.pop(reservation.token, None)
        if call is not None:
            self._closed(*call, spent=0)

    def _closed(self, block: _Block, amount: int, *, spent: int) -> None:
        block.lent -= amount
        block.left += amount - spent
        block.open -= 1
        if not block.lends and block.open == 0:
            self._give_back(block)

    async def spent(self, workspace: str) -> Mapping[str, float]:
        """The store's figures, with this process's blocks counted as their calls' holds."""
        figures = dict(await self._store.spent(workspace))
        unused = sum(b.size - b.lent for b in _HELD.get((self._store.prefix, workspace), ()))
        return {period: usd - unused / NANO for period, usd in figures.items()}

    async def aclose(self) -> None:
        """Give every block back, then close the store."""
        for line in self._lines.values():
            if line.timer is not None:
                line.timer.cancel()
        for block in list(self._blocks):  # calls still open now are abandoned
            self._give_back(block)
        await self._store.aclose()  # after the blocks' closes land
