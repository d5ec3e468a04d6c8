"""The Engine's public surface: streaming, sync wrappers, hooks, batches, reload, registry,
conversation, health and warm-up."""

from __future__ import annotations

import asyncio
import threading

import pytest

from engine import (
    AllCandidatesFailedError,
    Conversation,
    EngineError,
    Request,
    Response,
    UnavailableError,
    UnknownModelError,
)
from engine.messages import Chunk, ToolCallDelta, Usage
from engine.plan.compiled import Plan
from engine.plan.values import RetryPlan

from .doubles import ScriptedAdapter, ask, make_plan, model, provider, rig, route

ONE_TRY = RetryPlan(max_retries=0)


def pair(**kw: object) -> Plan:
    return make_plan(
        [model("a/m1"), model("b/m2", caps=("chat", "tools"), price=(None, None))],
        [route("p", ["a/m1", "b/m2"], **{"retry": ONE_TRY, **kw})],
    )


async def test_stream_yields_chunks_then_a_final_event_with_cost() -> None:
    """astream yields the upstream's text; the last event carries usage, cost and attempts."""
    r = rig(pair())
    events = [e async for e in r.engine.astream(ask(), policy="p")]
    assert "".join(e.content for e in events) == "hello"
    assert events[-1].cost_usd is not None and events[-1].attempts[-1].outcome == "ok"
    assert events[0].to_openai()["object"] == "chat.completion.chunk"
    assert r.adapter.calls[0].stream


async def test_stream_fails_over_before_the_first_token() -> None:
    """A stream that fails before any chunk is retried on the next candidate."""
    adapter = ScriptedAdapter({"m1": [UnavailableError("down")]})
    r = rig(pair(), adapter)
    events = [e async for e in r.engine.astream(ask(), policy="p")]
    assert adapter.called() == ["m1", "m2"] and events[0].model == "b/m2"


async def test_stream_failing_after_the_first_token_is_not_retried() -> None:
    """Once a chunk was delivered, a mid-stream error is raised, not retried elsewhere."""
    adapter = ScriptedAdapter()
    adapter.stream_chunks["m1"] = [Chunk(content="par"), UnavailableError("cut")]
    r = rig(pair(), adapter)
    got = []
    with pytest.raises(UnavailableError):
        async for e in r.engine.astream(ask(), policy="p"):
            got.append(e.content)
    assert got == ["par"] and adapter.called() == ["m1"]
    assert r.ledger.rows[-1].outcome == "unavailable"


async def test_stream_after_first_token_fails_over_when_the_policy_allows() -> None:
    """With retry.after_first_token the next candidate takes over a broken stream."""
    adapter = ScriptedAdapter()
    adapter.stream_chunks["m1"] = [Chunk(content="par"), UnavailableError("cut")]
    r = rig(pair(retry=RetryPlan(max_retries=0, after_first_token=True)), adapter)
    text = "".join([e.content async for e in r.engine.astream(ask(), policy="p")])
    assert text == "parhello" and adapter.called() == ["m1", "m2"]


async def test_stream_reassembles_tool_calls_for_hooks() -> None:
    """Streamed tool-call fragments are reassembled in the Response after_response sees."""
    adapter = ScriptedAdapter()
    adapter.stream_chunks["m1"] = [
        Chunk(tool_calls=(ToolCallDelta(0, "call_1", "get_weather", '{"ci'),)),
        Chunk(tool_calls=(ToolCallDelta(0, None, None, 'ty": "Paris"}'),)),
        Chunk(finish_reason="tool_calls", usage=Usage(5, 7)),
    ]
    r = rig(pair(), adapter)
    seen: list[Response] = []

    async def after(_req: Request, resp: Response) -> None:
        seen.append(resp)

    r.engine.add_hook("after_response", after)
    [e async for e in r.engine.astream(ask(), policy="p")]
    call = seen[0].tool_calls[0]
    assert (call.name, call.arguments) == ("get_weather", '{"city": "Paris"}')
    assert seen[0].finish_reason == "tool_calls" and seen[0].usage.output_tokens == 7


