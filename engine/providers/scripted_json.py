"""A JSON value that conforms to a JSON Schema: what the scripted models answer when a
caller asks for structured output (`response_format`, Gemini `responseSchema`, Ollama
`format`), so `parse()`-style clients can be tried offline end to end.

Strings say `text` (the scripted model's answer, so a test cannot pass by accident), enums
and consts take their first value, numbers their lower bound, arrays `minItems` items (at
least one); `$ref` into `$defs`/`definitions` is followed (pydantic writes those), and
of `anyOf`/`oneOf` the first branch that is not `null` is used. Every declared property is
filled, so strict schemas (all properties required) are met.
"""

from __future__ import annotations

from typing import Any

__all__ = ["conforming"]

_DEPTH = 12


def conforming(schema: Any, text: str) -> Any:
    """A value valid against `schema` (a JSON Schema dict), strings filled with `text`."""
    return _value(schema, schema if isinstance(schema, dict) else {}, text, 0)


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return node
    target: Any = root
    for piece in ref[2:].split("/"):
        target = target.get(piece, {}) if isinstance(target, dict) else {}
    return target if isinstance(target, dict) else {}


def _value(node: Any, root: dict[str, Any], text: str, depth: int) -> Any:
    if not isinstance(node, dict) or depth > _DEPTH:
        return text
    node = _resolve(node, root)
    if "const" in node:
        return node["const"]
    if isinstance(node.get("enum"), list) and node["enum"]:
        return node["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        branches = node.get(key)
        if isinstance(branches, list) and branches:
            usable = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
            return _value((usable or branches)[0], root, text, depth + 1)
    return _typed(node, _kind(node), root, text, depth)


def _kind(node: dict[str, Any]) -> str:
    kind = node.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if isinstance(kind, str):
        return kind.lower()  # Gemini writes OBJECT, STRING...
    return "object" if "properties" in node else "string"


def _typed(node: dict[str, Any], kind: str, root: dict[str, Any], text: str, depth: int) -> Any:
    if kind == "object":
        props = node.get("properties")
        if not isinstance(props, dict):
            return {}
        return {name: _value(sub, root, text, depth + 1) for name, sub in props.items()}
    if kind == "array":
        count = max(1, int(node.get("minItems") or 1))
        return [_value(node.get("items"), root, text, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        low = node.get("minimum", node.get("exclusiveMinimum"))
        value = (low + 1 if "exclusiveMinimum" in node else low) if low is not None else 1
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return text
