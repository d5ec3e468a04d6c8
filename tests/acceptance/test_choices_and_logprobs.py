"""`n` > 1 and `logprobs` are served (issue 11): passed to providers that speak them natively
(the OpenAI fake), carried back in the response and in streams, and every choice is billed
and reserved for. Providers without `n` (Anthropic) answer one choice, named in the
x-engine-dropped header (tests/judges/test_openai_sdk.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine import Engine
from engine.messages import Blob, Choice, Usage
from engine.result import Response
from engine.state.budget import InProcessBudgetStore
from engine.state.codec import DataclassCodec
from engine.testing.clock import FakeClock
from engine.testing.fakes import FakeOpenAI
from engine.testing.recording import RecordingBudgetStore
from tests.acceptance.conftest import MOCK_MODELS, ask, write_config

TEXT = "gpt-4o-mini heard: hello there"


def config(tmp_path: Path, url: str, budget: str = "") -> Path:
    models = MOCK_MODELS.replace(
        "models:\n",
        f"  openai:\n    protocol: openai\n    base_url: {url}\n    api_key: sk-choices-0001\n"
        "models:\n  openai/gpt-4o-mini:\n    capabilities: [chat, streaming]\n"
        "    context_window: 128000\n    max_output: 16000\n"
        "    input_price: 0.15\n    output_price: 0.6\n",
        1,
    )
    text = f"strategy: ordered\ncandidates: [openai/gpt-4o-mini]\n{budget}"
    return write_config(tmp_path / "cfg", models, {"default": text})


def joined(logprobs: Any) -> str:
    return "".join(t["token"] for t in logprobs["content"])


async def test_logprobs_come_back_in_openai_shape(tmp_path: Path) -> None:
    """logprobs + top_logprobs reach the upstream; each token's logprob, bytes and its
    top_logprobs come back on the response and in to_openai()."""
    async with FakeOpenAI() as up:
        eng = Engine.from_config(config(tmp_path, up.url))
        resp = await eng.arun(ask(logprobs=True, top_logprobs=2))
        assert up.last.body["logprobs"] is True and up.last.body["top_logprobs"] == 2
        assert resp.logprobs is not None and joined(resp.logprobs) == resp.content == TEXT
        first = resp.logprobs["content"][0]
        assert first["bytes"] == list(first["token"].encode()) and first["logprob"] < 0
        assert first["top_logprobs"][0]["token"] == first["token"]
        assert len(first["top_logprobs"]) == 2
        body = resp.to_openai()
        assert body["choices"][0]["logprobs"] == dict(resp.logprobs)
        plain = await eng.arun(ask())
        assert plain.logprobs is None and plain.to_openai()["choices"][0]["logprobs"] is None
        await eng.aclose()


async def test_streamed_logprobs_arrive_with_their_text(tmp_path: Path) -> None:
    """Each streamed piece carries the logprobs of its own tokens."""
    async with FakeOpenAI() as up:
        eng = Engine.from_config(config(tmp_path, up.url))
        events = [e async for e in eng.astream(ask(logprobs=True, top_logprobs=1, stream=True))]
        pieces = [e.chunk for e in events if e.chunk.content]
        assert all(p.logprobs is not None and joined(p.logprobs) == p.content for p in pieces)
        assert "".join(p.content for p in pieces) == TEXT
        wire = [e.to_openai()["choices"][0]["logprobs"] for e in events if e.chunk.content]
        assert all(w is not None and w["content"] for w in wire)
        await eng.aclose()


async def test_n_choices_are_served_and_billed(tmp_path: Path) -> None:
    """n=3 goes upstream once; the response has 3 choices; usage and cost count all three."""
    async with FakeOpenAI() as up:
        eng = Engine.from_config(config(tmp_path, up.url))
        one = await eng.arun(ask())
        three = await eng.arun(ask(n=3))
        assert up.last.body["n"] == 3 and len(up.requests) == 2
        body = three.to_openai()
        assert [c["index"] for c in body["choices"]] == [0, 1, 2]
        assert all(c["message"]["content"] == TEXT for c in body["choices"])
        assert three.usage.output_tokens == 3 * one.usage.output_tokens
        assert three.usage.input_tokens == one.usage.input_tokens
        assert three.cost_usd is not None and one.cost_usd is not None
        assert three.cost_usd > one.cost_usd
        await eng.aclose()


async def test_n_choices_stream_with_their_index(tmp_path: Path) -> None:
    """A streamed n=2 answer relays both choices, each piece with its index."""
    async with FakeOpenAI() as up:
        eng = Engine.from_config(config(tmp_path, up.url))
        events = [e async for e in eng.astream(ask(n=2, stream=True))]
        text: dict[int, str] = {}
        for e in events:
            text[e.chunk.index] = text.get(e.chunk.index, "") + e.chunk.content
        assert text == {0: TEXT, 1: TEXT}
        finishes = [e.to_openai()["choices"][0] for e in events if e.chunk.finish_reason]
        assert sorted(c["index"] for c in finishes) == [0, 1]
        await eng.aclose()


async def test_the_budget_reserves_every_choice(tmp_path: Path) -> None:
    """With a daily budget, n=4 reserves the prompt once and max_tokens four times."""
    clock = FakeClock()
    budget = RecordingBudgetStore(InProcessBudgetStore(clock))
    async with FakeOpenAI() as up:
        route = "budget: {daily_usd: 100}\n"
        eng = Engine.from_config(config(tmp_path, up.url, route), clock=clock, budget=budget)
        await eng.arun(ask(max_tokens=1000))
        await eng.arun(ask(max_tokens=1000, n=4))
        single, four = (c.args[1] for c in budget.called("reserve"))
        output_part = 1000 * 0.6 / 1e6
        assert abs((four - single) - 3 * output_part) < 1e-12
        await eng.aclose()


def test_a_cached_answer_keeps_its_choices_and_logprobs() -> None:
    """The cache's codec (shared backends store JSON) round-trips choices and logprobs."""
    lp = Blob({"content": [{"token": "hi", "logprob": -0.5, "bytes": [104, 105]}], "refusal": None})
    resp = Response(
        content="hi", tool_calls=(), finish_reason="stop", usage=Usage(3, 2), cost_usd=0.1,
        provider="openai", model="openai/gpt-4o-mini", latency_ms=1.0, logprobs=lp,
        choices=(Choice(1, "hi", (), "stop", lp),),
    )  # fmt: skip
    codec = DataclassCodec(Response)
    back = codec.decode(codec.encode(resp))
    assert back == resp and back.to_openai() == resp.to_openai()
    assert hash(back) == hash(resp)
