"""Small pieces the HTTP adapters share: JSON decoding, option lookups, request headers, and
the translation steps that several protocols take alike (function declarations, data-URL
images, tool results grouped into one user turn, whole tool calls as stream deltas).

Kept apart from the adapters so each adapter module reads as "build body, send once, parse,
translate errors" and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import orjson

from engine.endpoints import Endpoint
from engine.errors import InvalidRequestError
from engine.messages import Message, Request, Tool, ToolCallDelta, ToolCallOut

from .failures import protocol_error

__all__ = [
    "BEARER",
    "JSON_OBJECT",
    "add_tool_result",
    "call_deltas",
    "declaration",
    "decode_json",
    "decode_object",
    "dumps",
    "extra_headers",
    "json_headers",
    "key_header",
    "option_bool",
    "parse_arguments",
    "per_endpoint",
    "response_schema",
    "sampling",
    "split_data_url",
    "system_text",
    "tool_names_by_id",
]

dumps = orjson.dumps

T = TypeVar("T")

#: What `per_endpoint` keeps: (id of the endpoint, what) -> (the endpoint, the value).
_PER_ENDPOINT: dict[tuple[int, object], tuple[Endpoint, Any]] = {}


def per_endpoint(endpoint: Endpoint, what: object, build: Callable[[Endpoint, Any], T]) -> T:
    """`build(endpoint, what)`, computed once per endpoint: an Endpoint is immutable and
    the runtime reuses one per plan, model and key, so values derived from it alone
    (headers, option lookups) need not be rebuilt on every call. `what` (any hashable)
    tells apart the values kept for one endpoint. The entry keeps its endpoint alive, so an
    id cannot be reused while it is cached; the cache is bounded, and cleared when full
    (plans come and go on reload)."""
    key = (id(endpoint), what)
    entry = _PER_ENDPOINT.get(key)
    if entry is None:
        if len(_PER_ENDPOINT) > 4096:
            _PER_ENDPOINT.clear()
        entry = _PER_ENDPOINT[key] = (endpoint, build(endpoint, what))
    value: T = entry[1]
    return value


def decode_json(endpoint: Endpoint, data: bytes | str, what: str) -> Any:
    """Parsed JSON, or ProtocolError naming what could not be parsed."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise protocol_error(endpoint, f"unparseable JSON in {what}") from None


def decode_object(endpoint: Endpoint, data: bytes | str, what: str) -> dict[str, Any]:
    """Parsed JSON that must be an object."""
    try:  # decode_json, inlined: every answer and stream chunk is decoded here
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise protocol_error(endpoint, f"unparseable JSON in {what}") from None
    if not isinstance(value, dict):
        raise protocol_error(endpoint, f"{what} is not a JSON object")
    return value


def extra_headers(endpoint: Endpoint) -> dict[str, str]:
    """`header:<Name>` options as headers (OpenRouter attribution, OpenAI-Organization...)."""
    return {k[7:]: v for k, v in endpoint.options.items() if k.startswith("header:")}


#: The usual place for a key: `Authorization: Bearer <key>`.
BEARER = ("Authorization", "Bearer ")


def key_header(endpoint: Endpoint, native: str) -> tuple[str, str]:
    """Where the key goes: the protocol's own header, or a Bearer token with `auth: bearer`."""
    return BEARER if endpoint.options.get("auth") == "bearer" else (native, "")


def json_headers(endpoint: Endpoint, key: tuple[str, str] = BEARER) -> dict[str, str]:
    """JSON content type, `header:<Name>` options, and the key as `key` = (header, prefix).

    Built once per endpoint and key placement (`per_endpoint`); each caller gets its own
    copy, which it may add to."""
    headers: dict[str, str] = per_endpoint(endpoint, key, _json_headers)
    return headers.copy()


def _json_headers(endpoint: Endpoint, key: tuple[str, str]) -> dict[str, str]:
    headers = {"Content-Type": "application/json", **extra_headers(endpoint)}
    if endpoint.api_key:
        name, prefix = key
        headers[name] = prefix + endpoint.api_key.reveal()
    return headers


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


def declaration(tool: Tool, schema_field: str) -> dict[str, Any]:
    """A function declaration (name, description if any, JSON Schema under `schema_field`)."""
    function = tool.function
    out: dict[str, Any] = {"name": function.name}
    if function.description:
        out["description"] = function.description
    out[schema_field] = function.parameters
    return out


def split_data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a `data:` URL; None for an ordinary link."""
    if not url.startswith("data:"):
        return None
    head, _, data = url.partition(",")
    return head[5:].split(";")[0] or "image/png", data


def add_tool_result(
    turns: list[dict[str, Any]],
    field: str,
    part: dict[str, Any],
    is_result: Callable[[dict[str, Any]], bool],
) -> None:
    """Append a tool result as a user turn; consecutive results share one turn (the
    protocols that carry results in user turns reject two user turns in a row)."""
    last = turns[-1] if turns else None
    if (
        last is not None
        and last["role"] == "user"
        and isinstance(last[field], list)
        and all(is_result(p) for p in last[field])
    ):
        last[field].append(part)
    else:
        turns.append({"role": "user", field: [part]})


def call_deltas(calls: Sequence[ToolCallOut], first_index: int) -> tuple[ToolCallDelta, ...]:
    """Whole tool calls as stream deltas (protocols that stream each call in one piece)."""
    return tuple(
        ToolCallDelta(first_index + i, c.id, c.name, c.arguments) for i, c in enumerate(calls)
    )


def tool_names_by_id(messages: list[Message]) -> dict[str, str]:
    """Which function each earlier tool call id named (protocols that key results by name)."""
    return {call.id: call.function.name for m in messages if m.tool_calls for call in m.tool_calls}


def system_text(request: Request) -> str | None:
    """All system/developer messages joined: protocols with a top-level system field."""
    parts = [m.text() for m in request.messages if m.role in ("system", "developer")]
    return "\n\n".join(parts) if parts else None


def sampling(request: Request, names: Mapping[str, str]) -> dict[str, Any]:
    """The request's settings that are set (`names`: field -> the protocol's name for it)."""
    out = {}
    for attribute, name in names.items():
        value = getattr(request, attribute)
        if value is not None:
            out[name] = value
    return out


#: The schema of a JSON-mode answer when the caller gave none (`json_object`): what the
#: forced-tool and scripted translations of JSON mode ask for.
JSON_OBJECT: dict[str, Any] = {"type": "object", "properties": {"answer": {"type": "string"}}}


def response_schema(request: Request) -> dict[str, Any] | None:
    """The schema a structured answer must follow (JSON mode: JSON_OBJECT); None for text."""
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_schema" and fmt.json_schema:
        schema = fmt.json_schema.get("schema")
        return schema if isinstance(schema, dict) else JSON_OBJECT
    return JSON_OBJECT


def option_bool(options: Mapping[str, str], name: str, default: bool) -> bool:
    """A boolean option written as a string in the plan."""
    value = options.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes", "on")
