"""The in-process response cache: exact match on a canonical request, LRU with per-entry TTL.

Two pieces, kept apart on purpose:

- `cache_key(request, policy)` turns a request into a stable sha256 hex digest of its
  canonical form, so two requests that must produce the same answer share one key however
  their JSON was ordered or spelled.
- `LRUCache` stores values under those keys. It implements `engine.state.protocols.
  ResponseCache`; a shared backend (Redis `SET key value PX ttl`) can replace it because the
  key is a plain string and the TTL is per entry.

The LRU is an `OrderedDict` (C-implemented, O(1) move-to-end and pop-oldest). A library
such as cachetools' `TLRUCache` would need a wrapper value per entry for a per-entry TTL
and a subclass for the eviction counter, which is more code than this.

`cache: false` on a request means "bypass"; the caller checks it and never calls `get`.
Like the rest of the in-process state, one cache serves one event loop; it never blocks
(its async methods never suspend: the protocol is async for networked caches).
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic_core import PydanticSerializationError

from engine.clock import Clock
from engine.errors import RequestError
from engine.messages import Request, parse_request

#: Request fields that never change the answer, so they stay out of the key:
#: `stream`/`stream_options` (a cached answer is replayed as a stream), `cache` (the bypass
#: flag itself), `fallbacks` (only used when the first choice fails), `budget_usd` (what the
#: caller has left shrinks on every call, and a hit costs nothing), `user` (the end-user id
#: OpenAI uses for abuse tracking; it does not steer the model).
#: `max_tokens`/`max_completion_tokens` are folded into one field (they mean the same).
_EXCLUDED_FIELDS: frozenset[str] = frozenset(
    {
        "stream",
        "stream_options",
        "cache",
        "fallbacks",
        "budget_usd",
        "user",
        "max_tokens",
        "max_completion_tokens",
    }
)

#: Metadata keys that identify one call rather than describe it; they would make every key
#: unique. Every other metadata key stays in: rules may route on it (task_type, tags,
#: workspace, user), so it can change which model answers, and keeping `workspace` in the
#: key also keeps one tenant's cached answers from serving another.
_PER_CALL_METADATA: frozenset[str] = frozenset(
    {"request_id", "trace_id", "span_id", "traceparent", "idempotency_key"}
)

#: Values whose order does not matter: they are compared as sets.
_SET_LIKE_METADATA: frozenset[str] = frozenset({"tags"})


def canonical_request(request: Request | dict[str, Any], policy: str | None) -> dict[str, Any]:
    """The part of a request that determines its answer, as plain JSON data."""
    req = parse_request(request)
    try:
        body = req.model_dump(mode="json", exclude_none=True, exclude=set(_EXCLUDED_FIELDS))
    except PydanticSerializationError as exc:
        raise RequestError(f"request is not JSON-serialisable, cannot be cached: {exc}") from None
    except (ValueError, RecursionError):  # nested past pydantic's serializer depth limit
        raise RequestError("request JSON is nested too deeply to be cached") from None
    body["max_tokens"] = req.output_limit
    body["capabilities"] = sorted(set(req.capabilities))
    body["metadata"] = _canonical_metadata(body.get("metadata", {}))
    body["policy"] = policy
    return body


def _canonical_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in metadata.items():
        if name in _PER_CALL_METADATA:
            continue
        if name in _SET_LIKE_METADATA and isinstance(value, list):
            value = sorted({json.dumps(v, sort_keys=True) for v in value})
            value = [json.loads(v) for v in value]
        out[name] = value
    return out


def cache_key(request: Request | dict[str, Any], policy: str | None) -> str:
    """sha256 hex of the canonical request: equal for requests that must answer alike."""
    canonical = canonical_request(request, policy)
    try:
        blob = orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # integers beyond 64 bits: rare, so the slower stdlib takes them
        try:
            blob = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
        except (ValueError, RecursionError):
            raise RequestError("request JSON is nested too deeply to be cached") from None
    return hashlib.sha256(blob).hexdigest()


class LRUCache:
    """Bounded exact-match cache; the least recently used entry goes first when full.

    Expired entries are dropped lazily: when looked up (counted as `expired`, and as a
    miss) or when they reach the LRU end while making room (counted as `expired`, not as
    an eviction). Both are O(1); nothing ever scans the whole cache. Counters survive
    `clear()`; only the entries go.
    """

    __slots__ = ("_clock", "_data", "_evictions", "_expired", "_hits", "_misses", "max_entries")

    def __init__(self, max_entries: int, clock: Clock) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._hits = self._misses = self._evictions = self._expired = 0

    async def get(self, key: str) -> Any | None:
        """The stored value, or None when absent or expired."""
        entry = self._data.get(key)
        if entry is None:
            self._misses += 1
            return None
        expires_at, value = entry
        if self._clock.monotonic() >= expires_at:
            del self._data[key]
            self._expired += 1
            self._misses += 1
            return None
        self._data.move_to_end(key)
        self._hits += 1
        return value

    async def put(self, key: str, value: Any, ttl_s: float) -> None:
        """Store `value` for `ttl_s` seconds; a non-positive TTL stores nothing."""
        if ttl_s <= 0:
            return
        self._data[key] = (self._clock.monotonic() + ttl_s, value)
        self._data.move_to_end(key)
        if len(self._data) > self.max_entries:
            self._make_room()

    def _make_room(self) -> None:
        now = self._clock.monotonic()
        while len(self._data) > self.max_entries:
            _, (expires_at, _) = self._data.popitem(last=False)
            if now >= expires_at:
                self._expired += 1
            else:
                self._evictions += 1

    async def clear(self) -> None:
        """Forget every entry (counters are kept: they describe the cache's history)."""
        self._data.clear()

    def resize(self, max_entries: int) -> None:
        """Hold at most `max_entries` from now on (the oldest go at the next put)."""
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries

    def __len__(self) -> int:
        return len(self._data)

    def stats(self) -> Mapping[str, int]:
        """Hits, misses, evictions (LRU pushes), expirations, current size and capacity."""
        return {
            "hits": self._hits,
            "misses": self._misses,
            "evictions": self._evictions,
            "expired": self._expired,
            "size": len(self._data),
            "max_entries": self.max_entries,
        }
