"""A string wrapper for API keys that never shows its value by accident.

`repr`, `str`, f-strings, logging and pydantic dumps all print `***`; only `reveal()` gives
the key, and only adapters call it, right where a header is built.

Gateways take a second credential as an extra header (`header:x-portkey-api-key`,
`header:cf-aig-authorization`, `header:Helicone-Auth` provider options): `ProviderOptions`
masks those in its repr, and `option_secrets` lists them for redaction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:  # pragma: no cover - pickling
        return (Secret, ("***",))


#: A `header:<Name>` option whose name says it carries a credential.
_CREDENTIAL_HEADER = re.compile(r"auth|key|token|secret|password|signature", re.IGNORECASE)


def is_secret_option(name: str) -> bool:
    """Whether a provider option is a credential header (its value must never be shown)."""
    return name.startswith("header:") and _CREDENTIAL_HEADER.search(name[7:]) is not None


def option_secrets(options: Mapping[str, str]) -> tuple[str, ...]:
    """The values of the credential headers among `options`, for `redact`."""
    return tuple(v for k, v in options.items() if v and is_secret_option(k))


#: The user-info part of a URL (`user:password@`, `token@`): a credential.
_USERINFO = re.compile(r"(?<=://)[^/@\s]+(?=@)")


def redact_url(url: str) -> str:
    """`https://user:pass@host/v1` -> `https://***@host/v1`."""
    return _USERINFO.sub("***", url)


class ProviderURL(str):
    """A provider's base URL: the URL itself everywhere it is used, but its repr (a plan's
    or an endpoint's repr, a debugger, a log of either) masks credentials written into it
    (`https://user:pass@gateway/v1`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(redact_url(str(self)))


class ProviderOptions(Mapping[str, str]):
    """A provider's options, read-only, with credential headers masked in its repr."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, str]) -> None:
        self._data = dict(data)

    def __getitem__(self, name: str) -> str:
        return self._data[name]

    # Mapping's own `get` and `in` go through __getitem__ and a caught KeyError, about 1.5 us
    # for an absent option; the adapters ask for absent ones on every call (bench.runtime).
    def get(self, name: str, default: Any = None) -> Any:
        return self._data.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        shown = {k: "***" if is_secret_option(k) else v for k, v in self._data.items()}
        return repr(shown)


_KEY_PATTERNS = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|sk-ant-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,}|"
    r"gsk_[A-Za-z0-9]{8,}|hf_[A-Za-z0-9]{8,}|Bearer\s+[A-Za-z0-9._\-]{8,}|"
    r"(?<=://)[^/@\s]+(?=@))"  # the user-info of a URL (`https://user:pass@host`)
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove every known secret and anything shaped like an API key from `text`."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    # Every pattern needs an uppercase letter, "-", "_", whitespace or "://", so a text of
    # lowercase letters and digits (the engine's own request ids) is returned unscanned:
    # the scan cost ~5k instructions per ledger row (callgrind).
    if text.isalnum() and text.islower():
        return text
    return _KEY_PATTERNS.sub("***", text)
