"""Small pieces every HTTP adapter shares: JSON decoding, option lookups, extra headers.

Kept apart from the adapters so each adapter module reads as "build body, send once, parse,
translate errors" and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from engine.endpoints import Endpoint
from engine.errors import InvalidRequestError
from engine.messages import Message, Request

from .failures import protocol_error

__all__ = [
    "decode_json",
    "decode_object",
    "dumps",
    "extra_headers",
    "option_bool",
    "parse_arguments",
    "system_text",
    "tool_names_by_id",
]

dumps = orjson.dumps


def decode_json(endpoint: Endpoint, data: bytes | str, what: str) -> Any:
    """Parsed JSON, or ProtocolError naming what could not be parsed."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise protocol_error(endpoint, f"unparseable JSON in {what}") from None


def decode_object(endpoint: Endpoint, data: bytes | str, what: str) -> dict[str, Any]:
    """Parsed JSON that must be an object."""
    value = decode_json(endpoint, data, what)
    if not isinstance(value, dict):
        raise protocol_error(endpoint, f"{what} is not a JSON object")
    return value


def extra_headers(endpoint: Endpoint) -> dict[str, str]:
    """`header:<Name>` options as headers (OpenRouter attribution, OpenAI-Organization...)."""
    return {k[7:]: v for k, v in endpoint.options.items() if k.startswith("header:")}


def parse_arguments(endpoint: Endpoint, call_id: str, text: str) -> dict[str, Any]:
    """Tool-call arguments (OpenAI JSON text) as the object other protocols require."""
    if not text.strip():
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise InvalidRequestError(
            f"{endpoint.provider}: tool call {call_id!r} has arguments that are not valid JSON; "
            f"{endpoint.protocol} needs them as an object",
            provider=endpoint.provider,
            model=endpoint.upstream_model,
        ) from None
    if not isinstance(value, dict):
        raise InvalidRequestError(
            f"{endpoint.provider}: tool call {call_id!r} arguments must be a JSON object",
            provider=endpoint.provider,
            model=endpoint.upstream_model,
        )
    return value


def tool_names_by_id(messages: list[Message]) -> dict[str, str]:
    """Which function each earlier tool call id named (protocols that key results by name)."""
    return {call.id: call.function.name for m in messages if m.tool_calls for call in m.tool_calls}


def system_text(request: Request) -> str | None:
    """All system/developer messages joined: protocols with a top-level system field."""
    parts = [m.text() for m in request.messages if m.role in ("system", "developer")]
    return "\n\n".join(parts) if parts else None


def option_bool(options: Mapping[str, str], name: str, default: bool) -> bool:
    """A boolean option written as a string in the plan."""
    value = options.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes", "on")
