"""Server-sent events: engine StreamEvents -> OpenAI `chat.completion.chunk` lines, unbuffered.

`EventStreamResponse` is a tiny ASGI response rather than starlette's StreamingResponse
because it must do two things precisely: write each event the moment it arrives, and, when
the client disconnects, cancel the upstream call at once by closing the engine's iterator
(which releases the budget reservation). A watcher task waits for `http.disconnect` and
cancels the pump; the pump's `finally` closes the iterator on every path. A stream the
server itself cancels (the drain timeout of a shutdown) ends with an error event, so the
client knows it was cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import orjson
from starlette.types import Receive, Scope, Send

from engine.result import StreamEvent
from engine.server.errors import INTERNAL, HTTPError, to_http
from engine.server.exchange import as_function_call_delta

DONE = b"data: [DONE]\n\n"
#: The error event a stream ends with when the server stops before it finished (SIGTERM,
#: then `drain_timeout_s` passed): without it the client saw a stream that just stopped,
#: indistinguishable from a complete answer that lacked its last chunk.
SHUTTING_DOWN = HTTPError(
    503,
    "the server is shutting down and its drain timeout cut this stream; retry the request",
    "server_error",
    "server_shutting_down",
)


class Encoder(Protocol):
    """Events as one API's stream frames: each event, the end, an error after the start."""

    def encode(self, event: StreamEvent) -> bytes: ...

    def finish(self) -> bytes: ...

    def error(self, error: HTTPError) -> bytes: ...


class ChunkEncoder:
    """Turns events into SSE bytes with one id/created per stream and usage when asked for."""

    def finish(self) -> bytes:
        return DONE

    def error(self, error: HTTPError) -> bytes:
        return error_event(error)

    def __init__(self, include_usage: bool, legacy: bool = False) -> None:
        self.include_usage = include_usage
        self.legacy = legacy  # a `functions` caller: tool calls streamed as function_call
        self.id = ""
        self.created = 0
        self._first = True

    def encode(self, event: StreamEvent) -> bytes:
        if self._first:
            self.id = event.id or f"chatcmpl-{uuid.uuid4().hex}"
            self.created = event.created or int(time.time())
        body = event.to_openai()
        body["id"], body["created"] = self.id, self.created
        out = b""
        c = event.chunk
        send = self._first or c.content or c.tool_calls or c.finish_reason is not None
        if self.legacy and not as_function_call_delta(body["choices"][0]):
            send = self._first
        if send:
            if self._first:
                body["choices"][0]["delta"] = {"role": "assistant", **body["choices"][0]["delta"]}
            out = b"data: " + orjson.dumps(body) + b"\n\n"
        self._first = False
        if c.usage is not None and self.include_usage:
            usage = {
                "prompt_tokens": c.usage.input_tokens,
                "completion_tokens": c.usage.output_tokens,
                "total_tokens": c.usage.total_tokens,
            }
            tail = {**body, "choices": [], "usage": usage}
            out += b"data: " + orjson.dumps(tail) + b"\n\n"
        return out


def sse_event(kind: str, data: dict[str, Any]) -> bytes:
    """One named server-sent event (`event: kind`), as Anthropic and Responses send them."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def error_event(error: HTTPError) -> bytes:
    return b"data: " + orjson.dumps(error.body()) + b"\n\n"


class EventStreamResponse:
    """An ASGI response that relays engine events as SSE, chunk by chunk."""

    def __init__(
        self,
        first: StreamEvent,
        rest: AsyncIterator[StreamEvent],
        encoder: Encoder,
        headers: list[tuple[bytes, bytes]],
        on_event: Callable[[StreamEvent], None],
        on_end: Callable[[BaseException | None, bool], Awaitable[None] | None],
    ) -> None:
        self.first = first
        self.rest = rest
        self.encoder = encoder
        self.headers = headers
        self.on_event = on_event
        self.on_end = on_end
        self.disconnected = False
        self.done = False  # set before the last write: a disconnect after it is normal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        # The first chunk goes out before the watcher exists: it is ready, and every
        # microsecond before it is time to first token. A disconnect meanwhile is seen next.
        watcher: asyncio.Task[None] | None = None
        error: BaseException | None = None
        try:
            await self._start(send)
            watcher = asyncio.create_task(self._watch(receive, task))
            await self._pump(send)
        except asyncio.CancelledError:
            if not self.disconnected:  # the server cut it: shutdown's drain timeout passed
                await self._send_frame(send, self.encoder.error(SHUTTING_DOWN))
                raise
            task.uncancel()
        except Exception as exc:  # the engine failed after the first chunk
            error = exc
            await self._send_error(send, exc)
        finally:
            if watcher is not None:
                watcher.cancel()
            with contextlib.suppress(BaseException):
                await aclose_events(self.rest)
        result = self.on_end(error, self.disconnected)
        if result is not None:
            await result

    async def _start(self, send: Send) -> None:
        self.on_event(self.first)
        first = self.encoder.encode(self.first)
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        await send({"type": "http.response.body", "body": first, "more_body": True})

    async def _pump(self, send: Send) -> None:
        async for event in self.rest:
            self.on_event(event)
            data = self.encoder.encode(event)
            if data:
                await send({"type": "http.response.body", "body": data, "more_body": True})
        self.done = True
        await send(
            {"type": "http.response.body", "body": self.encoder.finish(), "more_body": False}
        )

    async def _send_error(self, send: Send, exc: Exception) -> None:
        await self._send_frame(send, self.encoder.error(to_http(exc) or INTERNAL))

    async def _send_frame(self, send: Send, frame: bytes) -> None:
        """The stream's last frame (an error event): best effort, the socket may be gone."""
        self.done = True
        with contextlib.suppress(Exception):
            await send({"type": "http.response.body", "body": frame, "more_body": False})

    async def _watch(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if self.done:
                    return
                self.disconnected = True
                task.cancel()
                return


async def aclose_events(iterator: AsyncIterator[StreamEvent]) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


SSE_HEADERS = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
)
