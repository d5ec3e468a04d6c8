"""Older and alternative spellings of a chat request, rewritten to the canonical one.

OpenAI's chat schema still accepts forms that predate `tools`: the `functions` /
`function_call` pair, assistant messages carrying a `function_call`, and `function`-role
messages carrying its result. It also accepts an `allowed_tools` tool choice, and the
engine accepts a bare `prompt`. These are rewritten once, before validation, so nothing
past `engine.messages` sees more than one way to say the same thing. `needs_rewrite` is the
cheap check that keeps the common request off this path.
"""

from __future__ import annotations

from typing import Any

__all__ = ["needs_rewrite", "rewrite"]

_TOP_LEVEL = ("prompt", "functions", "function_call")


def needs_rewrite(data: dict[str, Any]) -> bool:
    """Whether `data` uses any form `rewrite` changes (a few dict lookups)."""
    if "prompt" in data or "functions" in data or "function_call" in data:
        return True
    choice = data.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        return True
    messages = data.get("messages")
    if not isinstance(messages, list):
        return False
    for m in messages:
        if isinstance(m, dict) and (m.get("role") == "function" or "function_call" in m):
            return True
    return False


def rewrite(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of `data` in the canonical form (ValueError names a contradiction)."""
    data = _prompt_as_message(_functions_as_tools(dict(data)))
    data = _allowed_tools(data)
    if isinstance(data.get("messages"), list):
        data["messages"] = _function_messages(data["messages"])
    return data


def _prompt_as_message(data: dict[str, Any]) -> dict[str, Any]:
    """`prompt` is shorthand for one user message (the plain "completion" call)."""
    if "prompt" not in data:
        return data
    if "messages" in data:
        raise ValueError("give either prompt or messages, not both")
    prompt = data.pop("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise ValueError("prompt must be a non-empty string")
    data["messages"] = [{"role": "user", "content": prompt}]
    return data


def _functions_as_tools(data: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's legacy `functions` / `function_call` are the same thing as `tools` /
    `tool_choice`; they are translated so older callers keep working."""
    if "functions" not in data and "function_call" not in data:
        return data
    if "tools" in data or "tool_choice" in data:
        raise ValueError("give either functions/function_call or tools/tool_choice")
    functions = data.pop("functions", None)
    choice = data.pop("function_call", None)
    if functions is not None:
        if not isinstance(functions, list):
            raise ValueError("functions must be a list of function definitions")
        data["tools"] = [{"type": "function", "function": f} for f in functions]
    if isinstance(choice, dict):
        choice = {"type": "function", "function": choice}
    if choice is not None:
        data["tool_choice"] = choice
    return data


def _allowed_tools(data: dict[str, Any]) -> dict[str, Any]:
    """`{"type": "allowed_tools", ...}`: offer only the listed tools, with its mode."""
    choice = data.get("tool_choice")
    if not (isinstance(choice, dict) and choice.get("type") == "allowed_tools"):
        return data
    allowed = choice.get("allowed_tools")
    if not isinstance(allowed, dict) or allowed.get("mode") not in ("auto", "required"):
        raise ValueError("tool_choice.allowed_tools needs mode auto or required and tools")
    names = {
        (t.get("function") or {}).get("name")
        for t in allowed.get("tools") or ()
        if isinstance(t, dict)
    }
    tools = data.get("tools") or []
    data["tools"] = [
        t for t in tools if isinstance(t, dict) and (t.get("function") or {}).get("name") in names
    ]
    data["tool_choice"] = allowed["mode"]
    return data


def _function_messages(messages: list[Any]) -> list[Any]:
    """Assistant `function_call` as a one-call `tool_calls`; a `function` message as the
    `tool` result of the latest call of that name."""
    out: list[Any] = []
    latest: dict[str, str] = {}
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            out.append(m)
            continue
        call: Any = m.get("function_call")
        if "function_call" in m:
            m = {k: v for k, v in m.items() if k != "function_call"}
        if isinstance(call, dict) and not m.get("tool_calls"):
            name = str(call.get("name") or "")
            latest[name] = f"call_{i}_{name}"
            fn = {"name": name, "arguments": call.get("arguments", "{}")}
            m["tool_calls"] = [{"id": latest[name], "type": "function", "function": fn}]
        if m.get("role") == "function":
            named = m.get("name")
            key = named if isinstance(named, str) else ""
            m = {
                "role": "tool",
                "tool_call_id": latest.get(key, f"call_{key}"),
                "content": m.get("content") or "",
            }
        out.append(m)
    return out
