"""What one reconcile covers, and which other hosts it must look at for moves (pure).

A scope is everything, some hosts, or one object. A guest whose spec names another host is
moved (live or cold) from whichever host holds it; so every scope that touches either end
looks the guest up on the other end, and a guest that is declared for another host is
never pruned as "gone from the specs" (its move may simply not be plannable yet).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from controller.model.state import HostState, ResourceKey
from controller.spec.models import UNPLACED, Guest, Host, Network, StoragePool
from controller.spec.specset import Located, SpecSet


@dataclass(frozen=True)
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
        """The hosts observed whole (for an object: its host, narrowed to the object)."""
        names = [h.metadata.name for h in specs.hosts]
        return [n for n in names if not self.hosts or n in self.hosts]

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


def move_lookups(specs: SpecSet, states: Mapping[str, HostState], scope: Scope, instance: str
                 ) -> dict[str, frozenset[str]]:
    """Hosts outside the observed ones to look a guest up on: host → guest names.

    - a guest of the scope missing on its host may be on any other host (it moves here);
    - a guest of this instance on an observed host that the specs place on an unobserved
      host may be missing there (it moves there)."""
    observed = set(states)
    others = [h.metadata.name for h in specs.hosts if h.metadata.name not in observed]
    out: dict[str, set[str]] = {}
    for g in specs.guests:
        dst = g.spec.host or ""
        name = g.metadata.name
        if dst in observed and name not in states[dst].guests and _in_scope(scope, dst, name):
            for other in others:
                out.setdefault(other, set()).add(name)
    for host, state in states.items():
        for name, obs in state.guests.items():
            if obs.owner is None or obs.owner.instance != instance:
                continue
            for g in specs.guests:
                if g.metadata.name == name and g.spec.host in others and _in_scope(scope, host, name):
                    out.setdefault(g.spec.host or "", set()).add(name)
    return {h: frozenset(n) for h, n in out.items()}


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

    return SpecSet(tuple(i for i in specs.items if keep(i)))
