"""The machinery every fake upstream shares: a loopback aiohttp server, request recording,
and fault injection by script or per request.

A fake is protocol-faithful (subclasses render each provider's real bodies, streams, headers
and errors; the official SDKs parse them in tests/providers) and deterministic: its answer
is derived from the request through `engine.providers.mock.script_answer`, so a test that
checks content cannot pass by accident.

Faults (`Fault`) are taken from the front of the script queue (`up.script([...])`), else
from a request header `x-fake-fault: {"status": 429, ...}` (JSON of Fault fields), else from
`up.default_fault`. Sleeps are real but meant to be tiny (tests use milliseconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any, Self

import orjson
from aiohttp import web

from engine.providers.embeddings import mock_vector
from engine.providers.mock import ScriptedAnswer, estimate_tokens

from ._shared import (
    REFUSAL,
    Ask,
    BadRequest,
    ExtraUsage,
    Fault,
    RecordedRequest,
    json_response,
    split_text,
    sse,
    text_of,
)

__all__ = [
    "REFUSAL",
    "Ask",
    "BadRequest",
    "ExtraUsage",
    "FakeUpstream",
    "Fault",
    "RecordedRequest",
    "json_response",
    "split_text",
    "sse",
    "text_of",
]


class FakeUpstream:
    """Base class: subclasses add routes and render their protocol."""

    name = "fake"
    stream_content_type = "text/event-stream"

    def __init__(self, *, api_key: str | None = None, seed: int = 0) -> None:
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self.sent: list[tuple[str, Any]] = []  # ("response" | "chunk" | "error", JSON sent)
        self.default_fault = Fault()
        self.extra_usage = ExtraUsage()  # reported with every answer (cache, reasoning)
        self._script: deque[Fault] = deque()
        self._rng = random.Random(seed)
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None
        self._count = 0
        self._in_flight = 0
        self.peak_in_flight = 0  # most requests handled at once (to observe pool limits)
        self.port = 0

    # ----- public API -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL a client should use (protocol-specific path prefix included)."""
        return f"http://127.0.0.1:{self.port}{self.base_path}"

    base_path = ""

    def script(self, faults: Iterable[Fault | int]) -> None:
        """Queue faults for the next requests, in order (an int is shorthand for a status)."""
        self._script.extend(Fault(status=f) if isinstance(f, int) else f for f in faults)

    @property
    def last(self) -> RecordedRequest:
        """The most recent request received."""
        return self.requests[-1]

    async def start(self, port: int = 0) -> Self:
        """Listen on 127.0.0.1 (`port` 0 picks a free one)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        self.add_routes(app)
        self._closing = asyncio.Event()
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.05
        )
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock).start()
        return self

    async def stop(self) -> None:
        if self._closing is not None:
            self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @classmethod
    @contextlib.contextmanager
    def in_thread(cls, **kwargs: Any) -> Iterator[Self]:
        """Run the fake on its own event loop in a daemon thread (for sync code and demos)."""
        fake = cls(**kwargs)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=f"{cls.__name__}", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(fake.start(), loop).result(timeout=30)
            yield fake
        finally:
            asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(timeout=30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            loop.close()

    # ----- subclass hooks -----------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def auth_error(self, request: web.Request) -> web.Response | None:
        """An error response when the request's credentials are missing or wrong."""
        return None

    def parse(self, request: web.Request, body: Any) -> Ask:
        raise NotImplementedError

    def error_response(
        self, status: int, message: str, code: str | None, headers: Mapping[str, str]
    ) -> web.Response:
        raise NotImplementedError

    def render(self, ask: Ask, answer: ScriptedAnswer) -> dict[str, Any]:
        raise NotImplementedError

    def frames(self, ask: Ask, answer: ScriptedAnswer) -> tuple[list[bytes], list[bytes]]:
        """Stream frames and the terminator frames (cut off by `truncate_after`)."""
        raise NotImplementedError

    def stream_error_frame(self, message: str, code: str | None) -> bytes:
        raise NotImplementedError

    def malformed_frame(self) -> bytes:
        return b'data: {"choices": [ this is not json\n\n'

    def success_headers(self) -> dict[str, str]:
        """Headers of a successful answer (request ids, rate-limit state)."""
        return {}

    def error_message(self, status: int) -> str:
        return _DEFAULT_MESSAGES.get(status, f"fake {self.name} error {status}")

    # ----- request handling ---------------------------------------------------------------

    def _fault_for(self, request: web.Request) -> Fault:
        if self._script:
            with contextlib.suppress(IndexError):
                return self._script.popleft()
        header = request.headers.get("x-fake-fault")
        if header:
            return Fault.from_json(header)
        return self.default_fault

    async def _sleep(self, delay: float | tuple[float, float]) -> None:
        seconds = self._rng.uniform(*delay) if isinstance(delay, tuple) else delay
        if seconds > 0:
            await asyncio.sleep(seconds)

    async def _hang(self) -> None:
        assert self._closing is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), timeout=600)

    async def _record(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        self.requests.append(
            RecordedRequest(
                request.method,
                request.path,
                dict(request.query),
                {k.lower(): v for k, v in request.headers.items()},
                body,
                raw,
            )
        )
        return body

    def _error(self, fault: Fault, status: int) -> web.Response:
        headers: dict[str, str] = {}
        if status == 429:  # a real 429 still reports the (now exhausted) limits
            headers = {k: "0" if "remaining" in k else v for k, v in self.success_headers().items()}
        headers.update(fault.headers)
        if fault.retry_after is not None:
            headers["retry-after"] = str(max(1, round(fault.retry_after)))
            if fault.retry_after != int(fault.retry_after):
                headers["retry-after-ms"] = str(int(fault.retry_after * 1000))
        message = fault.message or self.error_message(status)
        return self.error_response(status, message, fault.code, headers)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Record, apply the fault, check credentials, then answer in the protocol's shape."""
        self._in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
        try:
            return await self._handle(request)
        finally:
            self._in_flight -= 1

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        self._count += 1
        try:
            fault = self._fault_for(request)
        except (ValueError, TypeError) as exc:
            return self.error_response(400, f"bad x-fake-fault header: {exc}", None, {})
        await self._sleep(fault.latency)
        if fault.echo_key:
            fault = _with_echo(fault, request)
        if fault.reset:
            return self._abort(request)
        denied = self.auth_error(request)
        if denied is not None:
            return denied
        if fault.status is not None:
            return self._error(fault, fault.status)
        try:
            ask = self.parse(request, body)
        except BadRequest as exc:
            return self.error_response(400, str(exc), None, {})
        answer = ask.answer(self.call_id_prefix)
        if fault.refuse:
            answer = ScriptedAnswer(REFUSAL, (), "content_filter", answer.input_tokens, 7)
        if ask.stream:
            return await self._stream(request, ask, answer, fault)
        return await self._complete(request, ask, answer, fault)

    call_id_prefix = "call_"

    async def handle_embed(self, request: web.Request) -> web.StreamResponse:
        """An embeddings request: recorded, faults and credentials applied as for chat,
        then one deterministic vector per text (engine.providers.embeddings.mock_vector)."""
        body = await self._record(request)
        fault = self._fault_for(request)
        denied = self.auth_error(request)
        if denied is not None:
            return denied
        if fault.status is not None:
            return self._error(fault, fault.status)
        try:
            model, texts, size = self.parse_embed(request, body)
        except BadRequest as exc:
            return self.error_response(400, str(exc), None, {})
        vectors = [list(mock_vector(t, size or 8)) for t in texts]
        tokens = sum(estimate_tokens(t) for t in texts)
        return json_response(200, self.render_embed(model, vectors, tokens), self.success_headers())

    def parse_embed(self, request: web.Request, body: Any) -> tuple[str, list[str], int | None]:
        """(model, texts, dimensions) of an embeddings body; BadRequest as the API's 400."""
        raise BadRequest("this fake has no embeddings")

    def render_embed(self, model: str, vectors: list[list[float]], tokens: int) -> dict[str, Any]:
        raise NotImplementedError

    def _abort(self, request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)

    async def _complete(
        self, request: web.Request, ask: Ask, answer: ScriptedAnswer, fault: Fault
    ) -> web.StreamResponse:
        payload = (
            b'{"id": "x", "choices": [ {'
            if fault.malformed
            else orjson.dumps(self.render(ask, answer))
        )
        headers = {**self.success_headers(), **fault.headers, "Content-Type": "application/json"}
        if not (fault.stall or fault.first_token_delay or fault.truncate_after is not None):
            return web.Response(body=payload, headers=headers)
        resp = web.StreamResponse(headers=headers)
        resp.content_length = len(payload)
        await resp.prepare(request)
        if fault.stall:
            await self._hang()
            return resp
        await self._sleep(fault.first_token_delay)
        if fault.truncate_after is not None:
            await resp.write(payload[: len(payload) // 2])
            return self._abort(request)
        await resp.write(payload)
        await resp.write_eof()
        return resp

    async def _stream(
        self, request: web.Request, ask: Ask, answer: ScriptedAnswer, fault: Fault
    ) -> web.StreamResponse:
        headers = {**self.success_headers(), **fault.headers}
        headers["Content-Type"] = self.stream_content_type
        headers["Cache-Control"] = "no-cache"
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        if fault.stall:
            await self._hang()
            return resp
        await self._sleep(fault.first_token_delay)
        body, tail = self.frames(ask, answer)
        for index, frame in enumerate(body):
            if fault.truncate_after is not None and index >= fault.truncate_after:
                await resp.write_eof()
                return resp
            if fault.reset_after is not None and index >= fault.reset_after:
                return self._abort(request)
            if fault.stream_error_after is not None and index >= fault.stream_error_after:
                message = fault.message or "Internal server error"
                await resp.write(self.stream_error_frame(message, fault.code))
                await resp.write_eof()
                return resp
            if fault.malformed and index == min(1, len(body) - 1):
                await resp.write(self.malformed_frame())
            await self._write(resp, frame, fault)
        for frame in tail:
            await self._write(resp, frame, fault)
        await resp.write_eof()
        return resp

    async def _write(self, resp: web.StreamResponse, frame: bytes, fault: Fault) -> None:
        """One frame, whole or in `trickle_bytes` pieces, each followed by the trickle delay."""
        size = fault.trickle_bytes or len(frame) or 1
        for start in range(0, len(frame), size):
            await resp.write(frame[start : start + size])
            await self._sleep(fault.trickle)
            if fault.trickle_bytes:
                await asyncio.sleep(0)  # let the reader see the piece on its own


#: Where each protocol carries the key (header, prefix), and Gemini's `?key=`.
_KEY_HEADERS = (("Authorization", "Bearer "), ("x-api-key", ""), ("api-key", ""))


def presented_credential(request: web.Request) -> str:
    """The API key the request carries, wherever its protocol puts it ("" if none)."""
    for name, prefix in (*_KEY_HEADERS, ("x-goog-api-key", "")):
        value = request.headers.get(name, "")
        if value.startswith(prefix) and value[len(prefix) :]:
            return value[len(prefix) :]
    return request.query.get("key", "")


def _with_echo(fault: Fault, request: web.Request) -> Fault:
    """The fault with the presented key appended to its message (status or in-stream)."""
    base = fault.message or (
        _DEFAULT_MESSAGES.get(fault.status, "error") if fault.status else "Internal server error"
    )
    return replace(fault, message=f"{base} Key provided: {presented_credential(request)}.")


_DEFAULT_MESSAGES = {
    400: "Invalid request.",
    401: "Incorrect API key provided.",
    403: "You are not allowed to use this model.",
    404: "The model does not exist or you do not have access to it.",
    429: "Rate limit reached for requests. Please try again later.",
    500: "The server had an error while processing your request.",
    502: "Bad gateway.",
    503: "The engine is currently overloaded, please try again later.",
    504: "Gateway timeout.",
    529: "Overloaded",
}
