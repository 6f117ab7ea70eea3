"""One declaration per field: how it is read, written in place, compared, and how a change lands.

Like virt-manager's virtinst ``XMLProperty`` (one declaration serves read, build and
edit) and terraform-provider-libvirt's field-policy layer: the planner's diff, the XML
editor, ``export``, the JSON Schema's descriptions and docs/fields.md all iterate these
declarations, so no consumer branches on a field's name.
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Callable, Mapping
from dataclasses import field
from typing import Any, Generic, TypeVar

from lxml import etree

from controller.fields.applied import declared
from controller.model.operations import Impact, LiveOp
from controller.model.records import record
from controller.model.state import GuestConfig, HostCapabilities, ObservedGuest

SpecT = TypeVar("SpecT")


@record
class Facts:
    """What writing and normalising need beyond the spec: the object's name and host facts.

    The planner normalises the desired value with the same facts the writer uses, so what is
    written reads back as what was wanted (no endless drift)."""

    name: str
    virt_type: str  # kvm | qemu | xen | test
    pool_paths: Mapping[str, str] = field(default_factory=dict)  # pool name → directory on the host
    keep: frozenset[str] = frozenset()  # disk names and NIC MACs not to remove (held removals)


@record
class GuestView:
    """What a guest field's impact and live operation may consult (pure data)."""

    spec: Any  # GuestSpec
    facts: Facts
    caps: HostCapabilities
    persistent: GuestConfig
    live: GuestConfig | None  # None: not running
    obs: ObservedGuest


def _same(a: Any, b: Any) -> bool:
    return bool(operator.eq(a, b))


def _shown(value: Any) -> Any:
    return value


def _always(_spec: Any, _facts: Facts) -> bool:
    return True


def live_ops(ops: LiveOp | tuple[LiveOp, ...] | None) -> tuple[LiveOp, ...]:
    """A field's live call(s) as a tuple (none, one or several)."""
    if ops is None:
        return ()
    return ops if isinstance(ops, tuple) else (ops,)


def call_names(ops: tuple[LiveOp, ...]) -> str:
    """The libvirt calls of some live operations, once each, in order: pinVcpuFlags, pinEmulator."""
    return ", ".join(dict.fromkeys(op.call for op in ops))


Reader = Callable[[etree._Element], Mapping[str, Any]]
Writer = Callable[[etree._Element, Any, Facts], None]


