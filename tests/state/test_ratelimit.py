"""InProcessRateLimiter: windows, token accuracy, key pooling, header learning, waiting, FIFO."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import RateLimitedError
from engine.messages import RateLimitInfo
from engine.plan.values import KeyPlan
from engine.secrets import Secret
from engine.state.ratelimit import RESOLUTION_S, InProcessRateLimiter
from engine.testing.clock import FakeClock

#: Usage leaves the window up to one time slice late; waits are exact to within one slice.
SLICE = RESOLUTION_S


def near(seconds: float) -> object:
    """Equal to `seconds` give or take one slice of the window."""
    return pytest.approx(seconds, abs=SLICE)


def key(
    name: str = "p#0",
    rpm: int | None = None,
    input_tpm: int | None = None,
    output_tpm: int | None = None,
) -> KeyPlan:
    """A key with these configured limits (its secret is never expected in any output)."""
    return KeyPlan(name, Secret(f"sk-secret-{name}"), rpm, input_tpm, output_tpm)


class ManualClock:
    """A clock whose sleeps only end when a test advances it: proves wake-ups by events."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_700_000_000.0 + self.now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sleepers.append((self.now + seconds, fut))
        await fut

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for due, fut in self.sleepers:
            if due <= self.now and not fut.done():
                fut.set_result(None)


async def test_requests_per_minute_window_slides(clock: FakeClock) -> None:
    """rpm=2 admits two requests, refuses a third, and frees a slot 60 s after the first."""
    rl = InProcessRateLimiter(clock)
    k = key(rpm=2)
    await rl.acquire("p", [k], 10, 10, 0)
    clock.advance(30)
    await rl.acquire("p", [k], 10, 10, 0)
    with pytest.raises(RateLimitedError):
        await rl.acquire("p", [k], 10, 10, 0)
    clock.advance(30 + SLICE)  # the first request leaves the window
    lease = await rl.acquire("p", [k], 10, 10, 0)
    assert lease.key.id == "p#0"
    with pytest.raises(RateLimitedError):
        await rl.acquire("p", [k], 10, 10, 0)


async def test_input_tokens_are_corrected_by_settle(clock: FakeClock) -> None:
    """An over-estimate of input tokens blocks until settle replaces it with real usage."""
    rl = InProcessRateLimiter(clock)
    k = key(input_tpm=1000)
    first = await rl.acquire("p", [k], 600, 0, 0)
    with pytest.raises(RateLimitedError):
        await rl.acquire("p", [k], 600, 0, 0)
    await rl.settle(first, 300, 0)
    await rl.acquire("p", [k], 600, 0, 0)
    assert (await rl.status("p"))["keys"]["p#0"]["input_tokens"] == {
        "limit": 1000,
        "remaining": 100,
        "used": 900,
    }


async def test_output_tokens_estimate_is_max_tokens_then_real(clock: FakeClock) -> None:
    """Output tokens are booked at the estimate and corrected down to what was generated."""
    rl = InProcessRateLimiter(clock)
    k = key(output_tpm=500)
    first = await rl.acquire("p", [k], 0, 400, 0)
    with pytest.raises(RateLimitedError):
        await rl.acquire("p", [k], 0, 400, 0)
    await rl.settle(first, 0, 50)
    await rl.acquire("p", [k], 0, 400, 0)


async def test_settle_can_also_correct_upwards(clock: FakeClock) -> None:
    """Real usage above the estimate is counted, so the window reflects what was sent."""
    rl = InProcessRateLimiter(clock)
    k = key(input_tpm=1000)
    lease = await rl.acquire("p", [k], 100, 0, 0)
    await rl.settle(lease, 950, 0)
    await rl.settle(lease, 10, 0)  # a second settle is ignored
    with pytest.raises(RateLimitedError):
        await rl.acquire("p", [k], 100, 0, 0)


