"""A multi-turn chat: the history is kept here, each reply appended to it.

The engine itself is stateless per request; a Conversation is the small object that turns
"say this" into a full request with the history so far, and records the assistant's reply
(text and tool calls) so the next turn sees it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.result import Response

if TYPE_CHECKING:
    from engine.runtime.engine import Engine


class Conversation:
    """History in, assistant reply appended; every turn routed like any other request."""

    def __init__(
        self,
        engine: Engine,
        policy: str | None = None,
        system: str | None = None,
        history: list[dict[str, Any]] | None = None,
        **request_fields: Any,
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.messages: list[dict[str, Any]] = list(history or [])
        if system is not None and not any(m.get("role") == "system" for m in self.messages):
            self.messages.insert(0, {"role": "system", "content": system})
        self.request_fields = request_fields
        self.last: Response | None = None

    def _request(self, content: str | None, role: str, extra: dict[str, Any]) -> dict[str, Any]:
        if content is not None:
            self.messages.append({"role": role, **extra, "content": content})
        return {**self.request_fields, "messages": list(self.messages)}

    def _record(self, response: Response) -> Response:
        message: dict[str, Any] = {"role": "assistant", "content": response.content}
        if response.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in response.tool_calls
            ]
        self.messages.append(message)
        self.last = response
        return response

    async def asend(self, content: str | None, role: str = "user", **extra: Any) -> Response:
        """Append a message (user by default, or a tool result), ask, append the reply."""
        request = self._request(content, role, extra)
        try:
            return self._record(await self.engine.arun(request, policy=self.policy))
        except BaseException:
            if content is not None:
                self.messages.pop()  # a failed turn leaves the history as it was
            raise

    def send(self, content: str | None, role: str = "user", **extra: Any) -> Response:
        """The sync form of `asend`."""
        request = self._request(content, role, extra)
        try:
            return self._record(self.engine.run(request, policy=self.policy))
        except BaseException:
            if content is not None:
                self.messages.pop()
            raise
