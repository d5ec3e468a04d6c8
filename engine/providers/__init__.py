"""Provider adapters, one module per wire protocol. The only package that talks HTTP upstream.

`get_adapter(protocol)` returns the shared adapter instance for a wire protocol (all HTTP
adapters share one transport: one keep-alive pool per base URL); `register_adapter` lets
users and tests plug in their own; `aclose_all()` closes every pool.

Built-in protocols: openai (and every OpenAI-compatible server by base URL), azure,
anthropic, gemini, ollama, mock. Adapters are created on first use so importing the
package stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from engine.errors import UnknownModelError

from .base import Adapter

__all__ = [
    "Adapter",
    "UnknownProtocolError",
    "aclose_all",
    "get_adapter",
    "protocols",
    "register_adapter",
]


class UnknownProtocolError(UnknownModelError, LookupError):
    """No adapter is registered for the protocol (a LookupError too, like a missing key)."""


_BUILTIN: dict[str, tuple[str, str]] = {
    "openai": ("engine.providers.openai", "OpenAIAdapter"),
    "azure": ("engine.providers.azure", "AzureAdapter"),
    "anthropic": ("engine.providers.anthropic", "AnthropicAdapter"),
    "gemini": ("engine.providers.gemini", "GeminiAdapter"),
    "ollama": ("engine.providers.ollama", "OllamaAdapter"),
    "mock": ("engine.providers.mock", "MockAdapter"),
}

_adapters: dict[str, Adapter] = {}


def _builtin(protocol: str) -> Adapter:
    module_name, class_name = _BUILTIN[protocol]
    factory: Callable[[], Adapter] = getattr(importlib.import_module(module_name), class_name)
    return factory()


def get_adapter(protocol: str) -> Adapter:
    """The shared adapter for `protocol`; UnknownProtocolError names the known protocols."""
    adapter = _adapters.get(protocol)
    if adapter is not None:
        return adapter
    if protocol not in _BUILTIN:
        known = ", ".join(protocols())
        raise UnknownProtocolError(f"unknown provider protocol {protocol!r} (known: {known})")
    adapter = _adapters[protocol] = _builtin(protocol)
    return adapter


def register_adapter(protocol: str, adapter: Adapter) -> None:
    """Use `adapter` for `protocol` from now on (replaces a built-in of the same name)."""
    _adapters[protocol] = adapter


def protocols() -> list[str]:
    """Every protocol name get_adapter accepts."""
    return sorted(set(_BUILTIN) | set(_adapters))


async def aclose_all() -> None:
    """Close every adapter's pooled connections (safe to call more than once)."""
    for adapter in list(_adapters.values()):
        await adapter.aclose()
