"""The official openai SDK -> our server -> the real Engine -> fake OpenAI upstreams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from engine import Engine
from engine.clock import SystemClock
from engine.compile import load_plan
from engine.server.reload import ConfigWatcher
from engine.server.settings import ServerSettings
from engine.state.budget import InProcessBudgetStore
from engine.state.ledger import NullLedger
from engine.testing.fakes import FakeOpenAI, Fault
from tests.server.conftest import Running, serving
from tests.server.realstack import write_config, write_route

MSG = [{"role": "user", "content": "What is the capital of France?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@dataclass
class Stack:
    running: Running
    primary: FakeOpenAI
    backup: FakeOpenAI
    config: Path
    watcher: ConfigWatcher


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with FakeOpenAI() as primary, FakeOpenAI() as backup:
        config = write_config(tmp_path, primary.url, backup.url)
        engine = Engine.from_config(config, ledger=NullLedger())
        watcher = ConfigWatcher(config, load_plan, engine.reload)
        async with serving(engine, ServerSettings(config_dir=config), watcher) as running:
            yield Stack(running, primary, backup, config, watcher)


async def test_chat_through_the_real_engine(stack: Stack) -> None:
    """A chat call is routed to the first candidate and its headers say so."""
    async with stack.running.client() as client:
        raw = await client.chat.completions.with_raw_response.create(model="chat", messages=MSG)
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert raw.headers["x-engine-provider"] == "primary"
    assert raw.headers["x-engine-model"] == "primary/gpt-4o-mini"
    assert float(raw.headers["x-engine-cost-usd"]) > 0
    assert len(stack.primary.requests) == 1 and stack.backup.requests == []
    assert stack.primary.last.body["model"] == "gpt-4o-mini"


async def test_failover_is_invisible_to_the_client(stack: Stack) -> None:
    """When the primary answers 503 the backup answers, and the headers count two attempts."""
    stack.primary.script([503])
    async with stack.running.client() as client:
        raw = await client.chat.completions.with_raw_response.create(model="chat", messages=MSG)
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-engine-provider"] == "backup"
    assert raw.headers["x-engine-attempts"] == "2"


async def test_stream_failover_before_first_chunk(stack: Stack) -> None:
    """A stream whose primary fails before any chunk is served by the backup, seamlessly."""
    stack.primary.script([Fault(status=500)])
    async with stack.running.client() as client:
        stream = await client.chat.completions.create(
            model="chat", messages=MSG, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert len(stack.backup.requests) == 1


async def test_stream_matches_non_stream_answer(stack: Stack) -> None:
    """Streamed deltas join to the same text the non-streaming call returns."""
    async with stack.running.client() as client:
        whole = await client.chat.completions.create(model="chat", messages=MSG)
        stream = await client.chat.completions.create(model="chat", messages=MSG, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == whole.choices[0].message.content


async def test_tools_through_the_real_engine(stack: Stack) -> None:
    """Offered tools reach the upstream and its tool call comes back, streamed or not."""
    async with stack.running.client() as client:
        completion = await client.chat.completions.create(model="chat", messages=MSG, tools=TOOLS)
        stream = await client.chat.completions.create(
            model="chat", messages=MSG, tools=TOOLS, stream=True
        )
        deltas = [
            tc async for c in stream if c.choices for tc in c.choices[0].delta.tool_calls or []
        ]
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"
    assert stack.primary.requests[0].body["tools"][0]["function"]["name"] == "get_weather"
    assert deltas[0].function.name == "get_weather"
    assert "".join(d.function.arguments or "" for d in deltas) == call.function.arguments


async def test_metadata_headers_drive_routing_rules(stack: Stack) -> None:
    """x-engine-task-type reaches the engine's features: a rule on it picks another policy."""
    (stack.config / "routes" / "backup_only.yaml").write_text(
        "strategy: ordered\ncandidates: [backup/gpt-4o-mini]\n"
    )
    (stack.config / "routes" / "triage.yaml").write_text(
        "strategy: ordered\ncandidates: [primary/gpt-4o-mini]\n"
        "rules:\n  - name: code\n    when: {feature: task_type, eq: code}\n"
        "    policy: backup_only\n"
    )
    assert await stack.watcher.check() is True
    async with stack.running.client() as client:
        plain = await client.chat.completions.with_raw_response.create(model="triage", messages=MSG)
        code = await client.chat.completions.with_raw_response.create(
            model="triage", messages=MSG, extra_headers={"x-engine-task-type": "code"}
        )
    assert plain.headers["x-engine-provider"] == "primary"
    assert code.headers["x-engine-provider"] == "backup"


async def test_model_pin_goes_to_that_provider(stack: Stack) -> None:
    """`model: provider/name` pins the call to that model."""
    async with stack.running.client() as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="backup/gpt-4o-mini", messages=MSG
        )
    assert raw.headers["x-engine-provider"] == "backup"


async def test_unknown_policy_is_not_found(stack: Stack) -> None:
    """An unknown policy name is the SDK's NotFoundError."""
    async with stack.running.client() as client:
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="no-such-policy", messages=MSG)


async def test_all_candidates_unavailable_is_503(stack: Stack) -> None:
    """When every candidate answers 503 the client gets 503 listing the attempts."""
    stack.primary.script([503])
    stack.backup.script([503])
    async with stack.running.client() as client:
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(model="chat", messages=MSG)
    assert info.value.status_code == 503
    assert info.value.response.headers["x-engine-attempts"] == "2"
    assert "primary" in info.value.message and "backup" in info.value.message
    assert "sk-primary" not in str(info.value.body)


