"""Whatever fails, through `Engine.arun` / `astream` until every candidate is exhausted, no
canary key shows up in the error, the logs, or anything the engine reports afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import AllCandidatesFailedError, Engine, EngineError
from engine.testing.clock import FakeClock
from engine.testing.fakes import Fault

from .conftest import Canaries, Scanner, ask, stack_config, upstreams

#: name -> (fault every upstream answers with, streams only). Echoing faults put the key
#: the request presented into the upstream's error message, as real services do.
FAULTS: dict[str, tuple[Fault, bool]] = {
    "401-echo": (Fault(status=401, echo_key=True), False),
    "403-echo": (Fault(status=403, echo_key=True), False),
    "400-echo": (Fault(status=400, echo_key=True), False),
    "429-echo": (Fault(status=429, retry_after=1, echo_key=True), False),
    "500-echo": (Fault(status=500, echo_key=True), False),
    "529-echo": (Fault(status=529, echo_key=True), False),
    "reset": (Fault(reset=True), False),
    "malformed": (Fault(malformed=True), False),
    "truncated": (Fault(truncate_after=1), False),
    "timeout": (Fault(stall=True), False),
    "error-in-stream-echo": (Fault(stream_error_after=0, echo_key=True), True),
    "error-mid-stream-echo": (Fault(stream_error_after=2, echo_key=True), True),
    "reset-mid-stream": (Fault(reset_after=2), True),
}
CASES = [
    (name, stream)
    for name, (_, only) in FAULTS.items()
    for stream in (False, True)
    if stream or not only
]


async def _drive(eng: Engine, stream: bool) -> BaseException:
    """One call that must fail; the error it ended with."""
    with pytest.raises(EngineError) as info:
        if stream:
            async for _ in eng.astream(ask()):
                pass
        else:
            await eng.arun(ask())
    return info.value


def _ledger_bytes(path: Path) -> bytes:
    """The ledger database, its WAL / shared-memory side files and its journal, byte for byte."""
    found = path.parent.glob(path.name + "*")
    files = [f for p in found for f in (p.rglob("*") if p.is_dir() else [p]) if f.is_file()]
    return b"".join(f.read_bytes() for f in files)


@pytest.mark.parametrize(
    ("name", "stream"), CASES, ids=[f"{n}-{'stream' if s else 'run'}" for n, s in CASES]
)
async def test_no_surface_shows_a_key_after_every_candidate_failed(
    name: str, stream: bool, canaries: Canaries, scanner: Scanner, tmp_path: Path
) -> None:
    """Error chain, logs, explain, stats, health, rate-limit status, reprs, ledger: no key."""
    fault, _ = FAULTS[name]
    timeouts = "{connect_s: 0.2, total_s: 0.3, first_token_s: 0.2}" if name == "timeout" else None
    async with upstreams(canaries) as ups:
        ups.fail_with(fault)
        extra = {"timeouts": timeouts} if timeouts else {}
        eng = Engine.from_config(stack_config(tmp_path / "cfg", ups, **extra), clock=FakeClock())
        try:
            error = await _drive(eng, stream)
            await _observe(eng, scanner)
        finally:
            await eng.aclose()
        scanner.check(("error", error))
        assert ups.openai.requests  # the failures came over the wire
        if not stream and name != "400-echo":  # 400: no other provider would take it either
            assert isinstance(error, AllCandidatesFailedError)
            assert all(u.requests for u in ups.all())
    ledger = Path(tmp_path / "ledger.sqlite3")
    assert ledger.exists()
    scanner.check(("ledger", _ledger_bytes(ledger)))


async def _observe(eng: Engine, scanner: Scanner) -> None:
    """Hand the scanner everything the engine reports about itself."""
    for label, value in {
        "explain": eng.explain(ask()),
        "stats": eng.stats(),
        "health": await eng.health(detail=True),
        "health probe": await eng.health(probe=True, detail=True),
        "engine": eng,
        "plan": eng.plan,
        "providers": list(eng.plan.providers.values()),
        "keys": [k for p in eng.plan.providers.values() for k in p.keys],
        **{f"limits {p}": eng.rate_limit_status(p) for p in eng.plan.providers},
    }.items():
        scanner.add(label, value)