async def test_request_larger_than_limit_waits_for_empty_window(clock: FakeClock) -> None:
    """A request bigger than the whole token limit is admitted only into an empty window."""
    rl = InProcessRateLimiter(clock)
    k = key(input_tpm=100)
    await rl.settle(await rl.acquire("p", [k], 10, 0, 0), 10, 0)
    lease = await rl.acquire("p", [k], 5000, 0, 120)
    assert lease.input_tokens == 5000
    assert len(clock.slept) == 1 and clock.slept[0] == near(60.0)


async def test_pool_picks_key_with_most_headroom(clock: FakeClock) -> None:
    """Of two keys, the one with more of its token limit left gets the request."""
    rl = InProcessRateLimiter(clock)
    a, b = key("p#a", input_tpm=1000), key("p#b", input_tpm=1000)
    first = await rl.acquire("p", [a, b], 800, 0, 0)
    second = await rl.acquire("p", [a, b], 100, 0, 0)
    assert {first.key.id, second.key.id} == {"p#a", "p#b"}
    third = await rl.acquire("p", [a, b], 100, 0, 0)
    assert third.key.id == second.key.id  # 800 used on the other one


async def test_pool_spreads_equal_keys_and_uses_them_all(clock: FakeClock) -> None:
    """Keys with equal limits share the load, so the pool admits the sum of their limits."""
    rl = InProcessRateLimiter(clock)
    keys = [key("p#a", rpm=3), key("p#b", rpm=3)]
    ids = [(await rl.acquire("p", keys, 1, 1, 0)).key.id for _ in range(6)]
    assert ids.count("p#a") == 3 and ids.count("p#b") == 3
    with pytest.raises(RateLimitedError):
        await rl.acquire("p", keys, 1, 1, 0)


async def test_unlimited_keys_are_never_limited(clock: FakeClock) -> None:
    """Keys without configured limits or headers admit any number of requests."""
    rl = InProcessRateLimiter(clock)
    keys = [key("p#a"), key("p#b")]
    leases = [await rl.acquire("p", keys, 10_000, 10_000, 0) for _ in range(500)]
    assert {lease.key.id for lease in leases} == {"p#a", "p#b"}


async def test_provider_without_keys_gets_a_synthetic_key(clock: FakeClock) -> None:
    """A keyless provider (a local server) is still limited and listed under one key id."""
    rl = InProcessRateLimiter(clock)
    lease = await rl.acquire("ollama", [], 1, 1, 0)
    assert lease.key.id == "ollama#0" and lease.key.secret is None


async def test_learned_limit_from_headers(clock: FakeClock) -> None:
    """A limit_requests header turns an unlimited key into a limited one."""
    rl = InProcessRateLimiter(clock)
    k = key()
    lease = await rl.acquire("p", [k], 1, 1, 0)
    await rl.observe("p", "p#0", RateLimitInfo(limit_requests=2))
    await rl.settle(lease, 1, 1)
    await rl.acquire("p", [k], 1, 1, 0)
    with pytest.raises(RateLimitedError):
        await rl.acquire("p", [k], 1, 1, 0)
    assert (await rl.status("p"))["keys"]["p#0"]["requests"]["limit"] == 2


async def test_learned_limit_never_loosens_configured(clock: FakeClock) -> None:
    """The stricter of configured and learned limits applies."""
    rl = InProcessRateLimiter(clock)
    k = key(rpm=1)
    await rl.observe("p", "p#0", RateLimitInfo(limit_requests=1000))
    await rl.acquire("p", [k], 1, 1, 0)
    with pytest.raises(RateLimitedError):
        await rl.acquire("p", [k], 1, 1, 0)


async def test_remaining_header_waits_until_reset(clock: FakeClock) -> None:
    """remaining_requests=0 with a 5 s reset makes the next request wait exactly 5 s."""
    rl = InProcessRateLimiter(clock)
    k = key()
    await rl.acquire("p", [k], 1, 1, 0)
    await rl.observe("p", "p#0", RateLimitInfo(remaining_requests=0, reset_requests_s=5))
    lease = await rl.acquire("p", [k], 1, 1, 10)
    assert lease.key.id == "p#0"
    assert sum(clock.slept) == pytest.approx(5.0)


