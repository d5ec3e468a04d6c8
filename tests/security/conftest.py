"""Shared set-up for the end-to-end secrecy suite: canary keys, fake upstreams, a scanner.

A canary is a distinctive random API key placed where a user would put a real one (the
environment, or literally in models.yaml). Every test drives the stack through its public
surface and then hands everything observable to `Scanner.check`, which fails when any
canary, or the random core of one (so a half-redacted key is caught too), shows up.
"""

from __future__ import annotations

import json
import logging
import secrets
import traceback
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine.testing.fakes import FakeAnthropic, FakeAzure, FakeGemini, FakeOpenAI, FakeUpstream
from tests.acceptance.conftest import ENV_VARS, write_config

#: Pool keys and the Azure key have no vendor prefix, so the shape-based half of `redact`
#: cannot hide a leak of them: only knowing the key can.
POOL_VARS = ("POOL_KEY_A", "POOL_KEY_B", "POOL_KEY_C")


@dataclass
class Canaries:
    """The canary key per environment variable, and the random core of each."""

    keys: dict[str, str]
    cores: dict[str, str]

    @classmethod
    def fresh(cls) -> Canaries:
        cores = {name: secrets.token_hex(10) for name in (*_SHAPES, *POOL_VARS)}
        keys = {name: _SHAPES.get(name, "pool-{}-CANARY").format(c) for name, c in cores.items()}
        return cls(keys, cores)

    def add(self, name: str, shape: str) -> str:
        """A new canary (`shape` with `{}` for its random core), watched from now on."""
        core = self.cores[name] = secrets.token_hex(10)
        key = self.keys[name] = shape.format(core)
        return key

    def needles(self) -> Iterator[str]:
        yield from self.keys.values()
        yield from self.cores.values()


_SHAPES = {
    "OPENAI_API_KEY": "sk-proj-CANARY{}",
    "ANTHROPIC_API_KEY": "sk-ant-api03-CANARY{}",
    "GEMINI_API_KEY": "AIzaSyCANARY{}",
    "AZURE_OPENAI_API_KEY": "{}CANARYazure",  # Azure keys are bare hex
}


def text_of(thing: Any) -> str:
    """Everything printable about `thing`: str, repr, JSON, and an exception's whole story."""
    if isinstance(thing, bytes):
        return thing.decode("latin-1")
    if isinstance(thing, BaseException):
        return "\n".join(_exception_texts(thing))
    parts = [str(thing), repr(thing)]
    with suppress(TypeError, ValueError):
        parts.append(json.dumps(thing, default=repr))
    return "\n".join(parts)


def _exception_texts(err: BaseException) -> Iterator[str]:
    """str/repr/traceback of the error, its cause/context chain, args and recorded attempts."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    yield "".join(traceback.format_exception(err))
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield str(e)
        yield repr(e)
        yield repr(e.args)
        yield repr(vars(e)) if hasattr(e, "__dict__") else ""
        for attempt in getattr(e, "attempts", ()):
            yield repr(attempt)
        todo += [e.__cause__, e.__context__]


@dataclass
class Scanner:
    """Collects what the stack exposed and fails on any canary in it."""

    canaries: Canaries
    caplog: pytest.LogCaptureFixture
    seen: list[tuple[str, str]] = field(default_factory=list)

    def add(self, label: str, thing: Any) -> None:
        self.seen.append((label, text_of(thing)))

    def check(self, *extra: tuple[str, Any]) -> None:
        """Assert no canary appears in anything added, the extras, or any captured log."""
        for label, thing in extra:
            self.add(label, thing)
        for record in self.caplog.records:
            self.add(f"log {record.name}", _record_text(record))
        leaks = [
            (label, needle)
            for label, text in self.seen
            for needle in self.canaries.needles()
            if needle in text
        ]
        assert not leaks, f"canary leaked in: {sorted({label for label, _ in leaks})}"


def _record_text(record: logging.LogRecord) -> str:
    """A log record as any handler could render it, exception traceback included."""
    text = [record.getMessage(), repr(record.args), repr(record.msg)]
    if record.exc_info and record.exc_info[1] is not None:
        text.extend(_exception_texts(record.exc_info[1]))
    if record.exc_text:
        text.append(record.exc_text)
    return "\n".join(text)


@pytest.fixture
def canaries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Canaries:
    """A clean environment holding fresh canary keys (and the ledger in tmp)."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ENGINE_LEDGER", str(tmp_path / "ledger.sqlite3"))
    found = Canaries.fresh()
    for name, value in found.keys.items():
        monkeypatch.setenv(name, value)
    return found


