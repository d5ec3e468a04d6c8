"""A gateway's own credential passed as a `header:` provider option is a key like any other:
masked when the upstream echoes it and in every repr, while plain header options stay visible."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import Engine, EngineError
from engine.testing.clock import FakeClock
from engine.testing.fakes import FakeOpenAI, Fault
from tests.acceptance.conftest import write_config

from .conftest import Canaries, Scanner, ask

MODELS = """providers:
  gw:
    protocol: openai
    base_url: {url}
    api_key: ${{OPENAI_API_KEY}}
    options:
      "header:cf-aig-authorization": "Bearer ${{GATEWAY_TOKEN}}"
      "header:x-portkey-api-key": ${{GATEWAY_KEY}}
      "header:OpenAI-Organization": org-visible-1234
models:
  gw/gpt-4o-mini:
    capabilities: [chat, streaming]
    context_window: 128000
    input_price: 1
    output_price: 2
"""
ROUTE = "strategy: ordered\ncandidates: [gw/gpt-4o-mini]\nretries: {max_retries: 0}\n"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_gateway_credentials_are_masked_everywhere(
    stream: bool,
    canaries: Canaries,
    scanner: Scanner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An upstream quoting every header it got: no credential in the error, logs or reprs."""
    token = canaries.add("GATEWAY_TOKEN", "cfut_CANARY{}")
    key = canaries.add("GATEWAY_KEY", "pk-CANARY{}")
    monkeypatch.setenv("GATEWAY_TOKEN", token)
    monkeypatch.setenv("GATEWAY_KEY", key)
    async with FakeOpenAI() as up:
        echo = f"rejected: authorization=Bearer {token} x-portkey-api-key={key}"
        up.default_fault = (
            Fault(stream_error_after=0, message=echo) if stream else Fault(status=401, message=echo)
        )
        config = write_config(tmp_path / "cfg", MODELS.format(url=up.url), {"default": ROUTE})
        eng = Engine.from_config(config, clock=FakeClock())
        with pytest.raises(EngineError) as info:
            if stream:
                async for _ in eng.astream(ask()):
                    pass
            else:
                await eng.arun(ask())
        provider = eng.plan.providers["gw"]
        scanner.check(
            ("error", info.value),
            ("plan", eng.plan),
            ("provider", provider),
            ("health", await eng.health(probe=True, detail=True)),
            ("explain", eng.explain(ask())),
        )
        await eng.aclose()
    sent = up.last.headers
    assert sent["x-portkey-api-key"] == key and sent["cf-aig-authorization"] == f"Bearer {token}"
    assert (
        "org-visible-1234" in repr(provider) and provider.options["header:x-portkey-api-key"] == key
    )
