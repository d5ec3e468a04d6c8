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
from typing import Any

from engine.messages import Request
from engine.result import Response, StreamEvent
from engine.server.errors import HTTPError
from engine.server.responses_request import to_chat
from engine.server.sse import sse_event

__all__ = ["RESPONSES_PATH", "Responses", "to_chat"]

RESPONSES_PATH = "/v1/responses"


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


def _response_id(engine_id: str) -> str:
    """`resp_` and the engine's call id, as Messages and Completions derive theirs (a random
    one when there is none): no uuid of its own, ~2 us a call."""
    return "resp_" + (engine_id or uuid.uuid4().hex).removeprefix("chatcmpl-")


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
        rid = _response_id(resp.id)
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

    def encoder(self, data: dict[str, Any], req: Request) -> ResponseEvents:
        return ResponseEvents(data)

    def error_body(self, error: HTTPError) -> dict[str, Any]:
        return error.body()


class ResponseEvents:
    """Engine stream events as the Responses API's typed events."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.rid = ""  # from the first event's id (`_response_id`)
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
            self.rid, self.model = _response_id(event.id), event.model
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
            self.text = _message_item("msg_" + self.rid[5:], "", "in_progress")
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