@record
class Field(Generic[SpecT]):
    """One field of a kind (or of a list item: a disk, a NIC)."""

    name: str  # as written in YAML: maxMemory; item fields: bus
    how: str  # how a change lands, for people (docs, schema descriptions)
    impact: Impact  # the usual impact; ``impact_of`` may refine it case by case
    pointer: str = ""  # JSON Pointer of the field, default /spec/NAME
    read: Reader | None = None  # XML → {essence attribute: value}
    write: Writer | None = None  # set the spec's value into an existing element, in place
    want: Callable[[SpecT, Facts], Any] | None = None  # the spec's value, normalised
    have: Callable[[Any, Any], Any] | None = None  # (essence, observed object) → normalised value
    same: Callable[[Any, Any], bool] = _same
    show: Callable[[Any], Any] = _shown
    impact_of: Callable[[Any], Impact] | None = None  # (the kind's view) → impact: may consult caps, running maxima
    # the call(s) that bring a LIVE change to a running guest (several: pinning, one per vCPU)
    live: Callable[[GuestView], LiveOp | tuple[LiveOp, ...] | None] | None = None
    call: Callable[[SpecT], LiveOp] | None = None  # a call every change needs, running or not (autostart)
    running_differs: Callable[[GuestView], tuple[LiveOp | tuple[LiveOp, ...] | None, str]] | None = None
    # The libvirt-python methods that make a change live (plans and docs name them; a test checks
    # that every live field names its own and that its typed calls are among them) …
    calls: tuple[str, ...] = ()
    # … and why a change waits for the guest's next boot where it does (default: next_boot_why)
    boot_why: str = ""
    compare_live: bool = True  # a running value that differs from the definition is pending
    # (view, want, running value) → the same, where the running guest spells it differently (pinning)
    same_live: Callable[[GuestView, Any, Any], bool] | None = None
    shows_live: bool = True  # plans show the running value beside the defined one
    virt_types: frozenset[str] | None = None  # the host kinds the field exists on (None: every kind)
    when: Callable[[SpecT, Facts], bool] = _always  # and whether the spec gives it a value to write
    is_declared: Callable[[SpecT], bool] | None = None  # default: NAME is set in the spec
    export: Callable[[Any], Any] | None = None  # essence value → YAML value (None: left out)
    samples: tuple[Any, ...] = ()  # YAML values for tests generated from the registry
    refuse: Callable[[SpecT, HostCapabilities, str], str | None] | None = None  # (spec, caps, host) → why not here
    xpaths: tuple[str, ...] = ()  # the XML the field owns (xmlPatches may not touch it)
    # Element tags the reader looks for: where the element holds none of them (anywhere below
    # it), the field reads as on an empty element, without being read (read_all). Empty: always
    # read. tests/unit/test_field_needs.py strips these tags from every golden document and every
    # sample the registry writes, and checks the reading is then the empty one.
    needs: tuple[str, ...] = ()
    planned_by: str = ""  # set for fields a dedicated step plans (power state, keyed lists)
    note: str = ""

    @property
    def path(self) -> str:
        return self.pointer or f"/spec/{self.name}"

    def exists_on(self, virt_type: str) -> bool:
        return self.virt_types is None or virt_type in self.virt_types

    def applies(self, spec: SpecT, facts: Facts) -> bool:
        """Compared and written for this spec on this host at all."""
        return self.exists_on(facts.virt_type) and self.when(spec, facts)

    def declared_in(self, spec: SpecT, names: set[str]) -> bool:
        """The spec gives this field (``names``: the spec's declared top-level names)."""
        return self.is_declared(spec) if self.is_declared is not None else self.name in names

    @property
    def next_boot_why(self) -> str:
        if self.boot_why:
            return self.boot_why
        if self.impact == Impact.RECREATE:
            return "only a new definition (undefine and define, same UUID) changes it"
        return "libvirt cannot change it on a running guest"

    def impact_for(self, view: Any) -> Impact:
        if self.impact_of is not None and view is not None:
            return self.impact_of(view)
        return self.impact


# (registry, spec) → the registry's fields the spec declares (registry 0: the declared names).
# Specs are frozen and a plan walks each one's fields several times (refusals, effect, compare),
# plans after plans in serve: keyed by identity, dropped with the spec (a weak reference makes
# the identity safe to reuse).
_DECLARED: dict[tuple[int, int], tuple[weakref.ref[Any], Any]] = {}


def _per_spec(key: tuple[int, int], spec: Any, compute: Callable[[], Any]) -> Any:
    hit = _DECLARED.get(key)
    if hit is not None and hit[0]() is spec:
        return hit[1]
    value = compute()
    try:
        ref = weakref.ref(spec, lambda _r, k=key: _DECLARED.pop(k, None))  # type: ignore[misc]
    except TypeError:
        return value  # not weakly referenceable: computed each time
    _DECLARED[key] = (ref, value)
    return value


# (registry, declared names, each custom ``is_declared`` answer) → the declared fields. A fleet's
# many guests declare few distinct sets (100,000 guests of one template: one), and a spec seen
# once — a one-shot drift's — would otherwise filter the whole registry for itself. Bounded:
# past it, sets are filtered afresh, never evicted (the common ones came first).
_BY_NAMES: dict[tuple[int, frozenset[str], tuple[bool, ...]], tuple[Any, tuple[Field[Any], ...]]] = {}
_BY_NAMES_MAX = 4096
# registry → its fields with an ``is_declared`` of their own (their answer is part of the key)
_CUSTOM: dict[int, tuple[Any, tuple[Field[Any], ...]]] = {}


def _custom(fields: tuple[Field[Any], ...]) -> tuple[Field[Any], ...]:
    hit = _CUSTOM.get(id(fields))
    if hit is None or hit[0] is not fields:
        hit = _CUSTOM[id(fields)] = (fields, tuple(f for f in fields if f.is_declared is not None))
    return hit[1]


