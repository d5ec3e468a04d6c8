"""Server-sent events and NDJSON decoding over a stream of raw lines.

Why hand-written: the transport is the engine's own (chosen by measurement, see
bench/adapters.py), and the well-kept SSE client libraries are either bound to httpx
(`httpx-sse`) or unmaintained (`aiohttp-sse-client`, last release 2021). The WHATWG event-
stream rules that matter for LLM streams fit in one short function: `event:`/`data:` fields,
multi-line data joined by newlines, `:` comment lines (OpenRouter keep-alives) skipped, an
event dispatched on a blank line, `\\r\\n` or `\\n` line endings, and a final event without
a trailing blank line. One deliberate deviation: events whose data is blank are dropped
(some OpenAI-compatible servers send bare `data:` lines as keep-alives; no LLM protocol
gives them a meaning).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

__all__ = ["SSEEvent", "iter_ndjson", "iter_sse"]


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str
    data: str


async def iter_sse(lines: AsyncIterator[bytes]) -> AsyncIterator[SSEEvent]:
    """Events from raw lines (each without its line terminator)."""
    event = ""
    data: list[str] = []
    async for raw in lines:
        line = raw.decode("utf-8", "replace")
        if not line:
            if data and any(data):
                yield SSEEvent(event or "message", "\n".join(data))
            event, data = "", []
            continue
        if line[0] == ":":
            continue
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    if data and any(data):
        yield SSEEvent(event or "message", "\n".join(data))


async def iter_ndjson(lines: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Non-blank lines of a newline-delimited JSON stream (Ollama)."""
    async for raw in lines:
        if raw.strip():
            yield raw
