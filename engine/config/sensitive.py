"""Which config values may be API keys, so that no diagnostic ever quotes one.

Why: validate/explain/serve print diagnostics to terminals, CI logs and JSON reports, and a
diagnostic usually quotes the offending value ("expected string, got list `[...]`"). When
that value is a key written literally in models.yaml (or a mapping that holds one), quoting
it would publish it. Paths are the ones `join_path` builds: `providers.p.api_key`,
`providers.p.keys[0].key`, `providers.p.options["header:Authorization"]`, and server.yaml's
`api_keys[0].key`.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["holds_secret", "is_secret_path", "may_quote"]

#: The last path segment: key, keys, api_key, api_keys (server.yaml), an index into a pool,
#: or a `header:<Name>` option.
_SECRET_PATH = re.compile(
    r'(?:^|\.)(?:api_)?keys?(?:\[\d+\])?$|\[(?:"header:[^"]*"|\'header:[^\']*\')\]$'
)
_SECRET_FIELDS = frozenset({"api_key", "api_keys", "keys", "key"})


def is_secret_path(path: str) -> bool:
    """Whether the value at `path` is (part of) a key: api_key, a key pool, a header option."""
    return _SECRET_PATH.search(path) is not None


def holds_secret(value: Any) -> bool:
    """Whether a mapping or list contains a key field anywhere inside it."""
    if isinstance(value, dict):
        return any(
            str(k) in _SECRET_FIELDS or str(k).startswith("header:") or holds_secret(v)
            for k, v in value.items()
        )
    if isinstance(value, list):
        return any(holds_secret(v) for v in value)
    return False


def may_quote(path: str, value: Any) -> bool:
    """Whether a diagnostic about `value` at `path` may show the value itself."""
    return not is_secret_path(path) and not holds_secret(value)