async def test_remaining_tokens_header_counts_down(clock: FakeClock) -> None:
    """A remaining_tokens hint is spent by later leases until its reset."""
    rl = InProcessRateLimiter(clock)
    k = key()
    await rl.observe("p", "p#0", RateLimitInfo(remaining_tokens=300, reset_tokens_s=20))
    await rl.acquire("p", [k], 100, 100, 0)
    with pytest.raises(RateLimitedError):
        await rl.acquire("p", [k], 100, 100, 0)
    assert (await rl.status("p"))["keys"]["p#0"]["tokens"]["remaining"] == 100


async def test_retry_after_blocks_the_key_and_the_pool_uses_another(clock: FakeClock) -> None:
    """A retry-after on one key sends traffic to the other key; alone, it makes callers wait."""
    rl = InProcessRateLimiter(clock)
    a, b = key("p#a"), key("p#b")
    await rl.observe("p", "p#a", RateLimitInfo(retry_after_s=3))
    ids = {(await rl.acquire("p", [a, b], 1, 1, 0)).key.id for _ in range(5)}
    assert ids == {"p#b"}
    assert (await rl.status("p"))["keys"]["p#a"]["blocked_for_s"] == pytest.approx(3)
    await rl.acquire("p", [a], 1, 1, 10)
    assert sum(clock.slept) == pytest.approx(3.0)


async def test_waits_for_the_window_then_succeeds(clock: FakeClock) -> None:
    """An exhausted key makes the caller sleep (on the clock) until the window frees a slot."""
    rl = InProcessRateLimiter(clock)
    k = key(rpm=1)
    await rl.settle(await rl.acquire("p", [k], 1, 1, 0), 1, 1)
    clock.advance(20)
    await rl.acquire("p", [k], 1, 1, 60)
    assert sum(clock.slept) == near(40.0)


async def test_waits_up_to_max_wait_then_fails(clock: FakeClock) -> None:
    """With a lease still in flight, the caller waits its whole max_wait, then gets a 429."""
    rl = InProcessRateLimiter(clock)
    k = key(rpm=1)
    await rl.acquire("p", [k], 1, 1, 0)  # in flight: its settle could free room
    start = clock.monotonic()
    with pytest.raises(RateLimitedError) as err:
        await rl.acquire("p", [k], 1, 1, 2.0)
    assert clock.monotonic() - start == pytest.approx(2.0)
    assert err.value.retry_after == near(58.0)
    assert err.value.provider == "p" and "p" in str(err.value)


async def test_fails_at_once_when_waiting_cannot_help(clock: FakeClock) -> None:
    """Nothing in flight and the window frees after the deadline: fail without sleeping."""
    rl = InProcessRateLimiter(clock)
    k = key(rpm=1)
    await rl.settle(await rl.acquire("p", [k], 1, 1, 0), 1, 1)
    with pytest.raises(RateLimitedError) as err:
        await rl.acquire("p", [k], 1, 1, 2.0)
    assert clock.slept == []
    assert err.value.retry_after == near(60.0)


async def test_settle_wakes_a_waiter_before_its_sleep_ends() -> None:
    """A waiter blocked on tokens gets its lease as soon as a settle frees them."""
    clock = ManualClock()
    rl = InProcessRateLimiter(clock)
    k = key(input_tpm=1000)
    first = await rl.acquire("p", [k], 900, 0, 0)
    waiter = asyncio.create_task(rl.acquire("p", [k], 500, 0, 30))
    await asyncio.sleep(0.01)
    assert not waiter.done() and (await rl.status("p"))["queued"] == 1
    await rl.settle(first, 200, 0)
    lease = await asyncio.wait_for(waiter, 1.0)
    assert lease.input_tokens == 500 and clock.now == 0.0


