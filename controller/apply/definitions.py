"""The libvirt definitions a plan's actions write, built without calling a host.

The executor defines exactly what these functions return (the observed persistent XML with the
action's fields written in place through the field registry's writers, or a new definition);
``plan --diff`` shows the same XML as a unified diff against what is defined now. lxml is data:
nothing here does I/O.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TypeVar

from lxml import etree

from controller.errors import PlanError, VirtsyncError
from controller.hypervisor.domain_xml import WriteContext, new_guest_xml, update_guest_xml
from controller.hypervisor.network_xml import network_xml
from controller.model.state import HostState, ObservedGuest, Owner, ResourceKey
from controller.plan import actions as act
from controller.plan.actions import Action, HostPlan, Plan
from controller.plan.context import applied_fields, digest
from controller.plan.guests import owner_for
from controller.spec.models import Guest, Network, StoragePool
from controller.spec.secrets import secret_digest
from controller.spec.specset import SpecSet

T = TypeVar("T", Guest, Network, StoragePool)


class Definitions:
    """One host's plan with its specs and observed state: what each action would define."""

    def __init__(self, hp: HostPlan, specs: SpecSet, state: HostState, instance: str, commit: str) -> None:
        self.hp, self.specs, self.state = hp, specs, state
        self.instance, self.commit = instance, commit

    def _spec(self, objects: Sequence[T], what: str, name: str) -> T:
        found = next((o for o in objects if o.metadata.name == name and o.spec.host == self.hp.host), None)
        if found is None:
            raise PlanError(f"{what} {name} is not in the specs of host {self.hp.host}")
        return found

    def guest(self, name: str) -> Guest:
        return self._spec(self.specs.guests, "guest", name)

    def network(self, name: str) -> Network:
        return self._spec(self.specs.networks, "network", name)

    def pool(self, name: str) -> StoragePool:
        return self._spec(self.specs.pools, "pool", name)

    def pool_paths(self) -> dict[str, str]:
        paths = {n: p.path for n, p in self.state.pools.items() if p.path}
        paths.update({p.metadata.name: p.spec.path for p in self.specs.pools
                      if p.spec.host == self.hp.host and p.spec.path})
        return paths

    def write_ctx(self, owner: Owner, uuid: str | None = None) -> WriteContext:
        return WriteContext(virt_type=self.state.caps.virt_type, pool_paths=self.pool_paths(), owner=owner, uuid=uuid)

    def guest_owner(self, guest: Guest, obs: ObservedGuest | None) -> Owner:
        data = owner_for(guest, self.instance, self.commit)
        if not self.commit and obs is not None and obs.owner is not None:
            data["commit"] = obs.owner.commit  # the commit changes only with the object
        return Owner(**data)

    def net_owner(self, net: Network) -> Owner:
        applied = applied_fields(net.spec)
        return Owner(self.instance, "Network", net.metadata.name, digest(applied), self.commit, applied)

    # ------------------------------------------------------ the definitions

    def new_guest(self, a: act.DefineGuest) -> str:
        guest = self.guest(a.key.name)
        # A transient (running, undefined) guest is defined again under its own UUID.
        obs = self.state.guests.get(a.key.name)
        ctx = self.write_ctx(self.guest_owner(guest, obs), obs.uuid if obs is not None else None)
        return new_guest_xml(a.key.name, guest.spec, ctx)

    def rewritten_guest(self, a: act.UpdateGuest | act.RecreateGuest) -> str:
        """The guest's definition as observed, with the action's fields written in place."""
        guest = self.guest(a.key.name)
        obs = self.state.guests[a.key.name]
        ctx = replace(self.write_ctx(self.guest_owner(guest, obs), obs.uuid), keep=frozenset(a.keep))
        return update_guest_xml(obs.xml, a.key.name, guest.spec, ctx, a.fields)

    def adopted_guest(self, a: act.Adopt) -> str:
        guest = self.guest(a.key.name)
        obs = self.state.guests[a.key.name]
        return update_guest_xml(obs.xml, a.key.name, guest.spec, self.write_ctx(self.guest_owner(guest, obs),
                                                                                obs.uuid), ())

    def new_network(self, a: act.DefineNetwork) -> str:
        net = self.network(a.key.name)
        return network_xml(a.key.name, net.spec, self.net_owner(net))

    def rewritten_network(self, a: act.RecreateNetwork | act.Adopt, base: str | None = None) -> str:
        """The observed persistent definition, edited in place: XML virtsync does not model survives."""
        net = self.network(a.key.name)
        obs = self.state.networks[a.key.name]
        return network_xml(a.key.name, net.spec, self.net_owner(net), obs.uuid, base=base or obs.xml or None)

    def of(self, a: Action) -> tuple[str, str] | None:
        """(defined now, defined after) for an action that writes a definition; None otherwise."""
        name = a.key.name
        if isinstance(a, act.DefineGuest):
            obs = self.state.guests.get(name)
            return (obs.xml if obs is not None else ""), self.new_guest(a)
        if isinstance(a, act.UpdateGuest | act.RecreateGuest):
            return self.state.guests[name].xml, self.rewritten_guest(a)
        if isinstance(a, act.DefineNetwork):
            return "", self.new_network(a)
        if isinstance(a, act.RecreateNetwork):
            return self.state.networks[name].xml, self.rewritten_network(a)
        if isinstance(a, act.Adopt) and a.key.kind == "Guest":
            return self.state.guests[name].xml, self.adopted_guest(a)
        if isinstance(a, act.Adopt) and a.key.kind == "Network":
            return self.state.networks[name].xml, self.rewritten_network(a)
        return None


