"""``@record``: a frozen dataclass, with the same equality, hash and repr, cheaper to define.

``dataclass`` compiles every method it writes from source at import: six per frozen class
(``__init__``, ``__repr__``, ``__eq__``, ``__hash__``, ``__setattr__``, ``__delattr__``). At
~130 frozen classes that was most of the imports of a no-op ``virtsync plan`` (issue 17,
target 1), where few of those classes are ever made. Here ``dataclass`` only collects the
fields (``dataclasses.fields``, ``replace`` and ``is_dataclass`` work as on any dataclass)
and compiles nothing: ``__init__`` is compiled from the fields the first time the class is
made (as fast as dataclass's from then on); equality, hash and repr are shared functions over
each class's fields, read by ``operator.attrgetter``, with dataclass's semantics: equal only
to an instance of the very same class with equal compared fields; the hash of the fields that
``hash``/``compare`` put in it; ``Name(field=value, ...)`` of the fields with ``repr``; and
assigning or deleting a field raises ``FrozenInstanceError``. What the class body defines
itself is kept, as dataclass keeps it. ``InitVar`` pseudo-fields are not supported.
"""

from __future__ import annotations

import dataclasses
import reprlib
from collections.abc import Callable
from dataclasses import MISSING, FrozenInstanceError, field
from operator import attrgetter
from typing import Any, TypeVar, dataclass_transform, overload

__all__ = ["record"]

T = TypeVar("T", bound=type)
_FACTORY = object()  # the default of a parameter whose field has a default_factory


def _getter(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    """The values of ``names`` of an object, as the tuple dataclass's methods build."""
    if len(names) == 1:
        name = names[0]
        return lambda obj: (getattr(obj, name),)
    if not names:
        return lambda _obj: ()
    return attrgetter(*names)


def _init_source(cls: Any, fields: tuple[dataclasses.Field[Any], ...]) -> tuple[str, dict[str, Any]]:
    """The source of dataclass's ``__init__`` for these fields, and the names it refers to."""
    names: dict[str, Any] = {"_record_set": object.__setattr__, "_record_factory": _FACTORY}
    # Straight into the instance's __dict__ where nothing on the class intercepts the assignment
    # (no __slots__, no descriptor named as a field): a store per field instead of a call of
    # object.__setattr__ (a 44-field essence is made in 4 us instead of 14; a fleet makes 100,000).
    direct = "__slots__" not in cls.__dict__ and not any(
        hasattr(getattr(cls, f.name, None), "__set__") for f in fields)
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for f in fields:
        name = f.name
        if f.default is not MISSING:
            names[f"_record_default_{name}"] = f.default
        if f.default_factory is not MISSING:
            names[f"_record_make_{name}"] = f.default_factory
        if f.init:
            default = (f"=_record_default_{name}" if f.default is not MISSING
                       else "=_record_factory" if f.default_factory is not MISSING else "")
            (keyword if f.kw_only else positional).append(name + default)
            value = (f"_record_make_{name}() if {name} is _record_factory else {name}"
                     if f.default_factory is not MISSING else name)
        elif f.default_factory is not MISSING:
            value = f"_record_make_{name}()"
        elif f.default is not MISSING:
            value = f"_record_default_{name}"
        else:
            continue
        body.append(f"  _record_dict[{name!r}] = {value}" if direct else f"  _record_set(self, {name!r}, {value})")
    if hasattr(cls, "__post_init__"):
        body.append("  self.__post_init__()")
    if direct and body:
        body.insert(0, "  _record_dict = self.__dict__")
    params = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    return f"def __init__({params}):\n" + ("\n".join(body) or "  pass") + "\n", names


def _compiled_init(cls: Any) -> Callable[..., None]:
    source, names = _init_source(cls, dataclasses.fields(cls))
    exec(source, names)  # the source is built above from the class's own field names
    init: Callable[..., None] = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


def _check_defaults(cls: Any, fields: tuple[dataclasses.Field[Any], ...]) -> None:
    """dataclass's definition-time check, which compiling ``__init__`` later would defer."""
    seen_default = False
    for f in fields:
        if not f.init or f.kw_only:
            continue
        if f.default is not MISSING or f.default_factory is not MISSING:
            seen_default = True
        elif seen_default:
            raise TypeError(f"{cls.__qualname__}: non-default argument {f.name!r} follows default argument")


def _lazy_init(cls: Any) -> Callable[..., None]:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        cls.__init__ = _compiled_init(cls)
        cls.__init__(self, *args, **kwargs)

    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    return __init__


def _frozen(cls: Any, names: frozenset[str]) -> None:
    # As dataclass's frozen methods: a subclass that is no dataclass may set its own attributes.
    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)

    def __delattr__(self: Any, name: str) -> None:
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)

    cls.__setattr__ = __setattr__
    cls.__delattr__ = __delattr__


def _methods(cls: Any) -> None:
    fields = dataclasses.fields(cls)
    own = cls.__dict__
    for name in ("__setattr__", "__delattr__"):
        if name in own:
            raise TypeError(f"Cannot overwrite attribute {name} in class {cls.__name__}")
    _check_defaults(cls, fields)
    if "__init__" not in own:
        cls.__init__ = _lazy_init(cls)
    _frozen(cls, frozenset(f.name for f in fields))
    # As dataclass decides (its _hash_action table for eq=True, frozen=True): a __hash__ the
    # body defines is kept, unless it is the None that defining __eq__ alone implies.
    explicit_hash = "__hash__" in own and not (own["__hash__"] is None and "__eq__" in own)
    if "__eq__" not in own:
        compared = _getter([f.name for f in fields if f.compare])

        def __eq__(self: Any, other: Any) -> Any:
            if other.__class__ is self.__class__:
                return compared(self) == compared(other)
            return NotImplemented

        cls.__eq__ = __eq__
    if not explicit_hash:
        hashed = _getter([f.name for f in fields if (f.compare if f.hash is None else f.hash)])

        def __hash__(self: Any) -> int:
            return hash(hashed(self))

        cls.__hash__ = __hash__
    if "__repr__" not in own:
        shown = tuple(f.name for f in fields if f.repr)

        @reprlib.recursive_repr()
        def __repr__(self: Any) -> str:
            inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in shown)
            return f"{self.__class__.__qualname__}({inner})"

        cls.__repr__ = __repr__


@overload
def record(cls: T, /) -> T: ...


@overload
def record(*, kw_only: bool = False) -> Callable[[T], T]: ...


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def record(cls: Any = None, /, *, kw_only: bool = False) -> Any:
    """``@dataclass(frozen=True)`` (``kw_only`` as dataclass's), defined at less cost."""

    def wrap(c: Any) -> Any:
        # dataclass gives a class without a docstring one from inspect.signature, which parses a
        # builtin __init__'s text signature with the tokenizer: a cheaper one of the same form.
        undocumented = not c.__dict__.get("__doc__")
        if undocumented:
            c.__doc__ = c.__name__
        # init/eq/repr/frozen off: dataclass then only collects the fields; _methods writes the rest.
        c = dataclasses.dataclass(init=False, eq=False, repr=False, kw_only=kw_only)(c)
        if undocumented:
            c.__doc__ = f"{c.__name__}({', '.join(f.name for f in dataclasses.fields(c) if f.init)})"
        _methods(c)
        return c

    return wrap if cls is None else wrap(cls)
