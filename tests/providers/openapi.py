"""The official OpenAI OpenAPI document as JSON Schema validators, loaded once per session.

The schemas the tests need are vendored beside this file (`openai-openapi.json`: the
components reachable from `ROOTS`, descriptions and examples stripped), so every test runs
on a fresh clone. Regenerate them from the full document (`../shared/specs/` next to the
repository) with

    python -m tests.providers.openapi path/to/openai-openapi.yaml

The document is OpenAPI 3.1 but still marks some schemas `nullable: true` (3.0 style);
those are rewritten to JSON Schema's `null` type once at vendoring, so `"logprobs": null`
validates as the service sends it.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SPEC_PATH = Path(__file__).with_name("openai-openapi.json")

#: The schemas the suite validates against; everything they reference is vendored too.
ROOTS = (
    "CreateChatCompletionRequest",
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "ErrorResponse",
    "CreateResponse",
    "Response",
    "ResponseStreamEvent",
    "CreateEmbeddingRequest",
    "CreateEmbeddingResponse",
    "CreateCompletionRequest",
    "CreateCompletionResponse",
    "Model",
    "ListModelsResponse",
)

_DROPPED = frozenset({"description", "example", "title"})  # prose, when a string
_PREFIX = "#/components/schemas/"


def _nullable(node: Any, in_properties: bool = False) -> Any:
    if isinstance(node, list):
        return [_nullable(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {
        k: _nullable(v, k == "properties" and not in_properties)
        for k, v in node.items()
        if in_properties or (k != "nullable" and not (k in _DROPPED and isinstance(v, str)))
    }
    if not in_properties and node.get("nullable") is True:
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        elif kind is None:
            return {"anyOf": [out, {"type": "null"}]}
    return out


def _references(node: Any, schemas: dict[str, Any], found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_PREFIX):
            name = ref[len(_PREFIX) :]
            if name not in found:
                found.add(name)
                _references(schemas[name], schemas, found)
        for value in node.values():
            _references(value, schemas, found)
    elif isinstance(node, list):
        for value in node:
            _references(value, schemas, found)


def vendor(document: Path) -> dict[str, Any]:
    """The components reachable from ROOTS in the full document, ready to validate with."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with document.open() as f:
        schemas = yaml.load(f, Loader=loader)["components"]["schemas"]
    found = set(ROOTS)
    for root in ROOTS:
        _references(schemas[root], schemas, found)
    return {"components": {"schemas": {k: _nullable(schemas[k]) for k in sorted(found)}}}


@functools.cache
def components() -> dict[str, Any]:
    """The vendored components (parsed once per test session)."""
    import json  # orjson refuses the document's one integer wider than 64 bits

    data: dict[str, Any] = json.loads(SPEC_PATH.read_text())
    return data


@functools.cache
def validator(schema: str) -> Draft202012Validator:
    """A validator for one named schema in the spec's components."""
    return Draft202012Validator({"$ref": f"{_PREFIX}{schema}", **components()})


def problems(schema: str, value: Any) -> list[str]:
    """Every way `value` breaks `schema`, each with its JSON path."""
    return [f"{e.json_path}: {e.message}" for e in validator(schema).iter_errors(value)]


def properties(schema: str) -> set[str]:
    """The top-level property names an object schema allows (allOf branches merged)."""
    node = components()["components"]["schemas"][schema]
    names = set(node.get("properties", {}))
    for branch in node.get("allOf", ()):
        if "$ref" in branch:
            names |= properties(branch["$ref"][len(_PREFIX) :])
        names |= set(branch.get("properties", {}))
    return names


if __name__ == "__main__":
    import json  # orjson refuses the document's one integer wider than 64 bits

    SPEC_PATH.write_text(json.dumps(vendor(Path(sys.argv[1])), sort_keys=True, indent=1) + "\n")
