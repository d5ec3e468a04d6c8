"""A canary API key never appears in exception text, repr, tracebacks or log records,
whatever fails, for every protocol (including upstreams that echo the key back)."""

from __future__ import annotations

import logging
import traceback

import pytest

from engine.endpoints import Timeouts
from engine.errors import ProviderError
from engine.providers import get_adapter
from engine.testing.fakes import Fault

from .cases import CASES, Case
from .conftest import CANARY, chat, collect

ECHO = f"the key {CANARY} is not valid here"
FAULTS = {
    "400-echo": (Fault(status=400, message=ECHO), False),
    "401-echo": (Fault(status=401, message=ECHO), False),
    "429-echo": (Fault(status=429, message=ECHO, retry_after=1), False),
    "500-echo": (Fault(status=500, message=ECHO), False),
    "error-in-stream-echo": (Fault(stream_error_after=1, message=ECHO), True),
    "malformed": (Fault(malformed=True), False),
    "reset": (Fault(reset=True), False),
    "reset-mid-stream": (Fault(reset_after=1), True),
    "truncated": (Fault(truncate_after=1), False),
    "stall": (Fault(stall=True), False),
}


def _texts(err: BaseException) -> list[str]:
    """Everything a caller or a log handler could print about the error."""
    chain = "".join(traceback.format_exception(err))
    return [str(err), repr(err), chain, *map(str, err.args), str(getattr(err, "code", ""))]


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize(
    ("name", "stream"),
    [
        (n, s)
        for n, (_, only_stream) in FAULTS.items()
        for s in (False, True)
        if s or not only_stream
    ],
    ids=lambda v: v if isinstance(v, str) else ("stream" if v else "plain"),
)
async def test_canary_never_leaks(
    case: Case, name: str, stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever fails, the key is absent from the error, its traceback and every log line."""
    fault = FAULTS[name][0]
    caplog.set_level(logging.DEBUG)
    adapter = get_adapter(case.protocol)
    async with case.fake(api_key=CANARY) as up:
        up.script([fault])
        ep = case.endpoint(up, timeouts=Timeouts(connect_s=1, total_s=0.3))
        with pytest.raises(ProviderError) as info:
            if stream:
                await collect(adapter.stream(chat("one two three four five six"), ep))
            else:
                await adapter.complete(chat(), ep)
    for text in _texts(info.value):
        assert CANARY not in text
    assert all(CANARY not in r.getMessage() and CANARY not in str(r.args) for r in caplog.records)
    assert CANARY not in repr(ep)


@pytest.mark.parametrize("case", CASES, ids=str)
async def test_key_reaches_the_upstream_only_in_its_header(case: Case) -> None:
    """The key is sent (that is its job) in the protocol's auth header and nowhere else."""
    async with case.fake(api_key=CANARY) as up:
        await get_adapter(case.protocol).complete(chat(), case.endpoint(up))
    sent = up.last
    in_headers = [k for k, v in sent.headers.items() if CANARY in v]
    assert len(in_headers) == 1
    assert CANARY.encode() not in sent.raw and CANARY not in sent.path + str(sent.query)
