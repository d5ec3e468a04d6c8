"""JSON Schemas generated from the spec models, and validation that reports every error.

Why jsonschema on top of pydantic: jsonschema collects *all* errors with their JSON paths
in one pass (pydantic's union errors are noisy), and the very same schema files drive editor
completion through the `yaml-language-server` comment. Each error becomes a Diagnostic
located at the offending node, with a "did you mean" hint for misspelt keys and values.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from functools import cache
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from pydantic import BaseModel
from pydantic import ValidationError as PydanticError

from engine.config.load import Document, join_path
from engine.config.sensitive import may_quote
from engine.config.specs import ModelsSpec, PolicySpec
from engine.errors import Diagnostic

Kind = Literal["models", "route"]
DRAFT = "https://json-schema.org/draft/2020-12/schema"
_SPECS: dict[str, type[BaseModel]] = {"models": ModelsSpec, "route": PolicySpec}
FEATURES = (
    "task_type",
    "capabilities",
    "input_tokens",
    "output_tokens",
    "tags",
    "workspace",
    "budget_usd",
)
_OPERATORS = "operators: eq, ne, gt, ge, lt, le, in, not_in, contains, exists, matches"
_TITLES = {"models": "models.yaml: providers and models", "route": "routes/*.yaml: one policy"}


def generate(kind: Kind) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) for one kind of file, generated from its spec model."""
    body = _SPECS[kind].model_json_schema(by_alias=True, mode="validation")
    head = {"$schema": DRAFT, "$id": f"{kind}.schema.json", "title": _TITLES[kind]}
    return {**head, **{k: v for k, v in body.items() if k != "title"}}


def render(kind: Kind) -> str:
    """The schema as the committed file's text (stable key order, trailing newline)."""
    return json.dumps(generate(kind), indent=2, sort_keys=True) + "\n"


@cache
def _validator(kind: Kind) -> Draft202012Validator:
    return Draft202012Validator(generate(kind))


def validate(doc: Document, kind: Kind) -> list[Diagnostic]:
    """Every schema error in `doc`, located and explained; [] when the document conforms."""
    errors = _validator(kind).iter_errors(doc.data)
    found = [d for error in errors for d in _diagnose(doc, error)]
    return sorted(set(found), key=lambda d: (d.line or 0, d.column or 0, d.path, d.message))


def parse(doc: Document, kind: Kind) -> tuple[BaseModel | None, list[Diagnostic]]:
    """Build the typed spec; on failure, report every problem located via the schema.

    Why pydantic first: it is an order of magnitude faster than jsonschema, and both are
    generated from the same models, so jsonschema only runs when there is something to
    explain (it collects every error with its path; pydantic's union errors are noisy).
    """
    try:
        return _SPECS[kind].model_validate(doc.data, strict=True), []
    except PydanticError as exc:
        problems = validate(doc, kind)
        return None, problems or [_from_pydantic(doc, e) for e in exc.errors()]


def _diagnose(doc: Document, error: ValidationError) -> Iterable[Diagnostic]:
    error = _deepest(error)
    path = _path(error.absolute_path)
    if error.validator == "additionalProperties":
        yield from _unknown_keys(doc, error, path)
    elif error.validator == "required":
        yield doc.diagnostic(path, _missing(error))
    elif error.validator == "enum":
        yield doc.diagnostic(
            path, _not_one_of(error), hint=_suggest(error.instance, _options(error))
        )
    elif error.validator in ("minProperties", "maxProperties") and "feature" in _properties(error):
        yield doc.diagnostic(
            path, "a comparison needs `feature` and exactly one operator", hint=_OPERATORS
        )
    elif error.validator == "pattern" and path.endswith("feature"):
        hint = (
            _suggest(error.instance, FEATURES) or f"features: {', '.join(FEATURES)}, metadata.<key>"
        )
        yield doc.diagnostic(path, f"unknown request feature `{error.instance}`", hint=hint)
    else:
        yield doc.diagnostic(path, _plain(error, may_quote(path, error.instance)))


def _deepest(error: ValidationError) -> ValidationError:
    """For anyOf/oneOf (optional fields, condition unions), report the most relevant branch.

    The branch that got furthest into the instance (deepest error path), then the one with
    the fewest errors, is the one the author meant; `null` branches are never meant.
    """
    while error.validator in ("anyOf", "oneOf") and error.context:
        branches: dict[Any, list[ValidationError]] = {}
        for e in error.context:
            if not (e.validator == "type" and e.validator_value == "null"):
                branches.setdefault(e.relative_schema_path[0], []).append(e)
        if not branches:
            break
        chosen = max(branches.values(), key=lambda es: (max(len(e.path) for e in es), -len(es)))
        candidate = best_match(chosen)
        if candidate is None:
            break
        error = candidate
    return error


def _unknown_keys(doc: Document, error: ValidationError, path: str) -> Iterable[Diagnostic]:
    allowed = sorted(_properties(error))
    instance = error.instance if isinstance(error.instance, dict) else {}
    for key in instance:
        if key in allowed:
            continue
        hint = _suggest(key, allowed) or f"allowed keys: {', '.join(allowed)}"
        yield doc.diagnostic(join_path(path, str(key)), f"unknown key `{key}`", hint=hint)


def _suggest(value: Any, options: Iterable[Any]) -> str | None:
    words = [str(o) for o in options]
    close = difflib.get_close_matches(str(value), words, n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None


def _missing(error: ValidationError) -> str:
    text = error.message
    name = text.split("'")[1] if text.count("'") >= 2 else text
    return f"missing required key `{name}`"


def _properties(error: ValidationError) -> dict[str, Any]:
    schema = error.schema
    props = schema.get("properties") if isinstance(schema, dict) else None
    return props if isinstance(props, dict) else {}


def _options(error: ValidationError) -> list[Any]:
    value = error.validator_value
    return list(value) if isinstance(value, list | tuple) else []


def _not_one_of(error: ValidationError) -> str:
    options = ", ".join(str(o) for o in _options(error))
    return f"`{error.instance}` is not one of: {options}"


def _plain(error: ValidationError, quote: bool = True) -> str:
    """jsonschema's message, worded for people; the value is left out where it may be a key."""
    if error.validator == "type":
        wanted = error.validator_value
        wanted = " or ".join(wanted) if isinstance(wanted, list) else wanted
        shown = f" `{_short(error.instance)}`" if quote else " (value not shown: may be a key)"
        return f"expected {wanted}, got {_type_name(error.instance)}{shown}"
    return str(error.message) if quote else f"invalid value ({error.validator} check failed)"


def _type_name(value: Any) -> str:
    names = {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "integer"}
    return names.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _path(parts: Iterable[Any]) -> str:
    path = ""
    for part in parts:
        path = join_path(path, part)
    return path


def _from_pydantic(doc: Document, err: Any) -> Diagnostic:
    data, path = doc.data, ""
    for part in err["loc"]:
        if (isinstance(data, dict) and part in data) or (
            isinstance(data, list) and isinstance(part, int) and part < len(data)
        ):
            data, path = data[part], join_path(path, part)
    message = str(err["msg"]).removeprefix("Value error, ")
    return doc.diagnostic(path, message)
