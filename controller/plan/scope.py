"""What one reconcile covers, and which other hosts it must look at for moves (pure).

A scope is everything, some hosts, or one object. A guest whose spec names another host is
moved (live or cold) from whichever host holds it; so every scope that touches either end
looks the guest up on the other end, and a guest that is declared for another host is
never pruned as "gone from the specs" (its move may simply not be plannable yet).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field

from controller.model.records import record
from controller.model.state import HostState, ResourceKey
from controller.spec.models import UNPLACED, Guest, Host, Network, StoragePool
from controller.spec.specset import Located, SpecSet


@record
class Scope:
    """Everything (no hosts, no key), the named hosts, or one object (``key``)."""

    hosts: frozenset[str] = field(default_factory=frozenset)
    key: ResourceKey | None = None

    @classmethod
    def everything(cls) -> Scope:
        return cls()

    @classmethod
    def of_hosts(cls, *names: str) -> Scope:
        return cls(frozenset(names))

    @classmethod
    def of_object(cls, key: ResourceKey) -> Scope:
        return cls(frozenset({key.host}), key)

    def primary(self, specs: SpecSet) -> list[str]:
        """The hosts observed whole (for an object: its host, narrowed to the object), in spec order."""
        order = specs.memo("host-order", _host_order)
        if not self.hosts:
            return list(order)
        return sorted((n for n in self.hosts if n in order), key=order.__getitem__)

    def covers(self, key: ResourceKey) -> bool:
        if self.key is not None:
            return key.host == self.key.host and key.name == self.key.name and key.kind == self.key.kind
        return not self.hosts or key.host in self.hosts


def declared_elsewhere(specs: SpecSet) -> dict[str, frozenset[str]]:
    """host → names of guests the specs place on other hosts (never extra on this one)."""
    by_name: dict[str, set[str]] = {}
    for g in specs.guests:
        by_name.setdefault(g.metadata.name, set()).add(g.spec.host or "")
    return {h.metadata.name: frozenset(n for n, on in by_name.items() if on - {h.metadata.name})
            for h in specs.hosts}


@record
class MoveLookups:
    """Hosts outside the observed ones to look guests up on, host → guest names.

    ``sources``: a guest of the scope missing on its host may be on any other host (it moves
    here) — worth a look only on a host that has a domain of that name. ``targets``: a guest
    of this instance on an observed host that the specs place on an unobserved host, which
    may not have it yet (it moves there) — the target is observed even without the name."""

    sources: Mapping[str, frozenset[str]]
    targets: Mapping[str, frozenset[str]]

    def names(self, host: str) -> frozenset[str]:
        return self.sources.get(host, frozenset()) | self.targets.get(host, frozenset())

    @property
    def hosts(self) -> set[str]:
        return set(self.sources) | set(self.targets)


def move_lookups(specs: SpecSet, states: Mapping[str, HostState], scope: Scope, instance: str) -> MoveLookups:
    observed = set(states)
    others = frozenset(h.metadata.name for h in specs.hosts if h.metadata.name not in observed)
    missing = frozenset(g.metadata.name for g in specs.guests
                        if (g.spec.host or "") in observed and g.metadata.name not in states[g.spec.host or ""].guests
                        and _in_scope(scope, g.spec.host or "", g.metadata.name))
    placed = specs.memo("guest-hosts", _guest_hosts)
    targets: dict[str, set[str]] = {}
    for host, state in states.items():
        for name, obs in state.guests.items():
            if obs.owner is None or obs.owner.instance != instance or not _in_scope(scope, host, name):
                continue
            for dst in placed.get(name, ()):
                if dst in others:
                    targets.setdefault(dst, set()).add(name)
    return MoveLookups({h: missing for h in others} if missing else {},
                       {h: frozenset(n) for h, n in targets.items()})


def _guest_hosts(specs: SpecSet) -> dict[str, tuple[str, ...]]:
    """guest name → the hosts the specs place it on (indexed once per spec set)."""
    out: dict[str, list[str]] = {}
    for g in specs.guests:
        out.setdefault(g.metadata.name, []).append(g.spec.host or "")
    return {n: tuple(h) for n, h in out.items()}


def _in_scope(scope: Scope, host: str, name: str) -> bool:
    return scope.key is None or (scope.key.name == name and scope.key.kind == "Guest")


def scoped_specs(specs: SpecSet, scope: Scope, partial: Mapping[str, frozenset[str]]) -> SpecSet:
    """The specs one reconcile plans: the scope's hosts (narrowed to the object), plus, for the
    hosts only looked at for moves, their Host and the moving guests' specs."""
    if not scope.hosts and scope.key is None and not partial:
        return specs
    primary = set(scope.primary(specs))

    def keep(item: Located) -> bool:
        obj = item.obj
        if isinstance(obj, UNPLACED):
            return True
        if isinstance(obj, Host):
            return obj.metadata.name in primary or obj.metadata.name in partial
        host = obj.spec.host or ""
        if host in partial:
            return isinstance(obj, Guest) and obj.metadata.name in partial[host]
        if host not in primary:
            return False
        if scope.key is None:
            return True
        if isinstance(obj, Guest):
            return obj.metadata.name == scope.key.name
        return isinstance(obj, Network | StoragePool)  # the object's references

    if not scope.hosts:
        return SpecSet(tuple(i for i in specs.items if keep(i)))
    # A few hosts of a fleet: their slices, not a walk of the whole tree, in the tree's order.
    position = specs.memo("item-order", _item_order)
    near = {id(i): i for h in primary | set(partial) for i in specs.for_host(h).items}
    return SpecSet(tuple(i for i in sorted(near.values(), key=lambda i: position[id(i)]) if keep(i)))


def _host_order(specs: SpecSet) -> dict[str, int]:
    order: dict[str, int] = {}
    for h in specs.hosts:
        order.setdefault(h.metadata.name, len(order))
    return order


def _item_order(specs: SpecSet) -> dict[int, int]:
    return {id(item): n for n, item in enumerate(specs.items)}
