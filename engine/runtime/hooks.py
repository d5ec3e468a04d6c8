"""Hooks: plain async callables the engine calls around each request.

The place for logging, metrics and custom middleware without subclassing anything:
`before_request(request) -> Request | None` may return a replacement request (or raise to
veto it); `after_response(request, response) -> Mapping | None` sees every answer, streamed ones
assembled, and may return metadata to attach (`Response.metadata`; the server sends it as
`x-engine-meta-*` headers);
`on_error(request, error)` sees every failure. A hook's own exception propagates: a hook
that must never fail the call should catch its errors itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from engine.messages import Request, parse_request
from engine.result import Metadata, Response

HookName = Literal["before_request", "after_response", "on_error"]
BeforeRequest = Callable[[Request], Awaitable[Request | dict[str, Any] | None]]
AfterResponse = Callable[[Request, Response], Awaitable[Mapping[str, Any] | None]]
OnError = Callable[[Request, BaseException], Awaitable[None]]

NAMES: tuple[str, ...] = ("before_request", "after_response", "on_error")


class Hooks:
    """The registered hooks of one engine, called in registration order."""

    def __init__(self) -> None:
        self.before: list[BeforeRequest] = []
        self.after: list[AfterResponse] = []
        self.error: list[OnError] = []

    def add(self, name: str, fn: Callable[..., Awaitable[Any]]) -> None:
        """Register `fn` for the hook `name`; an unknown name is a ValueError naming all."""
        if name == "before_request":
            self.before.append(fn)
        elif name == "after_response":
            self.after.append(fn)
        elif name == "on_error":
            self.error.append(fn)
        else:
            raise ValueError(f"unknown hook {name!r}; hooks are: {', '.join(NAMES)}")

    def remove(self, name: str, fn: Callable[..., Awaitable[Any]]) -> None:
        """Unregister `fn` from the hook `name` (no error if it was not registered)."""
        groups: dict[str, list[Any]] = {
            "before_request": self.before,
            "after_response": self.after,
            "on_error": self.error,
        }
        group = groups.get(name, [])
        if fn in group:
            group.remove(fn)

    async def before_request(self, request: Request) -> Request:
        for fn in self.before:
            replaced = await fn(request)
            if replaced is not None:
                request = parse_request(replaced)  # a dict is fine too; nonsense is an error
        return request

    async def after_response(self, request: Request, response: Response) -> Response:
        """Runs every after_response hook; the response with the metadata they returned."""
        added: dict[str, str] = {}
        for fn in self.after:
            extra = await fn(request, response)
            if isinstance(extra, Mapping):
                added.update({str(k): str(v) for k, v in extra.items()})
        if not added:
            return response
        return dataclasses.replace(response, metadata=Metadata({**response.metadata, **added}))

    async def on_error(self, request: Request, error: BaseException) -> None:
        for fn in self.error:
            await fn(request, error)