@pytest.fixture
def scanner(canaries: Canaries, caplog: pytest.LogCaptureFixture) -> Scanner:
    """A scanner with every logger captured at DEBUG (aiohttp, uvicorn and asyncio too)."""
    caplog.set_level(logging.DEBUG)
    for name in ("aiohttp", "uvicorn", "uvicorn.error", "uvicorn.access", "asyncio", "engine"):
        caplog.set_level(logging.DEBUG, logger=name)
    return Scanner(canaries, caplog)


@dataclass
class Upstreams:
    """One fake per protocol; `pool` is an OpenAI-protocol upstream behind a key pool."""

    openai: FakeOpenAI
    anthropic: FakeAnthropic
    gemini: FakeGemini
    azure: FakeAzure
    pool: FakeOpenAI

    def all(self) -> tuple[FakeUpstream, ...]:
        return (self.openai, self.anthropic, self.gemini, self.azure, self.pool)

    def fail_with(self, fault: Any) -> None:
        """Every upstream answers every request with this fault."""
        for up in self.all():
            up.default_fault = fault


@asynccontextmanager
async def upstreams(canaries: Canaries) -> AsyncIterator[Upstreams]:
    """The five fakes, each accepting exactly the canary the config gives it."""
    k = canaries.keys
    async with AsyncExitStack() as stack:
        ups = Upstreams(
            await stack.enter_async_context(FakeOpenAI(api_key=k["OPENAI_API_KEY"])),
            await stack.enter_async_context(FakeAnthropic(api_key=k["ANTHROPIC_API_KEY"])),
            await stack.enter_async_context(FakeGemini(api_key=k["GEMINI_API_KEY"])),
            await stack.enter_async_context(FakeAzure(api_key=k["AZURE_OPENAI_API_KEY"])),
            await stack.enter_async_context(FakeOpenAI()),
        )
        yield ups


MODEL = "    capabilities: [chat, streaming]\n    context_window: 128000\n"
MODEL += "    input_price: 1\n    output_price: 2\n"
CANDIDATES = [
    "openai/gpt-4o-mini",
    "anthropic/claude-3-5-haiku",
    "gemini/gemini-2.0-flash",
    "azure/gpt-4o",
    "pool/gpt-4o-mini",
]


def models_yaml(ups: Upstreams, timeouts: str = "{connect_s: 2, total_s: 2}") -> str:
    """Every keyed protocol on its fake, keys from the canary variables; a 3-key pool."""
    pool = "\n".join(f"      - ${{{v}}}" for v in POOL_VARS)
    providers = f"""providers:
  openai:
    protocol: openai
    base_url: {ups.openai.url}
    api_key: ${{OPENAI_API_KEY}}
    timeouts: {timeouts}
  anthropic:
    protocol: anthropic
    base_url: {ups.anthropic.url}
    api_key: ${{ANTHROPIC_API_KEY}}
    timeouts: {timeouts}
  gemini:
    protocol: gemini
    base_url: {ups.gemini.url}
    api_key: ${{GEMINI_API_KEY}}
    timeouts: {timeouts}
  azure:
    protocol: azure
    base_url: {ups.azure.url}
    api_key: ${{AZURE_OPENAI_API_KEY}}
    options: {{api_version: "2024-10-21"}}
    timeouts: {timeouts}
  pool:
    protocol: openai
    base_url: {ups.pool.url}
    keys:
{pool}
    timeouts: {timeouts}
"""
    models = "".join(f"  {m}:\n{MODEL}" for m in CANDIDATES)
    return providers + "models:\n" + models


ROUTE = (
    "strategy: ordered\n"
    f"candidates: [{', '.join(CANDIDATES)}]\n"
    "retries: {max_retries: 1, backoff_initial_s: 1}\n"
    "fallback: {max_attempts: 20}\n"
)


#: For a server in another process (no FakeClock there): retries without backoff sleeps.
NO_BACKOFF = ROUTE.replace("backoff_initial_s: 1", "backoff_initial_s: 0")


def stack_config(directory: Path, ups: Upstreams, route: str = ROUTE, **kw: Any) -> Path:
    """A config directory wiring every fake in, with policy `default` over all of them."""
    return write_config(directory, models_yaml(ups, **kw), {"default": route})


def ask(text: str = "hello there") -> dict[str, Any]:
    """One short user message."""
    return {"messages": [{"role": "user", "content": text}], "max_tokens": 20}
