"""LRUCache (TTL, LRU order, counters) and cache_key (canonical, stable, routing-aware)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import RequestError
from engine.state.cache import LRUCache, cache_key
from engine.testing.clock import FakeClock


async def test_get_returns_what_was_put(clock: FakeClock) -> None:
    """A stored value comes back and counts as a hit; an unknown key is a miss."""
    cache = LRUCache(10, clock)
    await cache.put("k", {"answer": 42}, ttl_s=60)
    assert await cache.get("k") == {"answer": 42}
    assert await cache.get("other") is None
    assert cache.stats()["hits"] == 1 and cache.stats()["misses"] == 1


async def test_entries_expire_after_their_own_ttl(clock: FakeClock) -> None:
    """Each entry lives for its own TTL; an expired one is a miss and is dropped."""
    cache = LRUCache(10, clock)
    await cache.put("short", 1, ttl_s=10)
    await cache.put("long", 2, ttl_s=100)
    clock.advance(9.5)
    assert await cache.get("short") == 1
    clock.advance(1)
    assert await cache.get("short") is None
    assert await cache.get("long") == 2
    stats = cache.stats()
    assert stats["expired"] == 1 and stats["size"] == 1 and stats["misses"] == 1


async def test_least_recently_used_entry_is_evicted(clock: FakeClock) -> None:
    """When full, the entry used longest ago goes; a get refreshes an entry's recency."""
    cache = LRUCache(2, clock)
    await cache.put("a", 1, 60)
    await cache.put("b", 2, 60)
    assert await cache.get("a") == 1  # b is now the least recently used
    await cache.put("c", 3, 60)
    assert await cache.get("b") is None
    assert await cache.get("a") == 1 and await cache.get("c") == 3
    assert cache.stats()["evictions"] == 1 and len(cache) == 2


async def test_expired_entry_at_lru_end_counts_as_expired_not_evicted(clock: FakeClock) -> None:
    """Making room by dropping a stale entry is an expiration, not an eviction."""
    cache = LRUCache(1, clock)
    await cache.put("a", 1, 5)
    clock.advance(6)
    await cache.put("b", 2, 5)
    assert cache.stats()["evictions"] == 0 and cache.stats()["expired"] == 1


async def test_put_again_replaces_value_and_ttl(clock: FakeClock) -> None:
    """Storing under an existing key replaces its value and restarts its TTL."""
    cache = LRUCache(2, clock)
    await cache.put("a", 1, 10)
    clock.advance(8)
    await cache.put("a", 2, 10)
    clock.advance(8)
    assert await cache.get("a") == 2 and len(cache) == 1


async def test_clear_drops_entries_but_keeps_counters(clock: FakeClock) -> None:
    """clear() forgets every entry; the hit/miss history stays."""
    cache = LRUCache(5, clock)
    await cache.put("a", 1, 60)
    await cache.get("a")
    await cache.clear()
    assert await cache.get("a") is None
    assert cache.stats()["hits"] == 1 and cache.stats()["size"] == 0


async def test_non_positive_ttl_stores_nothing(clock: FakeClock) -> None:
    """A TTL of zero means do not cache."""
    cache = LRUCache(5, clock)
    await cache.put("a", 1, 0)
    assert await cache.get("a") is None and len(cache) == 0


def test_capacity_must_be_positive(clock: FakeClock) -> None:
    """A cache that can hold nothing is a configuration mistake, said precisely."""
    with pytest.raises(ValueError, match="max_entries must be at least 1"):
        LRUCache(0, clock)


BASE: dict[str, Any] = {
    "messages": [{"role": "user", "content": "What is 2+2?"}],
    "temperature": 0.2,
    "max_tokens": 50,
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "add",
                "parameters": {"type": "object", "properties": {"a": {"type": "number"}}},
            },
        }
    ],
    "metadata": {"workspace": "acme", "task_type": "math", "tags": ["x", "y"]},
}


def with_(**changes: Any) -> dict[str, Any]:
    return {**BASE, **changes}


