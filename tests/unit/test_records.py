"""@record behaves as @dataclass(frozen=True): equality, hash, repr, immutability, replace, pickle."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass, field
from typing import Any

import pytest

from controller.model.records import record


def _pair(**options: Any) -> tuple[type, type]:
    """The same class body as a stdlib frozen dataclass and as a record."""

    def body(decorate: Any) -> type:
        @decorate
        class Thing:
            """A thing."""

            name: str
            size: int = 0
            note: str = field(default="", compare=False)
            cache: dict[str, int] | None = field(default=None, hash=False)
            secret: str = field(default="", repr=False)

        return Thing  # type: ignore[no-any-return]

    return body(dataclass(frozen=True, **options)), body(record(**options))


@pytest.mark.parametrize("kw_only", [False, True])
def test_a_record_equals_hashes_and_prints_as_a_frozen_dataclass(kw_only: bool) -> None:
    stdlib, ours = _pair(kw_only=kw_only)
    args = [dict(name="a", size=1, note="x", cache=None, secret="s"),
            dict(name="a", size=1, note="y", cache=None, secret="s"),  # note is not compared
            dict(name="a", size=2), dict(name="b"), dict(name="a", size=1, secret="t")]
    made = [(stdlib(**a), ours(**a)) for a in args]
    for s1, o1 in made:
        assert repr(o1) == repr(s1)
        assert hash(o1) == hash(s1)
        for s2, o2 in made:
            assert (o1 == o2) == (s1 == s2) and (o1 != o2) == (s1 != s2)
    with_cache = [ours(name="a", cache={"k": 1}), ours(name="a", cache={"k": 2})]
    assert with_cache[0] != with_cache[1]  # compared, though not hashed: a dict in it still hashes
    assert hash(with_cache[0]) == hash(with_cache[1])
    assert ours(name="a") != stdlib(name="a") and ours(name="a") != ("a", 0)  # never equal to another class


def test_a_record_is_frozen_and_replaces_and_pickles_as_a_dataclass() -> None:
    _, ours = _pair()
    thing = ours(name="a", size=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        thing.size = 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        del thing.size
    assert dataclasses.is_dataclass(thing) and [f.name for f in dataclasses.fields(thing)][:2] == ["name", "size"]
    bigger = dataclasses.replace(thing, size=3)
    assert bigger.size == 3 and bigger != thing
    assert ours.__doc__ == "A thing."
    kept = Kept(name="a", sizes=(1, 2))
    assert pickle.loads(pickle.dumps(kept)) == kept


@record(kw_only=True)
class Kept:
    name: str
    sizes: tuple[int, ...] = ()


def test_a_record_subclass_compares_its_own_fields_and_keeps_what_its_body_defines() -> None:
    @record
    class Base:
        a: int

    @record(kw_only=True)
    class Child(Base):
        b: int = 0

    assert Child(a=1, b=2) != Child(a=1, b=3) and Child(a=1) != Base(1)
    assert repr(Child(a=1, b=2)) == "test_a_record_subclass_compares_its_own_fields_and_keeps_what_its_body_" \
        "defines.<locals>.Child(a=1, b=2)"

    @record
    class Custom:
        a: int

        def __eq__(self, other: object) -> bool:
            return True

        def __hash__(self) -> int:
            return 7

        def __repr__(self) -> str:
            return "custom"

    assert Custom(1) == Custom(2) and hash(Custom(1)) == 7 and repr(Custom(1)) == "custom"

    @record
    class EqOnly:  # __eq__ alone: hashed by its fields all the same, as a frozen dataclass is
        a: int

        def __eq__(self, other: object) -> bool:
            return isinstance(other, EqOnly)

    @dataclass(frozen=True)
    class StdEqOnly:
        a: int

        def __eq__(self, other: object) -> bool:
            return isinstance(other, StdEqOnly)

    assert EqOnly(1) == EqOnly(2) and hash(EqOnly(1)) == hash(StdEqOnly(1)) != hash(EqOnly(2))


def test_a_record_without_compared_fields_equals_its_own_kind() -> None:
    @record
    class Marker:
        note: str = field(default="", compare=False)

    assert Marker("a") == Marker("b") and hash(Marker("a")) == hash(Marker("b"))


def test_a_record_initialises_as_a_frozen_dataclass_with_defaults_factories_and_post_init() -> None:
    made: list[str] = []

    def body(decorate: Any) -> type:
        @decorate
        class Thing:
            name: str
            tags: list[str] = field(default_factory=list)
            size: int = 0
            seen: tuple[str, ...] = field(default=(), init=False)
            stamp: list[int] = field(default_factory=lambda: [1], init=False)

            def __post_init__(self) -> None:
                made.append(self.name)

        return Thing  # type: ignore[no-any-return]

    stdlib, ours = body(dataclass(frozen=True)), body(record)
    for cls in (stdlib, ours):
        first, second = cls("a"), cls("b", ["x"], size=3)
        assert (first.tags, first.size, first.seen, first.stamp) == ([], 0, (), [1])
        assert (second.tags, second.size) == (["x"], 3)
        assert cls("c").tags is not cls("c").tags  # a new list each time, as default_factory makes
        with pytest.raises(TypeError):
            cls()  # name is required
        with pytest.raises(TypeError):
            cls("a", seen=("x",))  # init=False: not a parameter
    assert made == ["a", "b", "c", "c"] * 2
    assert ours.__doc__ == "Thing(name, tags, size)"


def test_a_record_checks_its_field_order_and_keyword_only_fields_when_defined() -> None:
    with pytest.raises(TypeError, match="non-default argument 'b' follows default argument"):
        @record
        class Wrong:
            a: int = 0
            b: int

    @record(kw_only=True)
    class Keywords:
        a: int = 0
        b: int

    assert Keywords(b=1) == Keywords(a=0, b=1)
    with pytest.raises(TypeError):
        Keywords(0, 1)  # type: ignore[misc]


def test_a_plain_subclass_of_a_record_may_set_its_own_attributes_but_not_the_fields() -> None:
    @record
    class Base:
        a: int

    class Plain(Base):
        pass

    thing = Plain(1)
    thing.extra = 2  # type: ignore[attr-defined]
    assert thing.extra == 2  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        thing.a = 3  # type: ignore[misc]


def test_a_record_with_slots_or_a_field_named_as_a_descriptor_initialises_through_setattr() -> None:
    # __init__ stores straight into __dict__ only where nothing on the class intercepts a field's
    # assignment; a slotted base's member or a data descriptor still gets its value.
    class Slotted:
        __slots__ = ("size",)

    @record
    class OnSlots(Slotted):
        name: str
        size: int  # no default: the class keeps the slot's member descriptor

    thing = OnSlots("a", 3)
    assert (thing.name, thing.size) == ("a", 3) and "size" not in thing.__dict__
    assert OnSlots("a", 3) == OnSlots("a", 3) and OnSlots("a", 3) != OnSlots("a", 4)

    @record
    class Plain:
        name: str
        size: int = 0

    assert Plain("b", 2).__dict__ == {"name": "b", "size": 2}
