"""POST /v1/messages: the Anthropic Messages API in front of any provider.

The Anthropic SDK, Claude Code and other agents speak this. The body becomes the engine's
chat request: `system` (a string or text blocks) a system message, `tool_result` blocks
tool messages, `tool_use` blocks tool calls, `tools[].input_schema` function parameters,
`tool_choice` auto/any/tool/none, `stop_sequences` stop, `metadata.user_id` user and
`thinking.budget_tokens` the nearest reasoning effort. `cache_control` rides along on
blocks and tools: the Anthropic adapter sends it on, the others ignore it. `top_k` and
`service_tier` have no equivalent in the chat request and are ignored; any other unknown
field is a 400, in Anthropic's error shape.

Answers are Anthropic `message` objects; streams are its named events (message_start,
content_block_start/delta/stop with text_delta and input_json_delta, message_delta with the
stop reason and usage, message_stop).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from engine.messages import FinishReason, Request
from engine.result import Response, StreamEvent
from engine.server.errors import HTTPError, ServerError
from engine.server.sse import sse_event

__all__ = ["MESSAGES_PATH", "AnthropicMessages"]

MESSAGES_PATH = "/v1/messages"

_FIELDS = frozenset(
    {"model", "messages", "max_tokens", "system", "tools", "tool_choice", "stop_sequences"}
    | {"temperature", "top_p", "top_k", "stream", "metadata", "thinking", "service_tier"}
    | {"container", "mcp_servers"}
)
_IGNORED = frozenset({"top_k", "service_tier", "container", "mcp_servers"})
STOP_REASON: dict[FinishReason, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "error": "end_turn",
}
_ERROR_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def _bad(message: str) -> ServerError:
    return ServerError(400, message, "invalid_request_error", "invalid_request")


def _effort(thinking: Any) -> str | None:
    """`thinking: {type: enabled, budget_tokens}` as the nearest reasoning effort."""
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    budget = budget if isinstance(budget, int) else 8192
    return "low" if budget <= 2048 else "medium" if budget <= 8192 else "high"


def _part(block: dict[str, Any]) -> dict[str, Any] | None:
    """A text/image/document block as a chat content part (thinking blocks: none)."""
    kind = block.get("type")
    if kind == "text":
        part: dict[str, Any] = {"type": "text", "text": block.get("text", "")}
    elif kind in ("image", "document"):
        source = block.get("source") or {}
        if source.get("type") == "url":
            url = str(source.get("url", ""))
        else:
            url = f"data:{source.get('media_type', '')};base64,{source.get('data', '')}"
        part = (
            {"type": "image_url", "image_url": {"url": url}}
            if kind == "image"
            else {"type": "file", "file": {"file_data": url}}
        )
    elif kind in ("thinking", "redacted_thinking"):
        return None
    else:
        raise _bad(f"messages: unsupported content block type {kind!r}")
    if "cache_control" in block:
        part["cache_control"] = block["cache_control"]
    return part


def _result_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return "" if content is None else str(content)


def _turn(message: Any) -> list[dict[str, Any]]:
    """One Anthropic turn as chat messages (tool results become `tool` messages first)."""
    if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
        raise _bad("messages: each message needs role user or assistant")
    role, content = message["role"], message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise _bad("messages: content must be a string or a list of blocks")
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, dict):
            raise _bad("messages: content blocks must be objects")
        if block.get("type") == "tool_result":
            text = _result_text(block.get("content"))
            out.append(
                {"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")), "content": text}
            )
        elif block.get("type") == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            function = {"name": block.get("name", ""), "arguments": arguments}
            calls.append({"id": block.get("id", ""), "type": "function", "function": function})
        elif (part := _part(block)) is not None:
            parts.append(part)
    if role == "assistant":
        text = "".join(p["text"] for p in parts if p["type"] == "text")
        turn: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            turn["tool_calls"] = calls
        return [turn]
    if parts or not out:
        out.append({"role": "user", "content": parts or ""})
    return out


def _system(system: Any) -> dict[str, Any]:
    if isinstance(system, str):
        return {"role": "system", "content": system}
    if not isinstance(system, list):
        raise _bad("system must be a string or a list of text blocks")
    parts = [p for b in system if isinstance(b, dict) and (p := _part(b)) is not None]
    return {"role": "system", "content": parts}


def _tool(tool: Any) -> dict[str, Any]:
    if not isinstance(tool, dict) or "name" not in tool:
        raise _bad("tools: each tool needs a name")
    function = {"name": tool["name"], "parameters": tool.get("input_schema") or {}}
    if tool.get("description"):
        function["description"] = tool["description"]
    out: dict[str, Any] = {"type": "function", "function": function}
    if "cache_control" in tool:
        out["cache_control"] = tool["cache_control"]
    return out


def _tool_choice(choice: Any, chat: dict[str, Any]) -> None:
    if not isinstance(choice, dict):
        return
    kind = choice.get("type")
    if kind == "tool":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name", "")}}
    elif kind in ("auto", "any", "none"):
        chat["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    if choice.get("disable_parallel_tool_use"):
        chat["parallel_tool_calls"] = False


def _message_content(resp: Response) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = []
    if resp.content:
        content.append({"type": "text", "text": resp.content})
    for call in resp.tool_calls:
        try:
            arguments = orjson.loads(call.arguments or "{}")
        except orjson.JSONDecodeError:
            arguments = {"_raw": call.arguments}
        content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments})
    return content


class AnthropicMessages:
    """The Anthropic Messages surface (see the module docstring)."""

    path = MESSAGES_PATH

    def to_chat(self, data: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(data) - _FIELDS)
        if unknown:
            raise _bad(f"{unknown[0]}: Extra inputs are not permitted")
        if not isinstance(data.get("max_tokens"), int):
            raise _bad("max_tokens: Field required")
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _bad("messages: at least one message is required")
        chat: dict[str, Any] = {"messages": [], "max_tokens": data["max_tokens"]}
        if "system" in data:
            chat["messages"].append(_system(data["system"]))
        for message in messages:
            chat["messages"] += _turn(message)
        for name in ("model", "temperature", "top_p", "stream"):
            if name in data:
                chat[name] = data[name]
        if data.get("stream"):
            chat["stream_options"] = {"include_usage": True}
        if data.get("stop_sequences"):
            chat["stop"] = data["stop_sequences"]
        if data.get("tools"):
            chat["tools"] = [_tool(t) for t in data["tools"]]
        _tool_choice(data.get("tool_choice"), chat)
        user = (data.get("metadata") or {}).get("user_id")
        if isinstance(user, str):
            chat["user"] = user
        effort = _effort(data.get("thinking"))
        if effort is not None:
            chat["reasoning_effort"] = effort
        return chat

    def answer(self, resp: Response, data: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "msg_" + (resp.id or uuid.uuid4().hex).removeprefix("chatcmpl-"),
            "type": "message",
            "role": "assistant",
            "model": resp.model,
            "content": _message_content(resp),
            "stop_reason": STOP_REASON[resp.finish_reason],
            "stop_sequence": None,
            "usage": {
                "input_tokens": resp.usage.input_tokens
                - resp.usage.cache_read_tokens
                - resp.usage.cache_write_tokens,
                "output_tokens": resp.usage.output_tokens,
                "cache_read_input_tokens": resp.usage.cache_read_tokens,
                "cache_creation_input_tokens": resp.usage.cache_write_tokens,
            },
        }

    def encoder(self, data: dict[str, Any], req: Request) -> MessageEvents:
        return MessageEvents()

    def error_body(self, error: HTTPError) -> dict[str, Any]:
        kind = _ERROR_TYPE.get(error.status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": error.message}}


class MessageEvents:
    """Engine stream events as Anthropic's named SSE events."""

    def __init__(self) -> None:
        self.block = -1  # index of the open content block
        self.open: str | None = None  # "text" | "tool_use" | None
        self.tools: dict[int, int] = {}  # engine tool-call index -> block index
        self.reason: FinishReason = "stop"
        self.input_tokens = self.output_tokens = 0
        self.started = False

    def encode(self, event: StreamEvent) -> bytes:
        out = b"" if self.started else self._start(event)
        c = event.chunk
        if c.content:
            if self.open != "text":
                out += self._open({"type": "text", "text": ""}, "text")
            delta = {"type": "text_delta", "text": c.content}
            out += sse_event("content_block_delta", self._delta(delta))
        for d in c.tool_calls:
            if d.index not in self.tools:
                block = {"type": "tool_use", "id": d.id or "", "name": d.name or "", "input": {}}
                out += self._open(block, "tool_use")
                self.tools[d.index] = self.block
            if d.arguments:
                delta = {"type": "input_json_delta", "partial_json": d.arguments}
                body = {"type": "content_block_delta", "index": self.tools[d.index], "delta": delta}
                out += sse_event("content_block_delta", body)
        if c.finish_reason is not None:
            self.reason = c.finish_reason
        if c.usage is not None:
            self.input_tokens, self.output_tokens = c.usage.input_tokens, c.usage.output_tokens
        return out

    def finish(self) -> bytes:
        delta = {"stop_reason": STOP_REASON[self.reason], "stop_sequence": None}
        usage = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}
        return (
            self._close()
            + sse_event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
            + sse_event("message_stop", {"type": "message_stop"})
        )

    def error(self, error: HTTPError) -> bytes:
        kind = _ERROR_TYPE.get(error.status, "api_error")
        return sse_event(
            "error", {"type": "error", "error": {"type": kind, "message": error.message}}
        )

    def _start(self, event: StreamEvent) -> bytes:
        self.started = True
        message: dict[str, Any] = {
            "id": "msg_" + (event.id or uuid.uuid4().hex).removeprefix("chatcmpl-"),
            "type": "message",
            "role": "assistant",
            "model": event.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return sse_event("message_start", {"type": "message_start", "message": message})

    def _delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": self.block, "delta": delta}

    def _open(self, block: dict[str, Any], kind: str) -> bytes:
        out = self._close()
        self.block += 1
        self.open = kind
        start = {"type": "content_block_start", "index": self.block, "content_block": block}
        return out + sse_event("content_block_start", start)

    def _close(self) -> bytes:
        if self.open is None:
            return b""
        self.open = None
        return sse_event("content_block_stop", {"type": "content_block_stop", "index": self.block})