async def test_all_candidates_rate_limited_is_429(stack: Stack) -> None:
    """When every candidate is rate limited the client gets RateLimitError."""
    stack.primary.script([429])
    stack.backup.script([429])
    async with stack.running.client() as client:
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="chat", messages=MSG)


async def test_upstream_rejecting_the_request_is_400(stack: Stack) -> None:
    """An upstream 400 (invalid request on every candidate) reaches the client as 400."""
    stack.primary.script([400])
    stack.backup.script([400])
    async with stack.running.client() as client:
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="chat", messages=MSG)


@pytest.mark.parametrize(
    ("fault", "sdk_error", "status"),
    [
        (Fault(stall=True), openai.InternalServerError, 504),
        (Fault(status=401), openai.InternalServerError, 502),
    ],
)
async def test_upstream_timeouts_and_bad_keys_map_to_gateway_errors(
    tmp_path: Path, fault: Fault, sdk_error: type[openai.APIStatusError], status: int
) -> None:
    """Every candidate timing out is 504; every upstream rejecting our key is 502, not 401."""
    async with FakeOpenAI() as primary, FakeOpenAI() as backup:
        config = write_config(tmp_path, primary.url, backup.url)
        models = (config / "models.yaml").read_text()
        (config / "models.yaml").write_text(
            models.replace("0000000}", "0000000, timeouts: {total_s: 0.2}}").replace(
                "00000000}", "00000000, timeouts: {total_s: 0.2}}"
            )
        )
        primary.script([fault])
        backup.script([fault])
        engine = Engine.from_config(config, ledger=NullLedger())
        async with serving(engine) as running, running.client() as client:
            with pytest.raises(sdk_error) as info:
                await client.chat.completions.create(model="chat", messages=MSG)
    assert info.value.status_code == status
    assert "sk-primary" not in str(info.value.body)


async def test_hot_reload_applies_good_and_keeps_old_on_broken(stack: Stack) -> None:
    """A new route file becomes servable; a broken one leaves the running config untouched."""
    write_route(stack.config, "fresh")
    assert await stack.watcher.check() is True
    (stack.config / "routes" / "chat.yaml").write_text("strategy: [not, a, strategy\n")
    assert await stack.watcher.check() is False
    async with stack.running.client() as client:
        fresh = await client.chat.completions.create(model="fresh", messages=MSG)
        chat = await client.chat.completions.create(model="chat", messages=MSG)
    assert fresh.choices[0].message.content and chat.choices[0].message.content
    assert any("chat.yaml" in d.format() for d in stack.watcher.last_diagnostics)


async def test_disconnect_mid_stream_releases_the_budget_reservation(tmp_path: Path) -> None:
    """A client that hangs up mid-stream cancels the upstream call; nothing stays reserved."""
    budget = InProcessBudgetStore(SystemClock())
    async with FakeOpenAI() as primary, FakeOpenAI() as backup:
        config = write_config(tmp_path, primary.url, backup.url)
        write_route(tmp_path, "metered", "budget: {daily_usd: 100}\n")
        engine = Engine.from_config(config, ledger=NullLedger(), budget=budget)
        primary.script([Fault(trickle=1.0)])  # the whole stream takes many seconds
        body = {"model": "metered", "messages": MSG, "stream": True}
        headers = {"x-engine-workspace": "team-x"}
        async with serving(engine) as running:
            async with (
                running.http() as http,
                http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r,
            ):
                assert budget.reserved("team-x")["day"] > 0
                async for line in r.aiter_lines():
                    if line.startswith("data:"):
                        break
            for _ in range(200):  # bounded wait for the cancellation to run
                if budget.reserved("team-x")["day"] == 0:
                    break
                await asyncio.sleep(0.01)
    assert budget.reserved("team-x")["day"] == 0


async def test_in_flight_stream_finishes_on_its_config(stack: Stack) -> None:
    """A stream started before a reload that removes its policy still completes."""
    stack.primary.script([Fault(trickle=0.01)])
    body = {"model": "chat", "messages": MSG, "stream": True}
    lines: list[str] = []
    async with (
        stack.running.http() as http,
        http.stream("POST", "/v1/chat/completions", json=body) as resp,
    ):
        async for line in resp.aiter_lines():
            if line.startswith("data:") and not lines:
                write_route(stack.config, "other")
                (stack.config / "routes" / "chat.yaml").unlink()
                assert await stack.watcher.check() is True
            if line.startswith("data:"):
                lines.append(line)
    assert lines[-1] == "data: [DONE]"
    async with stack.running.client() as client:
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="chat", messages=MSG)


async def test_models_endpoint_lists_config(stack: Stack) -> None:
    """The SDK's models.list shows the policy and both models."""
    async with stack.running.client() as client:
        ids = {m.id async for m in client.models.list()}
    assert {"chat", "primary/gpt-4o-mini", "backup/gpt-4o-mini"} <= ids


async def test_a_request_no_candidate_can_serve_is_a_400_naming_why(stack: Stack) -> None:
    """An image for text-only models, or max_tokens beyond every window, is the caller's
    request (the SDK does not retry a 400), not a 503 outage; the message says why."""
    image = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        }
    ]
    async with stack.running.client() as client:
        with pytest.raises(openai.BadRequestError) as vision:
            await client.chat.completions.create(model="chat", messages=image)  # type: ignore[arg-type]
        with pytest.raises(openai.BadRequestError) as window:
            await client.chat.completions.create(model="chat", messages=MSG, max_tokens=500_000)
    assert vision.value.status_code == 400 and "missing capability: vision" in str(vision.value)
    assert window.value.status_code == 400 and "context window" in str(window.value)
    assert stack.primary.requests == [] and stack.backup.requests == []
