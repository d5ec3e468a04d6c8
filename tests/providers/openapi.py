"""The official OpenAI OpenAPI document as JSON Schema validators, loaded once per session.

The document lives beside the repository (`../shared/specs/openai-openapi.yaml`; from a
git worktree one level deeper, `../../shared/...`; or wherever `OPENAI_OPENAPI_SPEC`
points). It is
OpenAPI 3.1 but still marks some schemas `nullable: true` (3.0 style); those are rewritten
to JSON Schema's `null` type once at load, so `"logprobs": null` validates as the service
sends it.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

_ROOT = Path(__file__).resolve().parents[2]
_RELATIVE = Path("shared") / "specs" / "openai-openapi.yaml"
_CANDIDATES = [Path(p) for p in [os.environ.get("OPENAI_OPENAPI_SPEC", "")] if p] + [
    _ROOT.parent / _RELATIVE,
    _ROOT.parent.parent / _RELATIVE,
]
SPEC_PATH = next((p for p in _CANDIDATES if p.exists()), _CANDIDATES[-2])
MISSING_REASON = "OpenAI OpenAPI document not found at " + ", ".join(map(str, _CANDIDATES))


def _nullable(node: Any) -> Any:
    if isinstance(node, list):
        return [_nullable(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        elif kind is None:
            return {"anyOf": [out, {"type": "null"}]}
    return out


@functools.cache
def components() -> dict[str, Any]:
    """The spec's components with nullable rewritten (parsed once per test session)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC_PATH.open() as f:
        doc = yaml.load(f, Loader=loader)
    return {"components": _nullable(doc["components"])}


@functools.cache
def validator(schema: str) -> Draft202012Validator:
    """A validator for one named schema in the spec's components."""
    return Draft202012Validator({"$ref": f"#/components/schemas/{schema}", **components()})


def problems(schema: str, value: Any) -> list[str]:
    """Every way `value` breaks `schema`, each with its JSON path."""
    return [f"{e.json_path}: {e.message}" for e in validator(schema).iter_errors(value)]
