"""Frozen dataclass values (a cached Response) to JSON bytes and back, driven by type hints.

Why not pickle: a value read from a shared store (Redis) must not be able to run code.
Why not hand-written per type: the Response grows fields (usage breakdowns, metadata), and
a codec that walks the dataclass's own type hints follows every such change by itself.
Supported shapes are what our values are made of: dataclasses, `tuple[X, ...]`, `X | None`,
str-to-str mappings (`Metadata`), Literal strings and JSON scalars. Anything else is a
TypeError when the codec is built, not a surprise at run time.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import orjson

T = TypeVar("T")
Decode = Callable[[Any], Any]
_SCALARS = (str, int, float, bool)


class DataclassCodec(Generic[T]):
    """`encode(value) -> bytes`, `decode(bytes) -> value` for one dataclass type."""

    def __init__(self, cls: type[T]) -> None:
        self._cls = cls
        self._decode = _decoder(cls)

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, self._cls):
            raise TypeError(f"expected {self._cls.__name__}, got {type(value).__name__}")
        return orjson.dumps(_plain(value))

    def decode(self, data: bytes) -> Any:
        """The value; ValueError when the bytes are not one (damaged, another version)."""
        try:
            return self._decode(orjson.loads(data))
        except (TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"not a {self._cls.__name__}: {exc}") from None


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _decoder(hint: Any) -> Decode:
    """A function turning plain JSON data into a value of type `hint`."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _dataclass_decoder(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        inner = [_decoder(a) for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported union {hint!r}")
        return lambda v: None if v is None else inner[0](v)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = _decoder(args[0])
        return lambda v: tuple(item(x) for x in v)
    if origin is typing.Literal or hint in _SCALARS or hint is Any:
        return lambda v: v
    if isinstance(hint, type) and issubclass(hint, Mapping):
        build = typing.cast(Callable[[dict[str, Any]], Any], hint)  # Metadata(dict)
        return lambda v: build(dict(v))
    raise TypeError(f"no JSON form for {hint!r}")


def _dataclass_decoder(cls: type) -> Decode:
    hints = typing.get_type_hints(cls)
    fields = [(f.name, _decoder(hints[f.name])) for f in dataclasses.fields(cls) if f.init]

    def decode(data: Any) -> Any:
        return cls(**{name: dec(data[name]) for name, dec in fields if name in data})

    return decode
