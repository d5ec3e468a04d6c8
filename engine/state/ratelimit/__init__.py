"""Client-side rate limiting per provider key: requests, input and output tokens per minute.

Why on the client: a 429 costs a round trip and often a Retry-After penalty, while the
engine already knows what it is about to send. So each attempt first takes a `Lease`:

    lease = limiter.try_acquire_nowait(provider, keys, est_in, est_out)  # room now?
    lease = lease or await limiter.acquire(provider, keys, est_in, est_out, max_wait_s)
    ... call the provider with lease.key ...
    await limiter.settle(lease, usage.input_tokens, usage.output_tokens)   # real usage
    await limiter.observe(provider, lease.key.id, response.rate_limit)     # what headers said

The in-process limiter is five mechanisms, one module each:

    window.py    the sliding 60 s window per key, in 0.1 s slices; settle corrects the
                 slice a lease was booked in (token-accurate: estimate before, real after)
    learned.py   limits from the plan and from headers (the tighter wins), remaining
                 figures until their reset, Retry-After blocks, a worker's share
    keys.py      which key of the pool takes a request: most headroom left, then fewest
                 in flight, then fewest in the window; when one could next
    queue.py     FIFO waiting per provider (no barging); the head naps until room may
                 appear and is woken by settle/release/observe
    limiter.py   InProcessRateLimiter: the protocol, composing the four

A waiter whose `max_wait_s` runs out gets `RateLimitedError` (with `retry_after`); it gets
it at once when the next free moment is past its deadline and no lease in flight could
free capacity sooner, since waiting could not help. A shared backend implements the same
protocol (engine.state.protocols.RateLimiter); see docs/state.md.
"""

from engine.state.ratelimit.limiter import InProcessRateLimiter
from engine.state.ratelimit.window import RESOLUTION_S, WINDOW_S

__all__ = ["RESOLUTION_S", "WINDOW_S", "InProcessRateLimiter"]
