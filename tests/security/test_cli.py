"""`python -m engine validate / explain / costs` never print a key, even when models.yaml
holds keys written literally and is wrong in the very place a key sits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import Engine, EngineError
from engine.cli import main
from engine.testing.clock import FakeClock
from engine.testing.fakes import Fault

from .conftest import Canaries, Scanner, ask, stack_config, upstreams

HEAD = "providers:\n  p:\n    protocol: openai\n    base_url: http://127.0.0.1:9/v1\n"
TAIL = (
    "models:\n  p/m:\n    capabilities: [chat]\n    context_window: 8000\n"
    "    input_price: 1\n    output_price: 1\n"
)
#: name -> provider lines with {K} (an sk- key) and {A} (a bare hex key) written literally.
LITERAL = {
    "valid": "    api_key: {K}\n    keys: [{A}, {{key: {A}x, rpm: 5}}]\n",
    "key-as-list": "    api_key: [{K}]\n",
    "key-as-mapping": "    api_key: {{value: {A}}}\n",
    "pool-as-string": "    keys: {A}\n",
    "pool-as-mapping": "    keys: {{{A}: 1}}\n",
    "pool-entry-bad-limit": "    keys: [{{key: {A}, rpm: fast}}]\n",
    "pool-entry-unknown-field": "    keys: [{{key: {A}, rpmm: 1}}]\n",
    "duplicate-in-pool": "    keys: [{A}, {A}]\n",
    "tagged-int": "    api_key: !!int {A}\n",
    "digits-too-large": "    api_key: 98765432109876543210{D}\n",
    "header-option-as-list": "    api_key: {K}\n    options: {{'header:x-api-key': [{A}]}}\n",
    "misspelt-field": "    api_kye: {K}\n",
}


def _literal_config(directory: Path, body: str, c: Canaries) -> Path:
    k, a = c.keys["OPENAI_API_KEY"], c.keys["AZURE_OPENAI_API_KEY"]
    digits = str(int(c.cores["OPENAI_API_KEY"], 16))
    (directory / "routes").mkdir(parents=True)
    (directory / "models.yaml").write_text(HEAD + body.format(K=k, A=a, D=digits) + TAIL)
    (directory / "routes" / "default.yaml").write_text("strategy: ordered\ncandidates: [p/m]\n")
    return directory


@pytest.mark.parametrize("case", LITERAL, ids=str)
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_validate_never_quotes_a_literal_key(
    case: str,
    fmt: str,
    canaries: Canaries,
    scanner: Scanner,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """validate reports the problem at the key's line but never shows the key's value."""
    config = _literal_config(tmp_path / "cfg", LITERAL[case], canaries)
    code = main(["validate", str(config), "--format", fmt])
    out = capsys.readouterr()
    assert code == (0 if case in ("valid", "duplicate-in-pool") else 1)
    assert "Traceback" not in out.err
    digits = str(int(canaries.cores["OPENAI_API_KEY"], 16))
    assert digits not in out.out + out.err
    scanner.check(("stdout", out.out), ("stderr", out.err))


def test_loading_a_literal_key_config_keeps_it_secret(
    canaries: Canaries, scanner: Scanner, tmp_path: Path
) -> None:
    """Engine.from_config's ConfigError for a misplaced literal key does not carry the key."""
    config = _literal_config(tmp_path / "cfg", LITERAL["key-as-list"], canaries)
    with pytest.raises(EngineError) as info:
        Engine.from_config(config)
    scanner.check(("error", info.value), ("diagnostics", getattr(info.value, "diagnostics", ())))


async def test_explain_and_costs_after_failures_show_no_key(
    canaries: Canaries, scanner: Scanner, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After calls failed with key-echoing upstreams, explain and costs print no key."""
    async with upstreams(canaries) as ups:
        ups.fail_with(Fault(status=401, echo_key=True))
        config = stack_config(tmp_path / "cfg", ups)
        eng = Engine.from_config(config, clock=FakeClock())
        with pytest.raises(EngineError):
            await eng.arun(ask())
        await eng.aclose()
    request = tmp_path / "request.json"
    request.write_text(json.dumps(ask()))
    ledger = str(tmp_path / "ledger.sqlite3")
    for argv in (
        ["explain", "--config", str(config), "--request", str(request)],
        ["explain", "--config", str(config), "--request", str(request), "--format", "json"],
        ["costs", "--ledger", ledger],
        ["costs", "--ledger", ledger, "--format", "json", "--by", "provider"],
        ["validate", str(config), "--format", "json"],
    ):
        code = main(argv)
        out = capsys.readouterr()
        assert code == 0, (argv, out.err)
        scanner.add(" ".join(argv[:1]), out.out + out.err)
    scanner.check()
