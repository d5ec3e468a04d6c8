"""POST /v1/responses: OpenAI's Responses API, answered through the engine's chat call.

openai-agents, Codex-style tools and LangChain's `use_responses_api` speak this. `input`
(a string, or message / function_call / function_call_output items) and `instructions`
become chat messages; function `tools`, `tool_choice`, `max_output_tokens`, `text.format`
(json_schema / json_object), `text.verbosity`, `reasoning.effort`, sampling and the
OpenAI-platform fields map to their chat names. Reasoning items sent back are dropped (no
provider behind a chat call can take them). `previous_response_id` and `conversation` are
refused with a clear 400: the server keeps no conversation state; send the history in
`input`. Built-in tools (web search, file search...) are refused the same way.

Answers are `response` objects; streams are the typed events (response.created,
output_item.added, content_part.added, output_text.delta, function_call_arguments.delta,
their .done events, response.completed), each with its sequence number.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Any

from engine.result import Response, StreamEvent
from engine.server.errors import HTTPError, ServerError
from engine.server.sse import sse_event

__all__ = ["RESPONSES_PATH", "Responses"]

RESPONSES_PATH = "/v1/responses"

#: Fields copied to the chat request under the same name.
_SAME = (
    *("model", "temperature", "top_p", "parallel_tool_calls", "stream", "user", "store"),
    *("service_tier", "prompt_cache_key", "safety_identifier", "top_logprobs", "metadata"),
)
#: Fields accepted and ignored (they steer OpenAI's own storage and tracing).
_IGNORED = frozenset(
    {"include", "truncation", "background", "max_tool_calls", "prompt_cache_retention"}
    | {"stream_options", "prompt", "context_management"}
)
_STATEFUL = ("previous_response_id", "conversation")
_KNOWN = frozenset(
    {*_SAME, *_IGNORED, *_STATEFUL, "input", "instructions", "tools", "tool_choice"}
    | {"max_output_tokens", "text", "reasoning"}
)


def _bad(message: str, param: str | None = None) -> ServerError:
    error = ServerError(400, message, "invalid_request_error", "invalid_request")
    error.error = replace(error.error, param=param)
    return error


def _text_part(part: Any) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise _bad("input: content parts must be objects")
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": str(part.get("text", ""))}
    if kind == "input_image":
        return {"type": "image_url", "image_url": {"url": str(part.get("image_url", ""))}}
    if kind == "input_file" and part.get("file_data"):
        return {"type": "file", "file": {"file_data": part["file_data"]}}
    if kind == "refusal":
        return {"type": "text", "text": str(part.get("refusal", ""))}
    raise _bad(f"input: content part type {kind!r} is not supported")


def _message(item: dict[str, Any]) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise _bad("input: message role must be user, assistant, system or developer")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise _bad("input: message content must be a string or a list of parts")
    parts = [_text_part(p) for p in content]
    if role != "user":  # only user turns take images and files in the chat request
        return {"role": role, "content": "".join(p.get("text", "") for p in parts)}
    return {"role": role, "content": parts}


def _items(items: list[Any]) -> list[dict[str, Any]]:
    """Responses input items as chat messages (consecutive function calls share a turn)."""
    out: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            raise _bad("input: items must be objects")
        kind = item.get("type", "message")
        if kind == "message":
            out.append(_message(item))
        elif kind == "function_call":
            function = {"name": item.get("name", ""), "arguments": item.get("arguments", "{}")}
            call = {"id": item.get("call_id", ""), "type": "function", "function": function}
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls"):
                last["tool_calls"].append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output", "")
            text = output if isinstance(output, str) else str(output)
            out.append({"role": "tool", "tool_call_id": item.get("call_id", ""), "content": text})
        elif kind != "reasoning":
            raise _bad(f"input: item type {kind!r} is not supported", "input")
    return out


def _tool(tool: Any) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise _bad(f"tools: only function tools are supported, got {kind!r}", "tools")
    function = {"name": tool.get("name", ""), "parameters": tool.get("parameters") or {}}
    if tool.get("description"):
        function["description"] = tool["description"]
    if tool.get("strict") is not None:
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name", "")}}
    if choice in ("auto", "none", "required"):
        return choice
    raise _bad("tool_choice: use auto, none, required or a function", "tool_choice")


def _text_format(text: Any, chat: dict[str, Any]) -> None:
    if not isinstance(text, dict):
        return
    fmt = text.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    if text.get("verbosity") is not None:
        chat["verbosity"] = text["verbosity"]


def to_chat(data: dict[str, Any]) -> dict[str, Any]:
    """The chat request for a Responses body."""
    unknown = sorted(set(data) - _KNOWN)
    if unknown:
        raise _bad(f"Unknown parameter: '{unknown[0]}'.", unknown[0])
    for name in _STATEFUL:
        if data.get(name) is not None:
            raise _bad(
                f"{name} is not supported: this gateway keeps no conversation state; "
                "send the whole history in `input`",
                name,
            )
    given = data.get("input")
    messages = (
        [{"role": "developer", "content": data["instructions"]}] if data.get("instructions") else []
    )
    if isinstance(given, str):
        messages.append({"role": "user", "content": given})
    elif isinstance(given, list):
        messages += _items(given)
    else:
        raise _bad("input: a string or a list of items is required", "input")
    chat: dict[str, Any] = {"messages": messages}
    for name in _SAME:
        if data.get(name) is not None:
            chat[name] = data[name]
    if data.get("stream"):
        chat["stream_options"] = {"include_usage": True}
    if data.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = data["max_output_tokens"]
    if data.get("tools"):
        chat["tools"] = [_tool(t) for t in data["tools"]]
    if data.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(data["tool_choice"])
    _text_format(data.get("text"), chat)
    effort = (data.get("reasoning") or {}).get("effort")
    if effort is not None:
        chat["reasoning_effort"] = effort
    return chat


def _usage(
    input_tokens: int, output_tokens: int, cached: int = 0, reasoning: int = 0
) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input_tokens + output_tokens,
    }


def _envelope(rid: str, model: str, data: dict[str, Any], status: str) -> dict[str, Any]:
    """A `response` object without output and usage (filled by the caller)."""
    text = data.get("text") if isinstance(data.get("text"), dict) else None
    return {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": data.get("instructions"),
        "max_output_tokens": data.get("max_output_tokens"),
        "model": model,
        "output": [],
        "parallel_tool_calls": data.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": bool(data.get("store", False)),
        "temperature": data.get("temperature", 1.0),
        "text": text or {"format": {"type": "text"}},
        "tool_choice": data.get("tool_choice", "auto"),
        "tools": data.get("tools") or [],
        "top_p": data.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": None,
        "user": data.get("user"),
        "metadata": data.get("metadata") or {},
    }


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [part] if status == "completed" else [],
    }


def _call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def _finish(body: dict[str, Any], finish: str) -> None:
    if finish == "length":
        body["status"] = "incomplete"
        body["incomplete_details"] = {"reason": "max_output_tokens"}
    elif finish == "content_filter":
        body["status"] = "incomplete"
        body["incomplete_details"] = {"reason": "content_filter"}


class Responses:
    """The Responses surface (see the module docstring)."""

    path = RESPONSES_PATH

    def to_chat(self, data: dict[str, Any]) -> dict[str, Any]:
        return to_chat(data)

    def answer(self, resp: Response, data: dict[str, Any]) -> dict[str, Any]:
        rid = "resp_" + uuid.uuid4().hex
        body = _envelope(rid, resp.model, data, "completed")
        if resp.content is not None or not resp.tool_calls:
            body["output"].append(_message_item("msg_" + rid[5:], resp.content or "", "completed"))
        for call in resp.tool_calls:
            item = _call_item("fc_" + call.id, call.id, call.name, call.arguments, "completed")
            body["output"].append(item)
        u = resp.usage
        body["usage"] = _usage(
            u.input_tokens, u.output_tokens, u.cache_read_tokens, u.reasoning_tokens
        )
        _finish(body, resp.finish_reason)
        return body

    def encoder(self, data: dict[str, Any]) -> ResponseEvents:
        return ResponseEvents(data)

    def error_body(self, error: HTTPError) -> dict[str, Any]:
        return error.body()


class ResponseEvents:
    """Engine stream events as the Responses API's typed events."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.rid = "resp_" + uuid.uuid4().hex
        self.sequence = 0
        self.model = ""
        self.items: list[dict[str, Any]] = []  # output items, in order
        self.text: dict[str, Any] | None = None  # the open message item
        self.calls: dict[int, dict[str, Any]] = {}  # engine tool-call index -> item
        self.reason = "stop"
        self.usage = _usage(0, 0)

    def _event(self, kind: str, **fields: Any) -> bytes:
        body = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return sse_event(kind, body)

    def _response(self, status: str) -> dict[str, Any]:
        body = _envelope(self.rid, self.model, self.data, status)
        body["output"] = self.items if status != "in_progress" else []
        if status != "in_progress":
            body["usage"] = self.usage
        return body

    def encode(self, event: StreamEvent) -> bytes:
        out = b""
        if not self.sequence:
            self.model = event.model
            out += self._event("response.created", response=self._response("in_progress"))
            out += self._event("response.in_progress", response=self._response("in_progress"))
        c = event.chunk
        if c.content:
            out += self._text_delta(c.content)
        for d in c.tool_calls:
            out += self._call_delta(d.index, d.id, d.name, d.arguments)
        if c.finish_reason is not None:
            self.reason = c.finish_reason
        if c.usage is not None:
            self.usage = _usage(c.usage.input_tokens, c.usage.output_tokens)
        return out

    def _text_delta(self, delta: str) -> bytes:
        out = b""
        if self.text is None:
            self.text = _message_item("msg_" + uuid.uuid4().hex, "", "in_progress")
            self.text["_text"] = ""
            self.items.append(self.text)
            index = len(self.items) - 1
            out += self._event(
                "response.output_item.added", output_index=index, item=self._public(self.text)
            )
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out += self._event(
                "response.content_part.added",
                item_id=self.text["id"],
                output_index=index,
                content_index=0,
                part=part,
            )
        self.text["_text"] += delta
        return out + self._event(
            "response.output_text.delta",
            item_id=self.text["id"],
            output_index=self.items.index(self.text),
            content_index=0,
            delta=delta,
            logprobs=[],
        )

    def _call_delta(
        self, index: int, call_id: str | None, name: str | None, arguments: str
    ) -> bytes:
        out = b""
        item = self.calls.get(index)
        if item is None:
            cid = call_id or f"call_{index}"
            item = self.calls[index] = _call_item("fc_" + cid, cid, name or "", "", "in_progress")
            self.items.append(item)
            out += self._event(
                "response.output_item.added", output_index=len(self.items) - 1, item=dict(item)
            )
        if arguments:
            item["arguments"] += arguments
            out += self._event(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=self.items.index(item),
                delta=arguments,
            )
        return out

    @staticmethod
    def _public(item: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in item.items() if not k.startswith("_")}

    def finish(self) -> bytes:
        out = b""
        for index, item in enumerate(self.items):
            if item["type"] == "message":
                text = item.pop("_text")
                part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
                common = {"item_id": item["id"], "output_index": index, "content_index": 0}
                out += self._event("response.output_text.done", text=text, logprobs=[], **common)
                out += self._event("response.content_part.done", part=part, **common)
                item["content"] = [part]
            else:
                out += self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    arguments=item["arguments"],
                )
            item["status"] = "completed"
            out += self._event("response.output_item.done", output_index=index, item=item)
        body = self._response("completed")
        _finish(body, self.reason)
        kind = "response.completed" if body["status"] == "completed" else "response.incomplete"
        return out + self._event(kind, response=body)

    def error(self, error: HTTPError) -> bytes:
        return self._event("error", code=error.code, message=error.message, param=error.param)
