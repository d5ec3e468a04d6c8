"""`${VAR}` / `${VAR:-default}` interpolation over loaded YAML data, and base-URL overrides.

Why here and not in YAML tags: keys and URLs differ per machine, and people already keep
them in conventional variables (`OPENAI_API_KEY`, `OPENAI_BASE_URL`). A variable that is
unset and has no default is not an error: the value becomes "" and a warning names the
variable, so a provider whose key is missing is disabled with a stated reason instead of
breaking the whole config.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from engine.config.load import join_path

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


@dataclass(slots=True)
class Interpolation:
    """The result of interpolating a document: new data and the unset variables per path."""

    data: Any
    unset: dict[str, list[str]] = field(default_factory=dict)  # json path -> variable names
    #: json path -> the variable a whole value came from (`api_key: ${OPENAI_API_KEY}`), so
    #: the runtime can re-read a rotated key without a restart.
    refs: dict[str, str] = field(default_factory=dict)


def interpolate(data: Any, env: Mapping[str, str]) -> Interpolation:
    """Replace every `${VAR}` in string values; record which paths used unset variables."""
    result = Interpolation(None)
    result.data = _walk(data, "", env, result)
    return result


def variables_in(text: str) -> list[str]:
    """The variable names a string refers to, in order."""
    return [m.group(1) for m in _REF.finditer(text)]


def base_url_variable(provider_id: str) -> str:
    """`<ID>_BASE_URL`: the override every provider honours (`openai` -> `OPENAI_BASE_URL`)."""
    return re.sub(r"[^A-Za-z0-9]", "_", provider_id).upper() + "_BASE_URL"


def _walk(value: Any, path: str, env: Mapping[str, str], into: Interpolation) -> Any:
    # Containers without any `${` are returned as they are (nothing to copy), and paths are
    # only joined on the way to a substitution: most of a big config has neither.
    if isinstance(value, dict):
        if not _has_ref(value):
            return value
        return {k: _walk(v, join_path(path, k), env, into) for k, v in value.items()}
    if isinstance(value, list):
        if not _has_ref(value):
            return value
        return [_walk(v, join_path(path, i), env, into) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:
        return _substitute(value, path, env, into)
    return value


def _has_ref(value: Any) -> bool:
    """Whether any string inside `value` (a YAML tree) contains `${`."""
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, dict):
        return any(_has_ref(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_ref(v) for v in value)
    return False


def _substitute(text: str, path: str, env: Mapping[str, str], into: Interpolation) -> Any:
    unset = into.unset

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = env.get(name)
        if found:
            return found
        if default is not None:
            return default
        unset.setdefault(path, []).append(name)
        return ""

    out = _REF.sub(replace, text)
    ref = _REF.fullmatch(text)
    whole = ref is not None
    if ref is not None:
        into.refs[path] = ref.group(1)
    if whole and out and "key" not in path and "url" not in path:
        return _retype(out)
    return out


def _retype(text: str) -> Any:
    """`rpm: ${RPM:-500}` should be the number 500, as if it had been written in YAML."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, int | float | bool) and not isinstance(value, str) else text
