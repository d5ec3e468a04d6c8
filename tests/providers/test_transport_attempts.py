"""Every POST that reaches the upstream is an attempt the runtime counted: the keep-alive
race (the upstream reads the request on a reused connection, then closes unanswered) is a
visible failed attempt followed by the runtime's own retry, never a hidden re-send."""

from __future__ import annotations

from typing import Any

import orjson

from engine import Engine

from .wire import Upstream, ok, serve

ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
)
HELLO = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 5}


async def _second_request_read_then_dropped(up: Upstream, reader: Any, writer: Any, n: int) -> None:
    """Connection 0 answers its first request and silently drops its second; later
    connections answer everything."""
    count = 0
    while await up.read_request(reader) is not None:
        count += 1
        if n == 0 and count == 2:
            return  # read, then closed without an answer
        writer.write(ok(ANSWER))
        await writer.drain()


async def test_posts_received_equal_attempts_recorded() -> None:
    async with serve(_second_request_read_then_dropped, host="127.0.0.1") as up:
        models = {
            "providers": {
                "oa": {"protocol": "openai", "base_url": up.url, "api_key": "sk-test-1234567"}
            },
            "models": {
                "oa/gpt-4o-mini": {
                    "context_window": 128000,
                    "input_price": 0.15,
                    "output_price": 0.6,
                }
            },
        }
        routes = {"main": {"candidates": ["oa/gpt-4o-mini"], "retries": {"max_retries": 2}}}
        eng = Engine.from_data(models, routes)
        try:
            first = await eng.arun(HELLO, policy="main")
            second = await eng.arun(HELLO, policy="main")
            requests = eng.stats()["providers"]["oa"]["requests"]
        finally:
            await eng.aclose()
    assert [a.outcome for a in first.attempts] == ["ok"]
    assert [a.outcome for a in second.attempts] == ["unavailable", "ok"]
    attempts = len(first.attempts) + len(second.attempts)
    assert len(up.requests) == attempts == requests == 3