async def test_waiters_are_served_in_arrival_order(clock: FakeClock) -> None:
    """Queued callers get leases first come, first served; newcomers do not barge."""
    rl = InProcessRateLimiter(clock)
    k = key(rpm=1)
    await rl.acquire("p", [k], 1, 1, 0)
    order: list[str] = []

    async def caller(name: str) -> None:
        await rl.acquire("p", [k], 1, 1, 1000)
        order.append(name)

    tasks = [asyncio.create_task(caller(n)) for n in "ABC"]
    await asyncio.sleep(0)
    assert (await rl.status("p"))["queued"] == 3
    tasks.append(asyncio.create_task(caller("D")))
    await asyncio.gather(*tasks)
    assert order == ["A", "B", "C", "D"]
    assert (await rl.status("p"))["queued"] == 0


async def test_short_waiter_behind_long_one_fails_at_its_own_deadline() -> None:
    """A queued caller with a shorter max_wait fails when its time is up, the head still waits."""
    clock = ManualClock()
    rl = InProcessRateLimiter(clock)
    k = key(rpm=1)
    await rl.acquire("p", [k], 1, 1, 0)
    head = asyncio.create_task(rl.acquire("p", [k], 1, 1, 100))
    await asyncio.sleep(0.01)
    short = asyncio.create_task(rl.acquire("p", [k], 1, 1, 10))
    await asyncio.sleep(0.01)
    clock.advance(10)
    with pytest.raises(RateLimitedError, match=r"waited 10\.00s of 10\.00s"):
        await asyncio.wait_for(short, 1.0)
    assert not head.done()
    clock.advance(50 + SLICE)
    assert (await asyncio.wait_for(head, 1.0)).key.id == "p#0"


async def test_cancelled_waiter_leaves_the_queue() -> None:
    """Cancelling a queued acquire removes it, and the caller behind it moves up."""
    clock = ManualClock()
    rl = InProcessRateLimiter(clock)
    k = key(rpm=1)
    await rl.acquire("p", [k], 1, 1, 0)
    first = asyncio.create_task(rl.acquire("p", [k], 1, 1, 100))
    second = asyncio.create_task(rl.acquire("p", [k], 1, 1, 100))
    await asyncio.sleep(0.01)
    assert (await rl.status("p"))["queued"] == 2
    first.cancel()
    await asyncio.sleep(0.01)
    assert (await rl.status("p"))["queued"] == 1
    clock.advance(60 + SLICE)
    assert (await asyncio.wait_for(second, 1.0)).key.id == "p#0"


async def test_release_refunds_an_unsent_request(clock: FakeClock) -> None:
    """A released lease gives back its request and tokens; releasing twice changes nothing."""
    rl = InProcessRateLimiter(clock)
    k = key(rpm=1, input_tpm=100)
    lease = await rl.acquire("p", [k], 100, 0, 0)
    await rl.release(lease)
    await rl.release(lease)
    await rl.acquire("p", [k], 100, 0, 0)
    status = (await rl.status("p"))["keys"]["p#0"]
    assert status["requests"]["used"] == 1 and status["in_flight"] == 1


async def test_status_names_keys_by_id_never_by_secret(clock: FakeClock) -> None:
    """status lists limit/remaining per key id and never contains a key."""
    rl = InProcessRateLimiter(clock)
    keys = [key("p#a", rpm=10), key("p#b", rpm=20, output_tpm=1000)]
    rl.register("p", keys)
    await rl.acquire("p", keys, 100, 5, 0)
    status = await rl.status("p")
    assert set(status["keys"]) == {"p#a", "p#b"}
    assert status["keys"]["p#b"]["requests"] == {"limit": 20, "remaining": 19, "used": 1}
    assert status["keys"]["p#a"]["requests"]["remaining"] == 10
    assert status["keys"]["p#a"]["output_tokens"]["limit"] is None
    assert "sk-secret" not in repr(status)
    assert await rl.status("unknown") == {"provider": "unknown", "queued": 0, "keys": {}}


