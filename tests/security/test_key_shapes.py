"""Any key shape (regex-special characters, non-ASCII, short, padded with whitespace or a
stray newline) is masked wherever an upstream echoes it, and odd keys fail as typed errors."""

from __future__ import annotations

import asyncio
import logging
import traceback
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine import AllCandidatesFailedError, AuthenticationError, Engine, EngineError
from engine.testing.clock import FakeClock
from engine.testing.fakes import FakeAnthropic, FakeGemini, FakeOpenAI, FakeUpstream, Fault

#: Letters, digits, every ASCII punctuation mark a regex or a shell would treat specially
#: (but `*`, the mask itself, and `$`, which starts `${VAR}`), a space and some non-ASCII.
ALPHABET = st.sampled_from(
    [*"abcXYZ0189-_.~+/=!@#%^&()[]{}|\\:;'\",<>?` ", "é", "ß", "\u2019", "中", "ø"]
)
PREFIXES = st.sampled_from(["", "sk-", "sk-ant-api03-", "AIza", "gsk_", "hf_", "Bearer "])
PADDING = st.sampled_from(["", " ", "\n", "\r\n", "\t", " \n"])
PROTOCOLS = {"openai": FakeOpenAI, "anthropic": FakeAnthropic, "gemini": FakeGemini}


@st.composite
def keys(draw: st.DrawFn) -> str:
    """A key of at least 4 meaningful characters, maybe padded as if read from a file."""
    body = draw(st.text(ALPHABET, min_size=4, max_size=40))
    key = draw(PREFIXES) + body
    assume(len(key.strip()) >= 4)
    return draw(PADDING) + key + draw(PADDING)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(f"{record.getMessage()} {record.args!r} {record.exc_text or ''}")


def _engine(protocol: str, url: str, key: str) -> Engine:
    models = {
        "providers": {"p": {"protocol": protocol, "base_url": url, "api_key": key}},
        "models": {"p/m": {"capabilities": ["chat", "streaming"], "context_window": 8000,
                           "input_price": 1, "output_price": 1}},
    }  # fmt: skip
    route = {"strategy": "ordered", "candidates": ["p/m"], "retries": {"max_retries": 0}}
    return Engine.from_data(models, {"default": route}, clock=FakeClock())


async def _fail(protocol: str, key: str, fault: Fault, stream: bool) -> list[str]:
    """One failing call; every text the caller or a log handler could see of it."""
    fake: type[FakeUpstream] = PROTOCOLS[protocol]
    ask: dict[str, Any] = {"messages": [{"role": "user", "content": "hi there"}]}
    async with fake() as up:
        up.default_fault = fault
        eng = _engine(protocol, up.url, key)
        try:
            if stream:
                async for _ in eng.astream(ask):
                    pass
            else:
                await eng.arun(ask)
        except EngineError as exc:
            err: BaseException = exc
        else:
            raise AssertionError("the call should have failed")
        finally:
            await eng.aclose()
    attempts = getattr(err, "attempts", ())
    return [str(err), repr(err), repr(err.args), repr(attempts), *map(str, _chain(err))]


def _chain(err: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    e: BaseException | None = err
    while e is not None and e not in out:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=keys(),
    protocol=st.sampled_from(sorted(PROTOCOLS)),
    status=st.sampled_from([400, 401, 403, 429, 500, 503]),
    stream=st.booleans(),
)
def test_an_echoed_key_of_any_shape_is_masked(
    key: str, protocol: str, status: int, stream: bool
) -> None:
    """Whatever the key looks like, the upstream's echo of it reaches no error or log line."""
    handler = _Records()
    root = logging.getLogger()
    root.addHandler(handler)
    old = root.level
    root.setLevel(logging.DEBUG)
    try:
        fault = Fault(status=status, echo_key=True)
        texts = asyncio.run(_fail(protocol, key, fault, stream))
    finally:
        root.removeHandler(handler)
        root.setLevel(old)
    needle = key.strip()
    assert not [t for t in [*texts, *handler.texts] if needle in t]


@settings(max_examples=25, deadline=None)
@given(key=keys(), protocol=st.sampled_from(sorted(PROTOCOLS)))
def test_an_echo_inside_a_stream_is_masked_for_any_key(key: str, protocol: str) -> None:
    """An error event inside a 200 stream that quotes the key is masked too."""
    fault = Fault(stream_error_after=0, echo_key=True)
    texts = asyncio.run(_fail(protocol, key, fault, True))
    assert not [t for t in texts if key.strip() in t]


async def test_a_key_read_with_a_trailing_newline_still_works() -> None:
    """`KEY=$(cat file)`-style keys ending in a newline are sent without it, and work."""
    async with FakeOpenAI(api_key="sk-from-a-file-0001") as up:
        eng = _engine("openai", up.url, "sk-from-a-file-0001\n")
        resp = await eng.arun({"messages": [{"role": "user", "content": "hi"}]})
        await eng.aclose()
    assert resp.content and up.last.headers["authorization"] == "Bearer sk-from-a-file-0001"


@pytest.mark.parametrize("key", ["abc\ndef-CANARY-1234", "x\r\nX-Injected: CANARY-1234"])
async def test_a_key_with_a_control_character_is_a_typed_error(key: str) -> None:
    """A key no HTTP header can carry fails as AuthenticationError (not aiohttp's ValueError),
    is never sent, and the message does not quote it."""
    async with FakeOpenAI() as up:
        eng = _engine("openai", up.url, key)
        with pytest.raises(AllCandidatesFailedError) as info:
            await eng.arun({"messages": [{"role": "user", "content": "hi"}]})
        await eng.aclose()
    assert [a.outcome for a in info.value.attempts] == [AuthenticationError.kind]
    assert not up.requests
    text = "".join(traceback.format_exception(info.value)) + repr(info.value.attempts)
    assert "CANARY" not in text