# ------------------------------------------------------------------ diffs

DiffKey = tuple[ResourceKey, str]  # (object, op)

# Console passwords never reach a terminal or a pull-request comment: their value digest does,
# so a new password still shows as a changed line.
_PASSWD = re.compile(r"""\bpasswd=(['"])(.*?)\1""", re.S)


def _masked(xml: str) -> str:
    return _PASSWD.sub(lambda m: f"passwd={m.group(1)}(secret {secret_digest(m.group(2))}){m.group(1)}", xml)


def _lines(xml: str) -> list[str]:
    """Both sides through one serializer: libvirt's and lxml's quoting and indenting differ, and
    libvirt reformats whatever it is given anyway."""
    if not xml.strip():
        return []
    root = etree.fromstring(xml.encode(), etree.XMLParser(remove_blank_text=True))
    return _masked(etree.tostring(root, pretty_print=True, encoding="unicode")).splitlines()


def xml_diff(before: str, after: str, label: str) -> str:
    """The unified diff (3 lines of context) of two definitions; empty when they are the same."""
    lines = difflib.unified_diff(_lines(before), _lines(after), f"a/{label}" if before.strip() else "/dev/null",
                                 f"b/{label}", lineterm="")
    return "\n".join(lines)


def planned_diffs(plan: Plan, specs: SpecSet, states: Mapping[str, HostState], instance: str,
                  commit: str) -> dict[DiffKey, str]:
    """For every action of ``plan`` that defines XML: the diff of what it defines."""
    out: dict[DiffKey, str] = {}
    for hp in plan.hosts:
        state = states.get(hp.host)
        if state is None or not hp.actions:
            continue
        defs = Definitions(hp, specs.for_host(hp.host), state, instance, commit)
        for a in hp.actions:
            try:
                pair = defs.of(a)
                if pair is not None:
                    out[(a.key, a.op)] = xml_diff(*pair, f"{hp.host}/{a.key.kind}/{a.key.name}.xml")
            except VirtsyncError as exc:  # the plan still shows; the diff says why it is missing
                out[(a.key, a.op)] = f"# no XML diff: {exc}"
    return out
