"""``@record``: a frozen dataclass, with the same equality, hash and repr, cheaper to define.

``dataclass`` compiles every method it writes from source at import: six per frozen class
(``__init__``, ``__repr__``, ``__eq__``, ``__hash__``, ``__setattr__``, ``__delattr__``). At
~130 frozen classes that was a third of the imports of a no-op ``virtsync plan`` (issue 17,
target 1). Here ``dataclass`` writes the three a frozen class needs compiled (``__init__`` and
the two that forbid assignment); equality, hash and repr are shared functions over each
class's fields, read by ``operator.attrgetter``, with dataclass's semantics: equal only to an
instance of the very same class with equal compared fields; the hash of the fields that
``hash``/``compare`` put in it; ``Name(field=value, ...)`` of the fields with ``repr``. What the
class body defines itself is kept, as dataclass keeps it.
"""

from __future__ import annotations

import dataclasses
import reprlib
from collections.abc import Callable
from dataclasses import field
from operator import attrgetter
from typing import Any, TypeVar, dataclass_transform, overload

__all__ = ["record"]

T = TypeVar("T", bound=type)


def _getter(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    """The values of ``names`` of an object, as the tuple dataclass's methods build."""
    if len(names) == 1:
        name = names[0]
        return lambda obj: (getattr(obj, name),)
    if not names:
        return lambda _obj: ()
    return attrgetter(*names)


def _methods(cls: Any) -> None:
    fields = dataclasses.fields(cls)
    own = cls.__dict__
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
        c = dataclasses.dataclass(frozen=True, eq=False, repr=False, kw_only=kw_only)(c)
        _methods(c)
        return c

    return wrap if cls is None else wrap(cls)
