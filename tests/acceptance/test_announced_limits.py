"""`validate` says when a declared limit is below what the provider announced: the engine
keeps the limits a provider's rate-limit headers announce beside the ledger, and
`python -m engine validate` warns at the file:line of every declared figure that is lower."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import Engine
from engine.cli import main
from engine.testing.fakes import FakeOpenAI
from tests.acceptance.conftest import ask, write_config

#: FakeOpenAI announces 10,000 requests and 2,000,000 tokens per minute on every answer.
MODELS = """providers:
  openai:
    protocol: openai
    base_url: {url}
    keys:
      - sk-announced-0000001
      - {{key: sk-announced-0000002, rpm: 20000, input_tpm: 3000}}
    limits: {{rpm: 500, output_tpm: 5000000}}
models:
  openai/gpt-4o-mini:
    capabilities: [chat]
    input_price: 0.15
    output_price: 0.6
"""
ROUTE = "candidates: [openai/gpt-4o-mini]\nstrategy: round_robin\nretries: {max_retries: 0}\n"


async def test_validate_warns_where_a_declared_limit_is_below_the_announced_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After the engine talked to both keys, validate warns at the provider's `rpm: 500`
    (key #0 inherits it; 10,000 announced) and at key #1's `input_tpm: 3000` (2,000,000
    total tokens announced), and not at the figures that are above the announcement."""
    async with FakeOpenAI() as up:
        cfg = write_config(tmp_path / "cfg", MODELS.format(url=up.url), {"default": ROUTE})
        assert main(["validate", str(cfg)]) == 0
        assert "announced" not in capsys.readouterr().out  # nothing heard yet
        eng = Engine.from_config(cfg)
        for _ in range(30):  # key choice by headroom: both keys get some
            await eng.arun(ask())
        await eng.aclose()
    kept = json.loads((tmp_path / "announced-limits.json").read_text())  # beside the ledger
    assert set(kept["providers"]["openai"]) == {"openai#0", "openai#1"}
    assert "sk-announced" not in json.dumps(kept)
    assert main(["validate", str(cfg)]) == 0  # warnings only
    lines = [line for line in capsys.readouterr().out.splitlines() if "announced" in line]
    models = cfg / "models.yaml"
    assert lines == [
        f"{models}:7:49: providers.openai.keys[1].input_tpm: declared input_tpm (compared with "
        "the total tokens per minute) 3000 is below the 2000000 the provider announced for "
        f"key openai#1{lines[0].split('openai#1')[1]}",
        f"{models}:8:14: providers.openai.limits.rpm: declared rpm 500 is below the 10000 the "
        f"provider announced for key openai#0{lines[1].split('openai#0')[1]}",
    ]
    assert "[warning]" in lines[0] and "raise or remove it" in lines[0]
    assert main(["validate", "--strict", str(cfg)]) == 1


def test_validate_reads_an_announced_file_given_by_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--announced FILE` compares with a file kept elsewhere (a server's, copied); an
    unreadable file counts as empty rather than failing validate."""
    cfg = write_config(tmp_path / "cfg", MODELS.format(url="http://127.0.0.1:9"), {"d": ROUTE})
    heard = tmp_path / "heard.json"
    heard.write_text(
        json.dumps({"version": 1, "providers": {"openai": {"openai#0": {"rpm": 600}}}})
    )
    assert main(["validate", "--announced", str(heard), "--format", "json", str(cfg)]) == 0
    report = json.loads(capsys.readouterr().out)
    (warning,) = [d for d in report["diagnostics"] if "announced" in d["message"]]
    assert (warning["line"], warning["path"]) == (8, "providers.openai.limits.rpm")
    heard.write_text("{not json")
    assert main(["validate", "--announced", str(heard), str(cfg)]) == 0
    assert "announced" not in capsys.readouterr().out
