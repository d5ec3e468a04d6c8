"""The ledger's journal: a row is durable as its answer leaves, and stored once after a crash.

The engine tests run a real engine in a child process whose ledger writer never commits
on its own (a flush interval of an hour), take an answer (a call, a whole stream, a stream
abandoned after its first chunk) and SIGKILL the child at once: only the journal can have
kept the row. Opening the ledger again stores it, exactly once.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from engine.state.journal import Journal, orphans
from engine.state.ledger import SQLiteLedger, journal_dir
from engine.state.protocols import LedgerRow
from engine.testing.clock import FakeClock

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import asyncio, os, signal, sys
from engine import Engine
from engine.clock import SystemClock
from engine.state.ledger import SQLiteLedger

MODELS = {
    "providers": {"mock": {"protocol": "mock", "options": {"latency_ms": 0}}},
    "models": {"mock/fast": {"capabilities": ["chat", "streaming"], "context_window": 16000,
                             "input_price": 1.0, "output_price": 2.0}},
}
ROUTES = {"chat": {"strategy": "ordered", "candidates": ["mock/fast"]}}
ASK = {"messages": [{"role": "user", "content": "tell me a long story " * 20}],
       "metadata": {"workspace": "acme"}}


async def main(path, mode):
    ledger = SQLiteLedger(path, SystemClock(), flush_interval_s=3600, batch_size=10**6)
    eng = Engine.from_data(MODELS, ROUTES, ledger=ledger)
    if mode == "run":
        resp = await eng.arun(ASK, policy="chat")
        rid = resp.id
    else:
        stream = eng.astream({**ASK, "stream": True}, policy="chat")
        first = await anext(stream)
        rid = first.id
        if mode == "stream":
            async for _ in stream:
                pass
        else:  # abandoned after one chunk: settled as it closes
            await stream.aclose()
    print(rid.removeprefix("chatcmpl-"), flush=True)
    assert ledger.count() == 0  # the writer has committed nothing: only the journal has it
    os.kill(os.getpid(), signal.SIGKILL)


asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.parametrize("mode", ["run", "stream", "abandon"])
def test_a_row_survives_sigkill_as_the_answer_leaves(tmp_path: Path, mode: str) -> None:
    """Killed right after the answer (or the abandoned stream's settle): the row is kept."""
    path = tmp_path / "ledger.sqlite3"
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), mode],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr
    rid = child.stdout.strip()
    ledger = SQLiteLedger(path, FakeClock())
    ledger.close()
    assert ledger.replayed == 1
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT request_id, outcome, cost_usd, row_id FROM attempts").fetchall()
    ((stored_id, outcome, cost, row_id),) = rows
    assert stored_id == rid and row_id
    assert outcome == ("cancelled" if mode == "abandon" else "ok")
    assert cost and cost > 0  # an abandoned stream is billed its prompt, not nothing
    assert not list(journal_dir(path).glob("*.log"))
    SQLiteLedger(path, FakeClock()).close()  # opening again replays nothing twice
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] == 1


def test_stored_rows_leave_the_journal_and_the_rest_stay(tmp_path: Path) -> None:
    """A row that does not fit starts a new segment; `done` deletes retired segments once
    stored and empties (zeroes) a fully stored current one; `pending` is what is left,
    read back from the files in order."""
    journal = Journal(tmp_path, segment_bytes=80)
    ids = [journal.append(("row", i))[-1] for i in range(6)]
    assert len(set(ids)) == 6
    assert len(list(tmp_path.glob("*.log"))) == 3  # two rows of ~36 bytes per segment
    journal.done(2)
    journal.append(("row", 6))
    assert [r[1] for r in journal.pending()] == [2, 3, 4, 5, 6]
    journal.done(5)
    assert list(journal.pending()) == []
    assert all(not f.read_bytes().strip(b"\0") for f in tmp_path.glob("*.log"))
    assert len(list(tmp_path.glob("*.log"))) == 1
    journal.close()
    assert list(tmp_path.iterdir()) == []


def test_a_live_journal_is_never_replayed_and_a_dead_ones_is(tmp_path: Path) -> None:
    """The lock tells a living writer from a dead one; a dead one is replayed once, its
    torn last line skipped."""
    live = Journal(tmp_path)
    live.append(("live",))
    script = (
        "import os, signal, sys\n"
        "from engine.state.journal import Journal\n"
        "j = Journal(sys.argv[1])\n"
        "j.append(('dead', 1)); j.append(('dead', 2))\n"
        "s = j._current\n"  # killed while copying a third row: half of it is in the map
        "s.view[s.end : s.end + 10] = b'[\"dead\", 3'\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, check=False)
    found = list(orphans(tmp_path))
    assert [[r[:2] for r in o.rows()] for o in found] == [[("dead", 1), ("dead", 2)]]
    assert list(orphans(tmp_path)) == []  # locked by us while we replay it
    found[0].remove()
    assert list(orphans(tmp_path)) == []
    assert [r[0] for r in live.pending()] == ["live"]
    live.close()


def test_segments_get_their_blocks_without_posix_fallocate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the platform has no posix_fallocate (macOS) the zeros are written instead:
    the segment is its full size at once, and rows read back as on Linux."""
    monkeypatch.setattr("engine.state.journal.sys.platform", "darwin")
    journal = Journal(tmp_path, segment_bytes=4096)
    journal.append(("row", 1))
    (segment,) = tmp_path.glob("*.log")
    assert segment.stat().st_size == 4096
    assert [r[:2] for r in journal.pending()] == [("row", 1)]
    journal.done(1)
    journal.close()
    assert list(tmp_path.iterdir()) == []


async def test_rows_stored_before_the_journal_let_go_are_not_stored_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process dying between a batch's commit and the journal's `done` leaves stored rows
    in its journal: the next start stores only the rest (found by id), once."""
    path = tmp_path / "ledger.sqlite3"
    monkeypatch.setattr(Journal, "done", lambda self, rows: None)  # never told: all stay
    ledger = SQLiteLedger(path, FakeClock())
    for i in range(3):
        ledger.record(LedgerRow(1e9 + i, "acme", "p", "mock", "mock/fast", 1, 1, 0.5, 1.0,
                                "ok", 0, f"r{i}"))  # fmt: skip
    await ledger.flush()
    assert ledger.count() == 3
    assert ledger._journal is not None
    ledger._journal.append(
        (
            1e9 - 5,
            "acme",
            "p",
            "mock",
            "mock/fast",
            1,
            1,
            0.5,
            1.0,
            "ok",
            0,
            "late",
            0,
            None,
            0,
            0,
            0,
        )
    )  # fmt: skip  (journaled, not stored)
    await ledger.aclose()  # nothing reported stored: the files stay, an orphan
    monkeypatch.undo()
    again = SQLiteLedger(path, FakeClock())
    again.close()
    assert again.replayed == 1
    with sqlite3.connect(path) as db:
        ids = [r[0] for r in db.execute("SELECT request_id FROM attempts ORDER BY ts")]
    assert ids == ["late", "r0", "r1", "r2"]
    assert not list(journal_dir(path).glob("*.log"))
