"""The W3C `traceparent` the current attempt sends upstream, if tracing is on.

Neutral ground between the runtime (whose attempt observer sets it while a try is in flight)
and the providers' transport (which adds it to the request's headers), so neither package
imports the other. A context variable, so concurrent requests on one loop never mix: each
task sees only its own attempt's value, and with tracing off it stays None (one lookup).
"""

from __future__ import annotations

from contextvars import ContextVar

#: `traceparent` header value as bytes (`00-<trace id>-<span id>-<flags>`), or None.
OUTGOING_TRACEPARENT: ContextVar[bytes | None] = ContextVar("outgoing_traceparent", default=None)
