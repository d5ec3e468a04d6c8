"""The OpenAI adapter computes its URL and headers once per endpoint only when they are the
package's own; a subclass defined elsewhere is asked every call (its headers may change)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from engine.endpoints import Endpoint
from engine.messages import parse_request
from engine.providers.http import Reply
from engine.providers.openai import OpenAIAdapter

ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
)
REQUEST = parse_request({"messages": [{"role": "user", "content": "hello"}]})
ENDPOINT = Endpoint("p", "openai", "http://127.0.0.1:1/v1", "m")


class Transport:
    """Records the headers of every request and answers each with ANSWER."""

    def __init__(self) -> None:
        self.sent: list[dict[str, str]] = []

    async def post(
        self, endpoint: Endpoint, url: str, headers: Mapping[str, str], body: bytes
    ) -> Reply:
        self.sent.append(dict(headers))
        return Reply(200, CIMultiDictProxy(CIMultiDict()), ANSWER)


class RotatingToken(OpenAIAdapter):
    """A subclass outside the package whose header changes on every call."""

    def __init__(self, http: Any) -> None:
        super().__init__(http)
        self.issued = 0

    def headers(self, endpoint: Endpoint) -> dict[str, str]:
        self.issued += 1
        return {"Authorization": f"Bearer token-{self.issued}"}


async def test_a_foreign_subclass_is_asked_for_headers_every_call() -> None:
    transport = Transport()
    adapter = RotatingToken(transport)
    for _ in range(2):
        assert (await adapter.complete(REQUEST, ENDPOINT)).content == "hi"
    assert [h["Authorization"] for h in transport.sent] == ["Bearer token-1", "Bearer token-2"]


async def test_the_package_adapter_sends_the_same_headers_every_call() -> None:
    transport = Transport()
    adapter = OpenAIAdapter(transport)  # type: ignore[arg-type]
    for _ in range(2):
        assert (await adapter.complete(REQUEST, ENDPOINT)).content == "hi"
    assert transport.sent[0] == transport.sent[1] == {"Content-Type": "application/json"}
