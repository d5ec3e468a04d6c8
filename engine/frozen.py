"""`builder(cls)`: a cheaper constructor for a value built on a hot path, called by name.

A frozen dataclass's generated `__init__` stores each field with `object.__setattr__`
(its own `__setattr__` refuses), which costs about 70 ns a field: building a 14-field
`Response` took ~1.1 us, five times what a plain slotted class takes. And any class called
with keyword arguments (a dataclass or a NamedTuple) packs them into a dict for
`__init__`/`__new__` first, which doubles the cost of building a value by name. Every
engine call builds several such values (the response, attempt records, ledger rows,
candidates), so both costs showed in its CPU per call.

`builder(cls)` returns a plain function with the same parameters as `cls(...)` that gives
the same result. Being a function, it takes keyword arguments without a dict (so values are
built by name, where swapping two fields cannot pass unnoticed, at no cost). For a slotted
dataclass it fills a private twin, a subclass of `cls` that adds nothing but ordinary
attribute assignment (object's own `__setattr__`), and then makes the object a `cls` by
assigning `__class__`, which Python allows between a class and a subclass of the same
layout (~5x cheaper). For a NamedTuple it is the tuple's own constructor.
`cls(...)` itself is untouched (copying, pickling and `dataclasses.replace` use it).

Dataclasses only without `__post_init__`, `InitVar`s, keyword-only or `init=False` fields:
those whose generated `__init__` does nothing but store its arguments and defaults.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

__all__ = ["builder"]

P = ParamSpec("P")
T = TypeVar("T")


def builder(cls: Callable[P, T]) -> Callable[P, T]:
    """A function equivalent to `cls(...)` (same parameters, same result), but cheaper."""
    if not isinstance(cls, type):
        raise TypeError(f"{cls!r} is not a class")
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):
        return cast("Callable[P, T]", _tuple_builder(cls))
    if not dataclasses.is_dataclass(cls) or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a slotted dataclass or a NamedTuple")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has __post_init__; builder would skip it")
    fields = dataclasses.fields(cls)
    params = list(inspect.signature(cls.__init__).parameters)[1:]
    if params != [f.name for f in fields] or any(f.kw_only for f in fields):
        raise TypeError(f"{cls.__name__} has init=False, keyword-only fields or InitVars")
    namespace: dict[str, Any] = {
        "_target_cls_": cls,
        "_twin_": _twin(cls),
        "_unset_": _UNSET,
        "_new_": object.__new__,
    }
    args, body = [], ["self = _new_(_twin_)"]
    for f in fields:
        name = f.name
        args.append(_parameter(f, namespace))
        if f.default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            body.append(f"if {name} is _unset_: {name} = _f_{name}()")
        body.append(f"self.{name} = {name}")
    body += ["self.__class__ = _target_cls_", "return self"]
    return cast("Callable[P, T]", _define(cls, args, body, namespace))


def _twin(cls: type) -> type:
    """A subclass of `cls` with its layout (no slot of its own, no `__dict__`) whose
    attributes are set as any object's: a frozen dataclass's `__setattr__` and `__delattr__`
    give way to object's, so each field is stored straight into its slot. Being a subclass,
    not a copy of the slots, makes the final `__class__` assignment cheap: Python then
    needs no comparison of the two classes' slots (~300 instructions a build, callgrind)."""
    namespace = {
        "__slots__": (),
        "__setattr__": object.__setattr__,
        "__delattr__": object.__delattr__,
    }
    return type(f"_{cls.__name__}Twin", (cls,), namespace)


def _parameter(f: dataclasses.Field[Any], namespace: dict[str, Any]) -> str:
    """`name`, `name=<default>` or `name=<unset>` (its factory called in the body)."""
    if f.default is not dataclasses.MISSING:
        namespace[f"_d_{f.name}"] = f.default
        return f"{f.name}=_d_{f.name}"
    if f.default_factory is not dataclasses.MISSING:
        namespace[f"_f_{f.name}"] = f.default_factory
        return f"{f.name}=_unset_"
    return f.name


def _tuple_builder(cls: type[tuple[Any, ...]]) -> Callable[..., Any]:
    """A NamedTuple's constructor as a plain function (keywords without a dict)."""
    fields: tuple[str, ...] = getattr(cls, "_fields")  # noqa: B009 (NamedTuple's own field list)
    defaults: dict[str, Any] = getattr(cls, "_field_defaults")  # noqa: B009
    namespace: dict[str, Any] = {"_target_cls_": cls, "_tuple_new_": tuple.__new__}
    args = []
    for name in fields:
        if name in defaults:
            namespace[f"_d_{name}"] = defaults[name]
            args.append(f"{name}=_d_{name}")
        else:
            args.append(name)
    values = "".join(f"{name}, " for name in fields)
    return _define(cls, args, [f"return _tuple_new_(_target_cls_, ({values}))"], namespace)


def _define(
    cls: type, args: list[str], body: list[str], namespace: dict[str, Any]
) -> Callable[..., Any]:
    """Compile `build`, named after `cls` so tracebacks and profiles tell builders apart."""
    source = "def build({}):\n    {}\n".format(", ".join(args), "\n    ".join(body))
    # the same technique dataclasses uses for its own __init__
    exec(compile(source, f"<builder {cls.__module__}.{cls.__qualname__}>", "exec"), namespace)
    built: Callable[..., Any] = namespace["build"]
    return built


class _Unset:
    """The default of a default_factory field: "not given", so the factory is called."""

    __slots__ = ()


_UNSET = _Unset()
