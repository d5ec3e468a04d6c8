"""A 401 cools a key down and probes it again later; a key rotated in the environment is used
without a restart (issue 14). Driven through `Engine.arun` against the loopback OpenAI fake,
which answers 401 to every key but its own; time is a FakeClock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine import AuthenticationError, Engine
from engine.runtime.keys import COOLDOWN_S, MAX_COOLDOWN_S
from engine.testing.clock import FakeClock
from engine.testing.fakes import FakeOpenAI, Fault
from tests.acceptance.conftest import MOCK_MODELS, ask, write_config

OLD, NEW = "sk-old-rotation-0001", "sk-new-rotation-0002"


def config(tmp_path: Path, url: str, fallback: bool = True) -> Path:
    """One OpenAI-protocol provider whose key is `${OPENAI_API_KEY}`, then the mock."""
    models = MOCK_MODELS.replace(
        "models:\n",
        f"  openai:\n    protocol: openai\n    base_url: {url}\n"
        "    api_key: ${OPENAI_API_KEY}\n"
        "models:\n  openai/gpt-4o-mini:\n    capabilities: [chat]\n    context_window: 128000\n"
        "    input_price: 0.15\n    output_price: 0.6\n",
        1,
    )
    chain = "[openai/gpt-4o-mini, mock/fast]" if fallback else "[openai/gpt-4o-mini]"
    text = f"strategy: ordered\ncandidates: {chain}\nretries: {{max_retries: 0}}\n"
    return write_config(tmp_path / "cfg", models, {"default": text})


def keys_sent(up: FakeOpenAI) -> list[str]:
    return [r.headers["authorization"].removeprefix("Bearer ") for r in up.requests]


async def test_a_key_rotated_in_the_environment_is_used_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The upstream rejects the old key: the call re-reads OPENAI_API_KEY, retries with the
    new value in the same call and answers from openai; no key shows in logs or errors."""
    monkeypatch.setenv("OPENAI_API_KEY", OLD)
    async with FakeOpenAI(api_key=OLD) as up:
        eng = Engine.from_config(config(tmp_path, up.url, fallback=False), clock=FakeClock())
        assert (await eng.arun(ask())).model == "openai/gpt-4o-mini"
        up.api_key = NEW  # rotated at the provider...
        monkeypatch.setenv("OPENAI_API_KEY", NEW)  # ...and in the environment
        resp = await eng.arun(ask())
        assert resp.model == "openai/gpt-4o-mini"
        assert keys_sent(up) == [OLD, OLD, NEW]
        assert [a.outcome for a in resp.attempts] == ["authentication", "ok"]
        assert all(OLD not in str(a) and NEW not in str(a) for a in resp.attempts)
        await eng.arun(ask())
        assert keys_sent(up)[-1] == NEW  # the new value stays in use
        assert OLD not in caplog.text and NEW not in caplog.text
        await eng.aclose()


async def test_a_rejected_key_cools_down_then_one_probe_restores_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 401 leaves the key out for COOLDOWN_S (calls fail over to the mock); after it one
    request probes the key, and its success restores the key for every call."""
    monkeypatch.setenv("OPENAI_API_KEY", OLD)
    clock = FakeClock()
    async with FakeOpenAI(api_key=NEW) as up:
        eng = Engine.from_config(config(tmp_path, up.url), clock=clock)
        assert (await eng.arun(ask())).model == "mock/fast"  # 401, then the chain
        clock.advance(COOLDOWN_S - 1)
        assert (await eng.arun(ask())).model == "mock/fast"
        assert len(up.requests) == 1  # cooling down: no call with the rejected key
        up.api_key = OLD  # the provider accepts the key again (its bad minute is over)
        clock.advance(1)
        assert (await eng.arun(ask())).model == "openai/gpt-4o-mini"  # the probe
        assert (await eng.arun(ask())).model == "openai/gpt-4o-mini"  # restored
        assert len(up.requests) == 3
        await eng.aclose()


async def test_a_probe_rejected_again_doubles_the_cooldown_up_to_a_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each 401 answering a re-probe doubles the cooldown (60, 120, 240 ... capped at
    MAX_COOLDOWN_S); exactly one request probes after each cooldown."""
    monkeypatch.setenv("OPENAI_API_KEY", OLD)
    clock = FakeClock()
    async with FakeOpenAI(api_key=NEW) as up:
        eng = Engine.from_config(config(tmp_path, up.url), clock=clock)
        await eng.arun(ask())
        period, seen = COOLDOWN_S, []
        for probes in range(2, 10):  # the cap is reached after six doublings
            clock.advance(period - 1)
            await eng.arun(ask())
            assert len(up.requests) == probes - 1  # still cooling
            clock.advance(1)
            await eng.arun(ask())
            await eng.arun(ask())
            assert len(up.requests) == probes  # one probe, rejected again
            seen.append(period)
            period = min(period * 2, MAX_COOLDOWN_S)
        assert seen == [60, 120, 240, 480, 960, 1920, 3600, 3600]
        await eng.aclose()


async def test_only_one_request_probes_a_cooled_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent calls after the cooldown: one takes the key as its probe, the others keep
    off it (they fail over) until the probe answers."""
    monkeypatch.setenv("OPENAI_API_KEY", OLD)
    clock = FakeClock()
    async with FakeOpenAI(api_key=NEW) as up:
        eng = Engine.from_config(config(tmp_path, up.url), clock=clock)
        await eng.arun(ask())
        clock.advance(COOLDOWN_S)
        up.api_key = OLD
        up.default_fault = Fault(latency=0.05)
        answers = await asyncio.gather(*(eng.arun(ask()) for _ in range(4)))
        assert sorted(a.model for a in answers) == ["mock/fast"] * 3 + ["openai/gpt-4o-mini"]
        assert len(up.requests) == 2
        await eng.aclose()


async def test_a_key_rotated_while_cooling_is_picked_up_when_the_cooldown_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment changes after the 401: once the cooldown is over the new value is
    sent (read again), and the old one never again."""
    monkeypatch.setenv("OPENAI_API_KEY", OLD)
    clock = FakeClock()
    async with FakeOpenAI(api_key=NEW) as up:
        eng = Engine.from_config(config(tmp_path, up.url), clock=clock)
        assert (await eng.arun(ask())).model == "mock/fast"
        monkeypatch.setenv("OPENAI_API_KEY", NEW)
        assert (await eng.arun(ask())).model == "mock/fast"  # still cooling
        clock.advance(COOLDOWN_S)
        assert (await eng.arun(ask())).model == "openai/gpt-4o-mini"
        assert keys_sent(up) == [OLD, NEW]
        await eng.aclose()


async def test_an_unchanged_key_still_fails_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a new value and without a fallback the caller gets AuthenticationError,
    whose text does not carry the key."""
    monkeypatch.setenv("OPENAI_API_KEY", OLD)
    async with FakeOpenAI(api_key=NEW) as up:
        eng = Engine.from_config(config(tmp_path, up.url, fallback=False), clock=FakeClock())
        with pytest.raises(AuthenticationError) as info:
            await eng.arun(ask())
        assert OLD not in str(info.value) and NEW not in str(info.value)
        await eng.aclose()
