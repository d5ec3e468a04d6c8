"""Per-client-key request limits in the server: rpm and max_concurrent, 429 with Retry-After.

The limits are the server's (engine/state/key_limits.py), so a stand-in engine serves:
what is pinned is who gets refused, with what status, headers and body, and that the body
names the key by its id, never by its text. The shared (Redis) form is in
test_key_replicas.py.
"""

from __future__ import annotations

import asyncio

import httpx

from engine.secrets import Secret
from engine.server.settings import ApiKey, ServerSettings
from tests.server.conftest import serving
from tests.server.standin import StandInEngine

SECRET = "sk-limited-secret-0123456789"
BODY = {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"authorization": f"Bearer {SECRET}"}


def _settings(**limits: int) -> ServerSettings:
    return ServerSettings(api_keys=(ApiKey(id="limited", secret=Secret(SECRET), **limits),))


async def test_rpm_refuses_the_request_past_the_limit() -> None:
    """rpm: 3 lets three requests through in a minute; the fourth is 429 key_rate_limited
    with Retry-After, naming the key id and never its text."""
    engine = StandInEngine()
    async with serving(engine, _settings(rpm=3)) as running, running.http() as http:
        answers = [
            await http.post("/v1/chat/completions", json=BODY, headers=AUTH) for _ in range(4)
        ]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    refused = answers[-1]
    error = refused.json()["error"]
    assert error["code"] == "key_rate_limited" and error["type"] == "rate_limit_error"
    assert "'limited'" in error["message"] and "rpm" in error["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert SECRET not in refused.text
    assert len(engine.calls) == 3


async def test_max_concurrent_refuses_while_streams_are_open() -> None:
    """max_concurrent: 2 with two streams held open refuses a third request (429); once a
    stream ends its slot is free again."""
    engine = StandInEngine()
    engine.hold_stream = True
    stream_body = {**BODY, "stream": True}
    async with serving(engine, _settings(max_concurrent=2)) as running, running.http() as http:
        opened: list[httpx.Response] = []
        for _ in range(2):
            request = http.build_request(
                "POST", "/v1/chat/completions", json=stream_body, headers=AUTH
            )
            opened.append(await http.send(request, stream=True))
        third = await http.post("/v1/chat/completions", json=BODY, headers=AUTH)
        assert third.status_code == 429
        assert third.json()["error"]["code"] == "key_rate_limited"
        assert "max_concurrent" in third.json()["error"]["message"]
        await opened[0].aclose()
        for _ in range(200):  # bounded: the closed stream's slot comes back
            again = await http.post("/v1/chat/completions", json=BODY, headers=AUTH)
            if again.status_code == 200:
                break
            await asyncio.sleep(0.02)
        assert again.status_code == 200
        await opened[1].aclose()


async def test_a_key_without_limits_is_never_counted() -> None:
    """A key with no rpm / tpm / max_concurrent books nothing and is never refused."""
    async with serving(StandInEngine(), _settings()) as running, running.http() as http:
        answers = [
            await http.post("/v1/chat/completions", json=BODY, headers=AUTH) for _ in range(20)
        ]
    assert {a.status_code for a in answers} == {200}


async def test_tpm_books_the_estimate_then_the_real_usage() -> None:
    """tpm: 60 with max_tokens 40: each request books its input estimate plus max_tokens
    (49) while in flight and its real usage (5) after, so three pass one after another and
    the fourth would pass the limit: 429 naming tpm."""
    engine = StandInEngine()
    ask = {**BODY, "max_tokens": 40}
    async with serving(engine, _settings(tpm=60)) as running, running.http() as http:
        answers = [
            await http.post("/v1/chat/completions", json=ask, headers=AUTH) for _ in range(4)
        ]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert "tpm" in answers[-1].json()["error"]["message"]


def test_workers_without_a_shared_store_split_each_limit() -> None:
    """Without a state URL, each of N workers enforces its 1/N share of a key's limits
    (rounded up), as provider limits are split."""
    from engine.clock import SystemClock
    from engine.server.auth import Authenticator
    from engine.state.key_limits import InProcessKeyLimiter, KeyLimits

    auth = Authenticator((), InProcessKeyLimiter(SystemClock()), share=3)
    assert auth._shared(KeyLimits(rpm=10, tpm=None, max_concurrent=1)) == KeyLimits(4, None, 1)
