"""Declared limits below what the provider announced: the warnings `validate` adds when
the limits providers announced in their rate-limit headers were kept (engine.state.
announced writes them beside the ledger while the engine serves).

Why: a declared `limits:` is a ceiling the headers never raise (state/ratelimit/learned.py),
so a figure from an old tier, or a guess, throttles an account the provider allows more.
Each warning points at the file:line of the declared figure that is lower, per key label
(`openai#0`, as `GET /v1/limits` shows them). Declared token limits are compared with the
same dimension announced, else with the announced total tokens per minute (OpenAI
announces only a total).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

from engine.compile.registry import key_entries
from engine.config.load import Document, join_path
from engine.config.specs import KeySpec, ModelsSpec, ProviderSpec
from engine.errors import Diagnostic

#: Declared dimensions, each with the announced ones it is compared with (first found).
COMPARED = {"rpm": ("rpm",), "input_tpm": ("input_tpm", "tpm"), "output_tpm": ("output_tpm", "tpm")}

Announced = Mapping[str, Mapping[str, Mapping[str, float]]]  # provider -> key -> figures


def below_announced(spec: ModelsSpec, doc: Document, announced: Announced) -> list[Diagnostic]:
    """A warning for every declared limit lower than its key's announced one."""
    found: list[Diagnostic] = []
    for pid, provider in spec.providers.items():
        keys = announced.get(pid)
        if not keys:
            continue
        for key_id, dim, path, value in declared_limits(pid, provider):
            heard = keys.get(key_id, {})
            for name in COMPARED[dim]:
                if name in heard:
                    if value < heard[name]:
                        found.append(_warning(doc, path, key_id, dim, value, name, heard))
                    break
    return found


def declared_limits(pid: str, spec: ProviderSpec) -> Iterator[tuple[str, str, str, int]]:
    """(key label, dimension, path of the declared figure, figure) for every key whose limit
    was declared, on the key itself or on the provider (which a key without one inherits)."""
    default, prefix = spec.limits, join_path("providers", pid)
    entries = key_entries(pid, spec)
    labelled: list[tuple[str, KeySpec | str | None, str]]
    labelled = [(f"{pid}#{i}", e, p) for i, (e, p) in enumerate(entries)]
    if not entries:  # a keyless provider: its limits ride on the `<pid>#none` label
        labelled = [(f"{pid}#none", None, "")]
    for key_id, entry, path in labelled:
        for dim in COMPARED:
            own = getattr(entry, dim) if isinstance(entry, KeySpec) else None
            if own is not None:
                yield key_id, dim, join_path(path, dim), own
            elif default is not None and getattr(default, dim) is not None:
                yield (
                    key_id,
                    dim,
                    join_path(join_path(prefix, "limits"), dim),
                    getattr(default, dim),
                )


def _warning(
    doc: Document,
    path: str,
    key_id: str,
    dim: str,
    value: int,
    name: str,
    heard: Mapping[str, float],
) -> Diagnostic:
    seen = heard.get("seen")
    when = time.strftime(" on %Y-%m-%d %H:%M UTC", time.gmtime(seen)) if seen else ""
    what = dim if name == dim else f"{dim} (compared with the total tokens per minute)"
    return doc.diagnostic(
        path,
        f"declared {what} {value} is below the {int(heard[name])} the provider announced "
        f"for key {key_id}{when}",
        hint="raise or remove it: a declared limit is a ceiling the headers never raise",
        severity="warning",
    )
