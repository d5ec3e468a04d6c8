"""A Responses API request as a chat request: `input` items and `instructions` as
messages, function tools, `tool_choice`, `text.format`, `reasoning.effort` and the
same-named fields; stateful and built-in-tool requests refused with a clear 400 (see
responses.py for the endpoint).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from engine.server.errors import ServerError

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