def test_sync_run_and_stream_work_outside_an_event_loop() -> None:
    """run() and stream() are plain blocking calls for scripts without asyncio."""
    r = rig(pair())
    resp = r.engine.run(ask(), policy="p")
    assert resp.content == "ok from m1"
    assert "".join(e.content for e in r.engine.stream(ask(), policy="p")) == "hello"
    assert r.engine.batch([ask(), ask()], policy="p")[1].model == "a/m1"  # type: ignore[union-attr]
    r.engine.close()
    assert r.ledger.closed and r.adapter.closed


def test_sync_run_raises_engine_errors_unchanged() -> None:
    """Errors from the async core reach the sync caller as the same typed exceptions."""
    adapter = ScriptedAdapter({"m1": [UnavailableError("x")], "m2": [UnavailableError("x")]})
    r = rig(pair(), adapter)
    with pytest.raises(AllCandidatesFailedError):
        r.engine.run(ask(), policy="p")
    r.engine.close()


async def test_hooks_wrap_every_call() -> None:
    """before_request may replace the request; after_response and on_error see outcomes."""
    r = rig(pair())
    log: list[str] = []

    async def before(req: Request) -> Request:
        log.append("before")
        return req.model_copy(update={"max_tokens": 7})

    @r.engine.hook("after_response")
    async def after(req: Request, resp: Response) -> None:
        log.append(f"after {resp.model} {req.max_tokens}")

    async def on_error(_req: Request, exc: BaseException) -> None:
        log.append(f"error {type(exc).__name__}")

    r.engine.add_hook("before_request", before)
    r.engine.add_hook("on_error", on_error)
    await r.engine.arun(ask(), policy="p")
    with pytest.raises(EngineError):
        await r.engine.arun(ask(), policy="missing")
    assert log == ["before", "after a/m1 7", "before", "error UnknownPolicyError"]
    assert r.adapter.calls[0].request.max_tokens == 7
    with pytest.raises(ValueError, match="before_request"):
        r.engine.add_hook("after", after)


async def test_batch_keeps_order_and_returns_errors_as_values() -> None:
    """abatch returns one result per request, in order, failures as exception values."""
    r = rig(pair())
    progress: list[tuple[int, int]] = []
    requests = [ask("one"), ask("two", model="zzz/none"), ask("three")]
    out = await r.engine.abatch(
        requests, policy=None, concurrency=2, progress=lambda d, t: progress.append((d, t))
    )
    assert isinstance(out[0], Response) and isinstance(out[2], Response)
    assert isinstance(out[1], UnknownModelError)
    assert [c.request.messages[0].text() for c in r.adapter.calls] == ["one", "three"]
    assert progress[-1] == (3, 3)


async def test_batch_respects_the_concurrency_limit() -> None:
    """No more than `concurrency` requests are in flight at once."""
    adapter = ScriptedAdapter()
    r = rig(pair(), adapter)
    peak = 0
    original = adapter.complete

    async def tracking(req, ep):  # type: ignore[no-untyped-def]
        nonlocal peak
        peak = max(peak, r.limiter.open)
        await asyncio.sleep(0)
        return await original(req, ep)

    adapter.complete = tracking  # type: ignore[method-assign]
    await r.engine.abatch([ask()] * 10, policy="p", concurrency=3)
    assert 1 <= peak <= 3


async def test_reload_is_atomic_for_in_flight_calls() -> None:
    """A call started before reload finishes on its old plan; new calls use the new one."""
    adapter = ScriptedAdapter()
    r = rig(pair(), adapter)
    gate = asyncio.Event()
    adapter.gate = gate
    old = asyncio.create_task(r.engine.arun(ask(), policy="p"))
    await asyncio.sleep(0.01)
    new_plan = make_plan([model("c/m9")], [route("p", ["c/m9"])])
    r.engine.reload(new_plan)
    adapter.gate = None
    fresh = await r.engine.arun(ask(), policy="p")
    gate.set()
    assert (await old).model == "a/m1" and fresh.model == "c/m9"
    assert r.engine.plan is new_plan
    with pytest.raises(TypeError):
        r.engine.reload({"not": "a plan"})  # type: ignore[arg-type]


