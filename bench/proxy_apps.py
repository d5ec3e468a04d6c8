"""The processes the proxy benchmark starts: a fast fake upstream and candidate web stacks.

Each candidate does the same job (read the body, parse it with orjson, forward it with one
pooled aiohttp client, return or stream the answer) so the figures compare the web stacks
themselves. `floor` is the bare ~30-line uvicorn + aiohttp + orjson pass-through that the
issue names as the floor for Python. Run one with
`python -m bench.proxy_apps ROLE PORT [UPSTREAM_URL]`.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import aiohttp
import orjson

# --------------------------------------------------------------------------- upstream

_ANSWER = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "pong"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}


def _sse_chunks(n: int) -> list[bytes]:
    base = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
    }
    out = []
    for i in range(n):
        delta = {"role": "assistant", "content": ""} if i == 0 else {"content": f"t{i} "}
        out.append(
            b"data: "
            + orjson.dumps(
                {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            )
            + b"\n\n"
        )
    end = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    usage = {
        **base,
        "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n},
    }
    out.append(b"data: " + orjson.dumps(end) + b"\n\n")
    out.append(b"data: " + orjson.dumps(usage) + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return out


_BODY = orjson.dumps(_ANSWER)
_CHUNKS = _sse_chunks(8)
_MODELS = orjson.dumps(
    {
        "object": "list",
        "data": [{"id": "gpt-4o-mini", "object": "model", "created": 1, "owned_by": "bench"}],
    }
)


def _delay_of(body: dict[str, Any]) -> float:
    """A message 'delay:N' asks for N ms between stream chunks (the 1,000-stream RSS test)."""
    text = str(body.get("messages", [{}])[-1].get("content", ""))
    return int(text[6:]) / 1000 if text.startswith("delay:") else 0.0


async def _upstream_chat(request: Any) -> Any:
    from aiohttp import web

    body = orjson.loads(await request.read())
    if not body.get("stream"):
        return web.Response(body=_BODY, content_type="application/json")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    delay = _delay_of(body)
    for chunk in _CHUNKS:
        await resp.write(chunk)
        if delay:
            await asyncio.sleep(delay)
    return resp


async def _upstream_models(request: Any) -> Any:
    from aiohttp import web

    return web.Response(body=_MODELS, content_type="application/json")


async def _otlp_sink(request: Any) -> Any:
    """OTLP/HTTP trace export: read and dropped (the traced engine's collector)."""
    from aiohttp import web

    await request.read()
    return web.Response(body=b"", content_type="application/x-protobuf")


def run_upstream(port: int) -> None:
    from aiohttp import web

    app = web.Application()
    app.router.add_post("/v1/chat/completions", _upstream_chat)
    app.router.add_get("/v1/models", _upstream_models)
    app.router.add_post("/v1/traces", _otlp_sink)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# --------------------------------------------------------------------------- floor (raw ASGI)


class Floor:
    """The bare pass-through: raw ASGI, one aiohttp session, orjson. About the floor."""

    def __init__(self, upstream: str) -> None:
        self.url = upstream + "/v1/chat/completions"
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))
        req = orjson.loads(body or b"{}")
        async with self.session.post(
            self.url, data=orjson.dumps(req), headers={"Content-Type": "application/json"}
        ) as up:
            ctype = up.headers.get("Content-Type", "application/json").encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": up.status,
                    "headers": [(b"content-type", ctype)],
                }
            )
            if not req.get("stream"):
                await send({"type": "http.response.body", "body": await up.read()})
                return
            async for chunk in up.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})


def run_uvicorn(app: Any, port: int, fast: bool) -> None:
    import uvicorn

    loop = "uvloop" if fast else "asyncio"
    http = "httptools" if fast else "h11"
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop=loop,
        http=http,
        log_level="warning",
        access_log=False,
    )


# --------------------------------------------------------------------------- starlette


def starlette_app(upstream: str) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    url = upstream + "/v1/chat/completions"
    state: dict[str, aiohttp.ClientSession] = {}

    async def chat(request: Request) -> Response:
        session = state.get("s") or state.setdefault(
            "s", aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))
        )
        req = orjson.loads(await request.body())
        if not req.get("stream"):
            async with session.post(
                url, data=orjson.dumps(req), headers={"Content-Type": "application/json"}
            ) as up:
                return Response(await up.read(), media_type="application/json")

        async def relay() -> Any:
            async with session.post(
                url, data=orjson.dumps(req), headers={"Content-Type": "application/json"}
            ) as up:
                async for chunk in up.content.iter_any():
                    yield chunk

        return StreamingResponse(relay(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


# --------------------------------------------------------------------------- aiohttp.web


def run_aiohttp_web(upstream: str, port: int) -> None:
    from aiohttp import web

    url = upstream + "/v1/chat/completions"
    state: dict[str, aiohttp.ClientSession] = {}

    async def chat(request: web.Request) -> web.StreamResponse:
        session = state.get("s") or state.setdefault(
            "s", aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))
        )
        req = orjson.loads(await request.read())
        async with session.post(
            url, data=orjson.dumps(req), headers={"Content-Type": "application/json"}
        ) as up:
            if not req.get("stream"):
                return web.Response(body=await up.read(), content_type="application/json")
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def main(argv: list[str]) -> None:
    role, port = argv[0], int(argv[1])
    upstream = argv[2] if len(argv) > 2 else ""
    if role == "upstream":
        run_upstream(port)
    elif role == "floor":
        run_uvicorn(Floor(upstream), port, fast=True)
    elif role == "starlette-fast":
        run_uvicorn(starlette_app(upstream), port, fast=True)
    elif role == "starlette-plain":
        run_uvicorn(starlette_app(upstream), port, fast=False)
    elif role == "aiohttp-web":
        run_aiohttp_web(upstream, port)
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
