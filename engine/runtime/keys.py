"""Keys a provider rejected (401): a cooldown with a re-probe, and rotation from the environment.

    401 on a key            its variable is re-read: a new value replaces the key at once
                            (no cooldown, cached endpoints with the old header dropped);
                            else the key cools down for COOLDOWN_S
    cooldown over           the variable is re-read again (a new value replaces the key);
                            else ONE request may take the key (the probe); the others keep
                            off it while the probe is out
    probe answered          the key is restored (any answer on the key restores it)
    probe rejected (401)    the cooldown doubles, up to MAX_COOLDOWN_S
    probe failed otherwise  the probe slot is freed: the next request probes

Why not retire the key until restart: keys get rotated and providers have bad minutes, and a
gateway that needs a restart to notice either serves errors or nothing in the meantime.
Only a key that came from one whole `${VAR}` (KeyPlan.env) can be rotated; the value is
read from the environment and never written anywhere (no log, no repr: Secret).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from engine.plan.values import KeyPlan, ProviderPlan
from engine.secrets import Secret

#: How long a key rejected with 401 is left out before one request probes it again.
COOLDOWN_S = 60.0
#: The longest cooldown a key rejected again and again reaches (doubling from COOLDOWN_S).
MAX_COOLDOWN_S = 3600.0


@dataclass(slots=True)
class Cooling:
    """A rejected key: out until `until`; `probe` is the try testing it, once over."""

    until: float
    period: float
    probe: object = None


class KeyBook:
    """The runtime's view of every provider's keys: cooling ones left out, rotated ones
    replaced. Empty (the usual case) costs `good_keys` two dict checks."""

    __slots__ = ("_views", "cooling", "environ", "rotated")

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.cooling: dict[str, Cooling] = {}  # key id -> its cooldown
        self.rotated: dict[str, KeyPlan] = {}  # key id -> the key with its new value
        self._views: dict[int, tuple[ProviderPlan, tuple[KeyPlan, ...]]] = {}

    def clear(self) -> None:
        """A reload read every key afresh: nothing cools, nothing is replaced."""
        self.cooling.clear()
        self.rotated.clear()
        self._views.clear()

    def usable(self, provider: ProviderPlan, now: float) -> tuple[KeyPlan, ...]:
        """The provider's current keys (rotated ones replaced) minus those cooling down or
        being probed; a key whose cooldown is over is first checked for a new value."""
        keys = self._current(provider) if self.rotated else provider.keys
        if not self.cooling:
            return keys
        if any(self._rotate_due(k, now) for k in keys):
            keys = self._current(provider)
        return tuple(k for k in keys if self._open(k.id, now))

    def claim(self, key_id: str, attempt: object) -> None:
        """A try took `key_id`: when its cooldown is over it becomes the key's probe."""
        c = self.cooling.get(key_id)
        if c is not None and c.probe is None:
            c.probe = attempt

    def answered(self, key_id: str) -> None:
        """The key worked: it is restored."""
        self.cooling.pop(key_id, None)

    def released(self, key_id: str, attempt: object) -> None:
        """A try on the key ended without a verdict on it: a probe's slot is freed."""
        c = self.cooling.get(key_id)
        if c is not None and c.probe is attempt:
            c.probe = None

    def rejected(self, key: KeyPlan, now: float, attempt: object) -> bool:
        """A 401 on `key` from `attempt`. True when the key was replaced by a new value
        from its variable (the caller drops what it cached with the old one)."""
        if self._rotate(key):
            self.cooling.pop(key.id, None)
            return True
        c = self.cooling.get(key.id)
        if c is None:
            self.cooling[key.id] = Cooling(now + COOLDOWN_S, COOLDOWN_S)
        elif c.probe is attempt:  # the re-probe was rejected too: wait longer
            c.period = min(c.period * 2, MAX_COOLDOWN_S)
            c.until, c.probe = now + c.period, None
        return False

    # -- internals ------------------------------------------------------------------------

    def _open(self, key_id: str, now: float) -> bool:
        c = self.cooling.get(key_id)
        return c is None or (c.probe is None and now >= c.until)

    def _rotate_due(self, key: KeyPlan, now: float) -> bool:
        """A cooled-down key whose variable changed is replaced (and no longer cools)."""
        c = self.cooling.get(key.id)
        if c is None or c.probe is not None or now < c.until or not self._rotate(key):
            return False
        del self.cooling[key.id]
        return True

    def _rotate(self, key: KeyPlan) -> bool:
        """Re-read the key's variable; a new non-empty value replaces the key."""
        if key.env is None:
            return False
        value = (self.environ.get(key.env) or "").strip()
        current = self.rotated.get(key.id, key).secret
        if not value or (current is not None and value == current.reveal()):
            return False
        self.rotated[key.id] = replace(key, secret=Secret(value))
        self._views.clear()
        return True

    def _current(self, provider: ProviderPlan) -> tuple[KeyPlan, ...]:
        """The provider's keys with the rotated ones replaced (built once per rotation)."""
        view = self._views.get(id(provider))
        if view is None or view[0] is not provider:
            keys = tuple(self.rotated.get(k.id, k) for k in provider.keys)
            view = self._views[id(provider)] = (provider, keys)
        return view[1]
