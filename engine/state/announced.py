"""The limits each provider key announced in its rate-limit headers, kept in a small JSON
file beside the ledger so `python -m engine validate` can say when a declared limit is
below what the provider allows.

Why a file: the limits a provider announces are learned at run time (state/ratelimit/
learned.py) and lived only in the serving process, while `validate` runs later, in another
process, on the config alone. A declared `limits:` is a ceiling no header raises, so a
figure copied from an old tier silently throttles an account that now has more; validate
can only say so if what the provider said is kept somewhere it can read.

The file holds, per provider and key label (never the key itself), the latest limit per
dimension and when it was seen:

    {"version": 1, "providers": {"openai": {"openai#0": {"rpm": 10000, "tpm": 2000000,
                                                          "seen": 1796000000.0}}}}

It is written only when an announced figure changes (rare: limits move with tiers, not
requests), atomically (a temporary file renamed over it), merged with what other processes
wrote so workers do not erase each other's keys. A file that cannot be read counts as
empty; one that cannot be written is logged, never an error for the call.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from engine.clock import Clock
from engine.messages import RateLimitInfo

log = logging.getLogger(__name__)

#: The file's name, beside the ledger (engine.assemble.announced_path).
FILE_NAME = "announced-limits.json"
#: Announced dimensions: requests, input, output and total tokens per minute.
DIMENSIONS = ("rpm", "input_tpm", "output_tpm", "tpm")
#: A larger file is not read (it is not one this module wrote).
MAX_BYTES = 4 * 1024 * 1024

Announced = dict[str, dict[str, dict[str, float]]]  # provider -> key label -> figures


def figures(info: RateLimitInfo) -> dict[str, float]:
    """The limits one answer's headers announced, by dimension (absent ones left out)."""
    values = (
        info.limit_requests,
        info.limit_input_tokens,
        info.limit_output_tokens,
        info.limit_tokens,
    )
    return {dim: v for dim, v in zip(DIMENSIONS, values, strict=True) if v is not None}


class AnnouncedLimits:
    """The latest announced limits of every key this process talked to, and their file."""

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path, self._clock = path, clock
        self._seen: Announced = {}
        self._last: dict[tuple[str, str], tuple[int | None, ...]] = {}  # the cheap check
        self._lock = threading.Lock()

    def observe(self, provider: str, key_id: str, info: RateLimitInfo) -> bool:
        """Remember what one answer announced; True when a figure changed (save then).
        Called on every answer that carried headers: the unchanged case is one tuple
        compared with the last one of that key."""
        values = (
            info.limit_requests,
            info.limit_input_tokens,
            info.limit_output_tokens,
            info.limit_tokens,
        )
        if self._last.get((provider, key_id)) == values:
            return False
        self._last[(provider, key_id)] = values
        found = figures(info)
        if not found:
            return False
        keys = self._seen.setdefault(provider, {})
        known = keys.get(key_id)
        if known is not None and all(known.get(d) == v for d, v in found.items()):
            return False
        keys[key_id] = {**(known or {}), **found, "seen": self._clock.time()}
        return True

    def save(self) -> None:
        """Merge this process's figures into the file (blocking: run it off the loop)."""
        with self._lock:
            merged = read(self.path)
            for provider, keys in self._seen.items():
                merged.setdefault(provider, {}).update({k: dict(v) for k, v in keys.items()})
            body = json.dumps({"version": 1, "providers": merged}, indent=1, sort_keys=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_text(body)
                os.replace(tmp, self.path)
            except OSError as exc:
                log.warning("announced limits not saved to %s: %s", self.path, exc)


def read(path: Path) -> Announced:
    """The file's figures; {} when it is missing, too large or not what this module writes."""
    try:
        if path.stat().st_size > MAX_BYTES:
            return {}
        data: Any = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    providers = data.get("providers") if isinstance(data, dict) else None
    if not isinstance(providers, dict):
        return {}
    out: Announced = {}
    for provider, keys in providers.items():
        if isinstance(keys, dict):
            out[str(provider)] = {
                str(k): {d: float(n) for d, n in v.items() if _number(n)}
                for k, v in keys.items()
                if isinstance(v, dict)
            }
    return out


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