async def test_registry_queries() -> None:
    """List, find under a price, cheapest, fastest and one model's config."""
    models = [
        model("a/big", caps=("chat", "code"), price=(10.0, 30.0), latency=900),
        model("a/small", caps=("chat", "code"), price=(0.5, 1.5), latency=300),
        model("b/mystery", caps=("chat", "code"), price=(None, None), latency=100),
        model("b/vision", caps=("chat", "vision"), price=(1.0, 1.0), latency=200),
    ]
    r = rig(make_plan(models, [route("p", ["a/big"])]))
    e = r.engine
    assert e.list_models() == ["a/big", "a/small", "b/mystery", "b/vision"]
    assert e.list_models("b") == ["b/mystery", "b/vision"]
    assert [m.id for m in e.find_models("code", max_input_price=1.0)] == ["a/small"]
    assert e.cheapest_model("code").id == "a/small"  # type: ignore[union-attr]
    assert e.fastest_model("code").id == "b/mystery"  # type: ignore[union-attr]
    assert e.fastest_model("code", max_input_price=5).id == "a/small"  # type: ignore[union-attr]
    assert e.model_config("a/big").context_window == 8000
    with pytest.raises(UnknownModelError):
        e.model_config("a/none")


async def test_conversation_keeps_history_and_appends_replies() -> None:
    """Each turn sends the whole history and appends the assistant's answer."""
    r = rig(pair())
    chat = r.engine.conversation(policy="p", system="be brief")
    assert isinstance(chat, Conversation)
    await chat.asend("my name is Alice")
    await chat.asend("what is my name?")
    roles = [m["role"] for m in chat.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert len(r.adapter.calls[1].request.messages) == 4


async def test_conversation_failed_turn_leaves_history_unchanged() -> None:
    """A turn that fails does not leave a dangling user message."""
    adapter = ScriptedAdapter({"m1": [UnavailableError("x")], "m2": [UnavailableError("x")]})
    r = rig(pair(), adapter)
    chat = r.engine.conversation(policy="p")
    with pytest.raises(AllCandidatesFailedError):
        await chat.asend("hello")
    assert chat.messages == []


async def test_health_reports_disabled_and_probes_actively() -> None:
    """health() gives each provider a status and reason; probe=True connects via warm."""
    plan = make_plan(
        [model("a/m1"), model("b/m2")],
        [route("p", ["a/m1", "b/m2"])],
        [provider("a"), provider("b", enabled=False)],
    )
    r = rig(plan)
    h = await r.engine.health(probe=True)
    assert h["providers"]["a"] == {"status": "healthy", "reason": None}
    assert h["providers"]["b"]["status"] == "disabled" and h["providers"]["b"]["reason"]
    assert r.adapter.warmed == ["a"] and h["status"] == "healthy"
    assert r.engine.is_available("a") and not r.engine.is_available("b")


async def test_warm_opens_connections_and_keep_alive_repeats() -> None:
    """warm() warms every enabled provider; keep_alive_s repeats it until aclose."""
    r = rig(pair())
    assert await r.engine.warm(keep_alive_s=5.0) == {"a": "ok", "b": "ok"}
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(r.adapter.warmed) > 2
    await r.engine.aclose()
    count = len(r.adapter.warmed)
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(r.adapter.warmed) == count


async def test_rate_limit_status_names_the_provider() -> None:
    """rate_limit_status passes through the limiter; an unknown provider is an error."""
    r = rig(pair())
    assert r.engine.rate_limit_status("a")["provider"] == "a"
    with pytest.raises(UnknownModelError):
        r.engine.rate_limit_status("nope")


async def test_bad_request_dict_is_a_precise_request_error() -> None:
    """A malformed request names the offending field instead of a traceback."""
    from engine import RequestError

    r = rig(pair())
    with pytest.raises(RequestError, match="temperature"):
        await r.engine.arun({"messages": [{"role": "user", "content": "x"}], "temperature": 9})


def test_sync_calls_from_many_threads() -> None:
    """The sync API can be used from several threads at once."""
    r = rig(pair())
    results: list[str] = []

    def work() -> None:
        results.append(r.engine.run(ask(), policy="p").model)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["a/m1"] * 4
    r.engine.close()


async def test_sync_call_from_the_engines_own_loop_is_refused() -> None:
    """A hook calling the sync API on the engine's loop gets an error, not a deadlock."""
    r = rig(pair())
    errors: list[str] = []

    async def nested(_req: Request, _resp: Response) -> None:
        try:
            r.engine.run(ask(), policy="p")
        except RuntimeError as exc:
            errors.append(str(exc))

    r.engine.add_hook("after_response", nested)
    await asyncio.to_thread(r.engine.run, ask(), "p")
    assert errors and "deadlock" in errors[0]
    r.engine.close()


async def test_provider_listing_and_health_figures() -> None:
    """list/available providers, and health carrying each provider's traffic figures."""
    adapter = ScriptedAdapter({"m1": [UnavailableError("x"), "ok"]})
    plan = make_plan(
        [model("a/m1"), model("b/m2"), model("c/m3")],
        [route("p", ["a/m1", "b/m2"], retry=ONE_TRY)],
        [provider("a"), provider("b"), provider("c", enabled=False)],
    )
    r = rig(plan, adapter)
    adapter.clock, adapter.latency_s = r.clock, {"m1": 0.25}
    await r.engine.arun(ask(), policy="p")
    await r.engine.arun(ask(), policy="p")
    assert r.engine.list_providers() == ["a", "b", "c"]
    assert r.engine.available_providers() == ["a", "b"]
    assert "requests" not in (await r.engine.health())["providers"]["a"]
    a = (await r.engine.health(detail=True))["providers"]["a"]
    assert a["requests"] == 2 and a["success_rate"] == 0.5
    assert r.engine.stats()["providers"]["a"]["latency_avg_ms"] == pytest.approx(250.0)


async def test_stopping_a_stream_early_releases_its_lease() -> None:
    """A consumer that stops reading mid-stream releases the lease; the try is 'cancelled'."""
    adapter = ScriptedAdapter()
    adapter.stream_chunks["m1"] = [Chunk(content="a"), Chunk(content="b"), Chunk(content="c")]
    r = rig(pair(), adapter)
    events = r.engine.astream(ask(), policy="p")
    first = await anext(events)
    assert first.content == "a" and r.limiter.open == 1
    await events.aclose()
    assert r.limiter.open == 0 and r.limiter.released == ["a#0"]
    assert [row.outcome for row in r.ledger.rows] == ["cancelled"]


async def test_stream_errors_reach_on_error_hooks() -> None:
    """A stream that cannot start (unknown policy) is reported to on_error hooks."""
    r = rig(pair())
    seen: list[str] = []

    async def on_error(_req: Request, exc: BaseException) -> None:
        seen.append(type(exc).__name__)

    r.engine.add_hook("on_error", on_error)
    with pytest.raises(EngineError):
        [e async for e in r.engine.astream(ask(), policy="missing")]
    assert seen == ["UnknownPolicyError"]


async def test_stream_with_several_usage_chunks_loses_no_content() -> None:
    """Chunks that carry usage (and text) mid-stream are all delivered; the last has the cost."""
    adapter = ScriptedAdapter()
    adapter.stream_chunks["m1"] = [
        Chunk(content="a", usage=Usage(10, 0)),
        Chunk(content="b"),
        Chunk(content="c", finish_reason="stop", usage=Usage(10, 3)),
    ]
    r = rig(pair(), adapter)
    events = [e async for e in r.engine.astream(ask(), policy="p")]
    assert "".join(e.content for e in events) == "abc"
    assert events[-1].cost_usd is not None and events[-1].chunk.usage == Usage(10, 3)


async def test_batch_keeps_a_hook_failure_as_that_requests_result() -> None:
    """An exception a hook raises for one request is that slot's value; the rest answer."""
    r = rig(pair())

    async def veto(req: Request) -> None:
        if req.messages[0].text() == "bad":
            raise PermissionError("not this one")

    r.engine.add_hook("before_request", veto)
    out = await r.engine.abatch([ask("ok"), ask("bad"), ask("ok")], policy="p")
    assert isinstance(out[1], PermissionError)
    assert isinstance(out[0], Response) and isinstance(out[2], Response)
