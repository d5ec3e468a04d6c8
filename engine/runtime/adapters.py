"""The engine's adapters: those it was given, else the factory's, one per wire protocol."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from engine.endpoints import Endpoint
from engine.errors import ConfigError, Diagnostic
from engine.providers.base import Adapter

AdapterFactory = Callable[[str], Adapter]  # protocol -> its shared adapter (engine.providers)


def no_factory(protocol: str) -> Adapter:
    raise LookupError("this engine was given no adapter factory")


class Adapters:
    """Adapters by protocol, created on first use; an unknown protocol is a ConfigError."""

    def __init__(
        self, given: Mapping[str, Adapter] | None, factory: AdapterFactory = no_factory
    ) -> None:
        self._by_protocol: dict[str, Adapter] = dict(given or {})
        self._factory = factory

    def get(self, protocol: str) -> Adapter:
        adapter = self._by_protocol.get(protocol)
        if adapter is None:
            try:
                adapter = self._factory(protocol)
            except (KeyError, LookupError, ValueError) as exc:
                why = f"no adapter for protocol {protocol!r}: {exc}"
                raise ConfigError([Diagnostic(why)]) from None
            self._by_protocol[protocol] = adapter
        return adapter

    def warm(self, protocol: str) -> Callable[[Endpoint], Awaitable[None]]:
        """The adapter's `warm`: one connection to the endpoint, no tokens spent."""
        return self.get(protocol).warm

    async def aclose(self) -> None:
        for adapter in list(self._by_protocol.values()):
            await adapter.aclose()