def declared_fields(fields: tuple[Field[Any], ...], spec: Any) -> tuple[Field[Any], ...]:
    """The fields of ``fields`` that ``spec`` declares (its names set, or ``is_declared``), in
    registry order: computed once per spec object, and once per distinct declaration."""
    def compute() -> tuple[Field[Any], ...]:
        names = declared(spec)
        key = (id(fields), frozenset(names), tuple(bool(f.is_declared(spec))  # type: ignore[misc]
                                                   for f in _custom(fields)))
        hit = _BY_NAMES.get(key)
        if hit is not None and hit[0] is fields:  # the registry held there: its id is its own
            return hit[1]
        found = tuple(f for f in fields if f.declared_in(spec, names))
        if len(_BY_NAMES) < _BY_NAMES_MAX:
            _BY_NAMES[key] = (fields, found)
        return found

    return _per_spec((id(fields), id(spec)), spec, compute)  # type: ignore[no-any-return]


def declared_names(spec: Any) -> frozenset[str]:
    """``declared(spec)``, computed once per spec object."""
    return _per_spec((0, id(spec)), spec, lambda: frozenset(declared(spec)))  # type: ignore[no-any-return]


def read_all(fields: tuple[Field[Any], ...], el: etree._Element) -> dict[str, Any]:
    """Every field's reading of one element, merged: the essence's attributes. A field whose
    ``needs`` the element holds none of reads as on an empty element: most of a domain's
    fields are devices and tunings it does not have, and a look for each one costs more than
    one walk over the element's tags (a fleet's drift reads 100,000 definitions)."""
    plan = _reading_plan(fields)
    # lxml filters by tag in C: only the elements of gate tags become Python objects
    tags = frozenset(e.tag for e in el.iter(*plan.gate_tags)) if plan.gate_tags else frozenset()
    empties, readers = plan.for_tags(tags, el.tag)
    out = dict(empties)
    for read in readers:
        out.update(read(el))
    return out


class _ReadingPlan:
    """A registry's readers, and per set of the gate tags an element holds (few distinct ones:
    a fleet's definitions come from few templates), the empty readings of the fields it skips
    merged into one mapping and the readers left. No two fields read the same attribute
    (tests/unit/test_field_needs.py), so merging the empty ones first changes nothing."""

    def __init__(self, fields: tuple[Field[Any], ...]):
        self.fields = fields
        self.gate_tags = tuple(sorted({t for f in fields if f.read is not None for t in f.needs}))
        self._by_tags: dict[tuple[frozenset[Any], str], tuple[Mapping[str, Any], tuple[Reader, ...]]] = {}

    def for_tags(self, tags: frozenset[Any], tag: str) -> tuple[Mapping[str, Any], tuple[Reader, ...]]:
        hit = self._by_tags.get((tags, tag))
        if hit is None:
            empties: dict[str, Any] = {}
            readers: list[Reader] = []
            for f in self.fields:
                if f.read is None:
                    continue
                if f.needs and tags.isdisjoint(f.needs):
                    empties.update(empty_reading(f, tag))
                else:
                    readers.append(f.read)
            hit = (empties, tuple(readers))
            if len(self._by_tags) < _PLANS_MAX:
                self._by_tags[(tags, tag)] = hit
        return hit


_PLANS_MAX = 4096  # distinct tag sets kept per registry; past it, each is worked out afresh
_PLANS: dict[int, _ReadingPlan] = {}


def _reading_plan(fields: tuple[Field[Any], ...]) -> _ReadingPlan:
    plan = _PLANS.get(id(fields))
    if plan is None or plan.fields is not fields:
        plan = _PLANS[id(fields)] = _ReadingPlan(fields)
    return plan


def empty_reading(f: Field[Any], tag: str) -> Mapping[str, Any]:
    """What ``f`` reads from an empty ``<tag/>`` (a reading plan keeps it: its values are
    immutable, shared by every element the plan serves)."""
    assert f.read is not None
    return f.read(etree.Element(tag))


def write_all(fields: tuple[Field[Any], ...], el: etree._Element, spec: Any, facts: Facts,
              names: set[str] | None) -> None:
    """Write the named fields (None: every field) that apply on this host, in registry order."""
    for f in fields:
        if f.write is None or (names is not None and f.name not in names):
            continue
        if f.applies(spec, facts):
            f.write(el, spec, facts)