async def test_error_message_never_contains_a_key(clock: FakeClock) -> None:
    """The rate-limit error names the provider, never the key."""
    rl = InProcessRateLimiter(clock)
    k = key(rpm=1)
    await rl.acquire("p", [k], 1, 1, 0)
    with pytest.raises(RateLimitedError) as err:
        await rl.acquire("p", [k], 1, 1, 0)
    assert "sk-secret" not in str(err.value) and "sk-secret" not in repr(err.value)


async def test_reloaded_key_limits_apply(clock: FakeClock) -> None:
    """A new KeyPlan for the same key id (plan reload) replaces the old limits."""
    rl = InProcessRateLimiter(clock)
    await rl.acquire("p", [key(rpm=1)], 1, 1, 0)
    await rl.acquire("p", [key(rpm=5)], 1, 1, 0)
    assert (await rl.status("p"))["keys"]["p#0"]["requests"] == {
        "limit": 5,
        "remaining": 3,
        "used": 2,
    }


_ops = st.lists(
    st.tuples(
        st.floats(0.0, 25.0, allow_nan=False),  # time passing before the request
        st.integers(0, 400),  # estimated input tokens
        st.integers(0, 300),  # estimated output tokens
        st.floats(0.0, 1.0, allow_nan=False),  # share of the estimate really used
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops=_ops)
def test_window_never_exceeds_limits_and_never_refuses_without_cause(
    ops: list[tuple[float, int, int, float]],
) -> None:
    """Over any 60 s, admitted usage stays within every limit; a refusal always had a reason."""
    clock = FakeClock()
    rl = InProcessRateLimiter(clock)
    k = KeyPlan("p#0", None, rpm=5, input_tpm=1000, output_tpm=600)
    taken: list[tuple[float, int, int]] = []  # (time, input, output) as settled

    def within(span: float) -> tuple[int, int, int]:
        now = clock.monotonic()
        recent = [t for t in taken if t[0] > now - span]
        return len(recent), sum(t[1] for t in recent), sum(t[2] for t in recent)

    async def scenario() -> None:
        for dt, tin, tout, share in ops:
            clock.advance(dt)
            try:
                lease = await rl.acquire("p", [k], tin, tout, 0)
            except RateLimitedError:
                n, used_in, used_out = within(60 + SLICE)
                assert n + 1 > 5 or used_in + tin > 1000 or used_out + tout > 600
                continue
            n, used_in, used_out = within(60)
            assert n + 1 <= 5 and used_in + tin <= 1000 and used_out + tout <= 600
            real_in, real_out = int(tin * share), int(tout * share)
            await rl.settle(lease, real_in, real_out)
            taken.append((clock.monotonic(), real_in, real_out))

    asyncio.run(scenario())


async def test_try_acquire_takes_room_now_or_nothing() -> None:
    """try_acquire: a lease when a key has room and nobody queues; else None, having
    booked nothing (the waiting is acquire's)."""
    clock = ManualClock()
    rl = InProcessRateLimiter(clock)
    k = key(input_tpm=1000)
    first = rl.try_acquire_nowait("p", [k], 900, 0)
    assert first is not None and first.key is k and first.input_tokens == 900
    assert rl.try_acquire_nowait("p", [k], 500, 0) is None  # no room: nothing booked
    assert (await rl.status("p"))["keys"]["p#0"]["input_tokens"]["used"] == 900
    waiter = asyncio.create_task(rl.acquire("p", [k], 500, 0, 30))
    await asyncio.sleep(0.01)
    assert (await rl.status("p"))["queued"] == 1
    assert rl.try_acquire_nowait("p", [k], 10, 0) is None  # room, but someone queues first
    await rl.settle(first, 100, 0)
    assert (await waiter).input_tokens == 500
    assert rl.try_acquire_nowait("p", [k], -5, -5) is not None  # negative estimates count as 0


async def test_remaining_learned_on_a_configured_key_is_spent(clock: FakeClock) -> None:
    """A `remaining` learned for a dimension the plan already limits counts down with each
    request like any other: one left means one more request, not two."""
    rl = InProcessRateLimiter(clock)
    k = key(rpm=100)
    await rl.settle(await rl.acquire("p", [k], 1, 1, 0), 1, 1)
    await rl.observe("p", "p#0", RateLimitInfo(remaining_requests=1, reset_requests_s=60.0))
    await rl.acquire("p", [k], 1, 1, 0)
    with pytest.raises(RateLimitedError):
        await rl.acquire("p", [k], 1, 1, 0)


async def test_a_share_of_the_limits_for_one_of_several_workers(clock: FakeClock) -> None:
    """share=1/3 (one of three workers) admits a third of the configured and learned limits."""
    rl = InProcessRateLimiter(clock, share=1 / 3)
    k = key(rpm=9)
    for _ in range(3):
        await rl.acquire("p", [k], 10, 10, 0)
    with pytest.raises(RateLimitedError):
        await rl.acquire("p", [k], 10, 10, 0)
    assert (await rl.status("p"))["keys"]["p#0"]["requests"]["limit"] == 3
    other = key("q#0")
    await rl.observe("q", "q#0", RateLimitInfo(limit_requests=30, reset_requests_s=60))
    assert (await rl.status("q"))["keys"]["q#0"]["requests"]["limit"] == 10
    for _ in range(10):
        await rl.acquire("q", [other], 1, 1, 0)
    with pytest.raises(RateLimitedError):
        await rl.acquire("q", [other], 1, 1, 0)
    with pytest.raises(ValueError, match="share"):
        InProcessRateLimiter(clock, share=0)


async def test_a_day_long_retry_after_blocks_for_a_minute_then_probes(clock: FakeClock) -> None:
    """Retry-After: 86400 blocks the key for MAX_BLOCK_S, not a day; then one probe goes
    through (the others stay blocked), and an answer with headers clears the block."""
    from engine.state.ratelimit.learned import MAX_BLOCK_S

    rl = InProcessRateLimiter(clock)
    k = key("p#a")
    await rl.observe("p", "p#a", RateLimitInfo(retry_after_s=86400))
    assert (await rl.status("p"))["keys"]["p#a"]["blocked_for_s"] == pytest.approx(MAX_BLOCK_S)
    with pytest.raises(RateLimitedError):
        await rl.acquire("p", [k], 1, 1, 0)
    clock.advance(MAX_BLOCK_S)
    probe = await rl.acquire("p", [k], 1, 1, 0)  # the probe
    with pytest.raises(RateLimitedError):
        await rl.acquire("p", [k], 1, 1, 0)  # the others wait for its answer
    await rl.settle(probe, 1, 1)
    await rl.observe("p", "p#a", RateLimitInfo(limit_requests=4000, remaining_requests=3999))
    await rl.acquire("p", [k], 1, 1, 0)  # answered: the key is back
    assert (await rl.status("p"))["keys"]["p#a"]["blocked_for_s"] == 0


async def test_a_probe_that_is_refused_again_renews_the_capped_block(clock: FakeClock) -> None:
    """Another 429 with a long Retry-After on the probe blocks the key for the cap again."""
    from engine.state.ratelimit.learned import MAX_BLOCK_S

    rl = InProcessRateLimiter(clock)
    k = key("p#a")
    await rl.observe("p", "p#a", RateLimitInfo(retry_after_s=86400))
    clock.advance(MAX_BLOCK_S)
    probe = await rl.acquire("p", [k], 1, 1, 0)
    await rl.settle(probe, 1, 0)
    await rl.observe("p", "p#a", RateLimitInfo(retry_after_s=86400 - MAX_BLOCK_S))
    clock.advance(MAX_BLOCK_S - 1)
    with pytest.raises(RateLimitedError):
        await rl.acquire("p", [k], 1, 1, 0)
