"""`builder(cls)`: a cheaper constructor for a frozen, slotted dataclass built on a hot path.

A frozen dataclass's generated `__init__` stores each field with `object.__setattr__`
(its own `__setattr__` refuses), which costs about 70 ns a field: building a 14-field
`Response` took ~1.1 us, five times what a plain slotted class takes. Every engine call
builds several such values (the response, its usage, attempt record, ledger row,
rate-limit info, lease), so that was a tenth of the engine's own CPU per call.

`builder(cls)` returns a callable with the same parameters as `cls(...)` that gives the
same result: an ordinary instance of `cls` (same type, same fields, frozen from then on,
equal to and hashing like one built by `cls(...)`). For a class with no base it fills a
private twin class (the same slots, but ordinary attribute assignment) and then makes the
object a `cls` by assigning `__class__`, which Python allows between classes of identical
layout (~5x cheaper). For a subclass (the twin would inherit the base's Python-level
`__setattr__`) it stores each field through its slot's descriptor (~2x cheaper).
`cls(...)` itself is untouched (copying, pickling and `dataclasses.replace` use it).

Only for dataclasses without `__post_init__`, `InitVar`s, keyword-only or `init=False`
fields: those whose generated `__init__` does nothing but store its arguments and defaults.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["builder"]

T = TypeVar("T")


def builder(cls: type[T]) -> Callable[..., T]:
    """A constructor equivalent to `cls(...)` (same parameters, same result), but cheaper."""
    if not dataclasses.is_dataclass(cls) or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a slotted dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has __post_init__; builder would skip it")
    fields = dataclasses.fields(cls)
    params = list(inspect.signature(cls.__init__).parameters)[1:]
    if params != [f.name for f in fields] or any(f.kw_only for f in fields):
        raise TypeError(f"{cls.__name__} has init=False, keyword-only fields or InitVars")
    twin = cls.__base__ is object
    namespace: dict[str, Any] = {"_target_cls_": cls, "_unset_": _UNSET, "_new_": object.__new__}
    args, body = [], [] if twin else ["self = _new_(_target_cls_)"]
    for f in fields:
        name = f.name
        if f.default is not dataclasses.MISSING:
            namespace[f"_d_{name}"] = f.default
            args.append(f"{name}=_d_{name}")
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"_f_{name}"] = f.default_factory
            args.append(f"{name}=_unset_")
            body.append(f"if {name} is _unset_: {name} = _f_{name}()")
        else:
            args.append(name)
        if twin:
            body.append(f"self.{name} = {name}")
        else:
            owner = next(c for c in cls.__mro__ if name in c.__dict__)
            namespace[f"_s_{name}"] = owner.__dict__[name].__set__
            body.append(f"_s_{name}(self, {name})")
    if twin:
        body.append("self.__class__ = _target_cls_")
        _define("__init__", ["self", *args], body, namespace)
        return type(
            f"_{cls.__name__}Builder",
            (object,),
            {"__slots__": cls.__dict__["__slots__"], "__init__": namespace["__init__"]},
        )
    body.append("return self")
    _define("build", args, body, namespace)
    built: Callable[..., T] = namespace["build"]
    return built


def _define(name: str, args: list[str], body: list[str], namespace: dict[str, Any]) -> None:
    source = "def {}({}):\n    {}\n".format(name, ", ".join(args), "\n    ".join(body))
    exec(source, namespace)  # the same technique dataclasses uses for its own __init__


class _Unset:
    """The default of a default_factory field: "not given", so the factory is called."""

    __slots__ = ()


_UNSET = _Unset()