def test_key_is_a_sha256_hex_digest() -> None:
    """Keys are 64 lowercase hex characters, safe for any backend."""
    assert re.fullmatch(r"[0-9a-f]{64}", cache_key(BASE, "p"))


def test_key_ignores_dict_order_everywhere() -> None:
    """Reordered top-level, metadata and tool-schema keys give the same cache key."""
    reordered = {
        "metadata": {"tags": ["x", "y"], "task_type": "math", "workspace": "acme"},
        "tools": [
            {
                "function": {
                    "parameters": {"properties": {"a": {"type": "number"}}, "type": "object"},
                    "name": "add",
                },
                "type": "function",
            }
        ],
        "max_tokens": 50,
        "temperature": 0.2,
        "messages": [{"content": "What is 2+2?", "role": "user"}],
    }
    assert cache_key(reordered, "p") == cache_key(BASE, "p")


@pytest.mark.parametrize(
    "changes",
    [
        {"stream": True},
        {"stream": True, "stream_options": {"include_usage": True}},
        {"cache": False},
        {"fallbacks": ["openai/gpt-4o"]},
        {"budget_usd": 0.5},
        {"user": "end-user-17"},
        {"metadata": {**BASE["metadata"], "request_id": "r-1", "trace_id": "t-9"}},
        {"metadata": {**BASE["metadata"], "tags": ["y", "x", "x"]}},
        {"max_tokens": None, "max_completion_tokens": 50},
        {"temperature": 0.2, "top_p": None},
    ],
)
def test_fields_that_cannot_change_the_answer_are_ignored(changes: dict[str, Any]) -> None:
    """Streaming, the bypass flag, fallbacks, budget, end-user and per-call ids share a key."""
    assert cache_key(with_(**changes), "p") == cache_key(BASE, "p")


@pytest.mark.parametrize(
    "changes",
    [
        {"messages": [{"role": "user", "content": "What is 2+3?"}]},
        {"temperature": 0.3},
        {"max_tokens": 51},
        {"stop": ["\n"]},
        {"seed": 7},
        {"tools": None},
        {"tool_choice": "required"},
        {"response_format": {"type": "json_object"}},
        {"model": "openai/gpt-4o"},
        {"capabilities": ["vision"]},
        {"variables": {"name": "Ada"}},
        {"metadata": {**BASE["metadata"], "workspace": "other"}},
        {"metadata": {**BASE["metadata"], "task_type": "code"}},
        {"metadata": {**BASE["metadata"], "tags": ["x"]}},
    ],
)
def test_fields_that_change_the_answer_or_route_change_the_key(changes: dict[str, Any]) -> None:
    """Prompt, sampling, tools, format, model, template variables and routed metadata count."""
    assert cache_key(with_(**changes), "p") != cache_key(BASE, "p")


def test_policy_is_part_of_the_key() -> None:
    """The same body under another policy may be answered by another model."""
    assert cache_key(BASE, "cheap") != cache_key(BASE, "smart")


def test_stop_string_and_list_are_one_key() -> None:
    """stop: "x" and stop: ["x"] mean the same and share a key."""
    assert cache_key(with_(stop="END"), None) == cache_key(with_(stop=["END"]), None)


def test_invalid_request_is_a_request_error() -> None:
    """A request that cannot be parsed fails with RequestError, not a traceback."""
    with pytest.raises(RequestError):
        cache_key({"messages": []}, "p")


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=8).filter(lambda k: k not in {"request_id", "trace_id"}),
        st.one_of(st.integers(), st.text(max_size=5), st.booleans()),
        max_size=6,
    ),
    st.randoms(),
)
def test_key_is_stable_under_any_metadata_order(metadata: dict[str, Any], rnd: Any) -> None:
    """Any permutation of metadata entries yields the same key."""
    items = list(metadata.items())
    rnd.shuffle(items)
    shuffled = dict(items)
    assert cache_key(with_(metadata=shuffled), "p") == cache_key(with_(metadata=metadata), "p")
