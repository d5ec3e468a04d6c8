"""The attempt observer: how tracing (or anything else) sees each try without the call path
knowing about it.

`Services.observer` is None unless something (the server's OpenTelemetry setup) installs
one, so an untraced engine pays one attribute check per try. When set, every admitted try
calls `started` before its request is sent (the observer may make the try's context, e.g.
the `traceparent` the transport sends) and `ended` exactly once with the try's ledger row
(which says how it went: outcome, tokens, cost, latency, fallback index).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from engine.endpoints import Endpoint
    from engine.runtime.call.walk import Candidate
    from engine.state.protocols import LedgerRow


class AttemptObserver(Protocol):
    def started(self, cand: Candidate, endpoint: Endpoint, retry: int) -> Any:
        """A try is about to be sent; returns a handle given back to `ended`."""
        ...

    def ended(self, handle: Any, row: LedgerRow) -> None:
        """The try closed (settled, failed or aborted), as recorded in `row`."""
        ...
