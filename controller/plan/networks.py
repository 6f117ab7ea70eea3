"""Diff of one network: spec × definition × active state → typed actions (fields/network.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controller.fields.base import Facts
from controller.fields.network import LIVE_LISTS, NETWORK_FIELDS, LiveList, NetworkView
from controller.fields.network_items import fragment
from controller.model.state import DhcpHostState, HostState, ResourceKey
from controller.plan.actions import (
    Action,
    DefineNetwork,
    FieldChange,
    Impact,
    LeaseUpdate,
    NetworkEdit,
    Problem,
    RangeUpdate,
    RecreateNetwork,
    StartNetwork,
    UpdateNetwork,
)
from controller.plan.context import SUSPEND_ANNOTATION, PlanOptions, declared, ownership_problem, patch_changes
from controller.spec.models import Network


@dataclass
class NetworkPlan:
    """One network's plan: its actions, problems and drift."""

    actions: list[Action] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    drift: list[FieldChange] = field(default_factory=list)


def lease_updates(want: tuple[DhcpHostState, ...], have: tuple[DhcpHostState, ...], target: str
                  ) -> list[LeaseUpdate]:
    """networkUpdate operations turning ``have`` static leases into ``want``, keyed by MAC."""
    w = {h.mac: h for h in want}
    h = {x.mac: x for x in have}
    ops = [LeaseUpdate("delete", mac, old.ip, old.name, target) for mac, old in h.items() if mac not in w]
    ops += [LeaseUpdate("modify", mac, w[mac].ip, w[mac].name, target) for mac, old in h.items()
            if mac in w and w[mac] != old]
    ops += [LeaseUpdate("add", mac, new.ip, new.name, target) for mac, new in w.items() if mac not in h]
    return ops


def list_edits(ll: LiveList, want: tuple[Any, ...], have: tuple[Any, ...], target: str,
               parent: int = -1) -> list[NetworkEdit]:
    """networkUpdate operations turning the items ``have`` into ``want``, keyed as ``ll`` says:
    removals first (a port group losing its default before another takes it), then changes, then
    additions; a changed item libvirt cannot modify is deleted and added again."""
    w = {ll.key(x): x for x in want}
    h = {ll.key(x): x for x in have}

    def edit(command: str, item: Any) -> NetworkEdit:
        return NetworkEdit(command, ll.section, fragment(ll.element(item)), target, parent)

    gone = [edit("delete", x) for k, x in h.items() if k not in w]
    changed = [k for k in w if k in h and w[k] != h[k]]
    if ll.modify:
        edits = [edit("modify", w[k]) for k in changed]
    else:
        edits = [edit(cmd, x) for k in changed for cmd, x in (("delete", h[k]), ("add", w[k]))]
    return gone + edits + [edit("add", x) for k, x in w.items() if k not in h]


def _both(config: list[NetworkEdit], live: list[NetworkEdit]) -> list[NetworkEdit]:
    """One call per item where the definition and the running network need the same edit."""
    if [(e.command, e.xml) for e in config] == [(e.command, e.xml) for e in live]:
        return [NetworkEdit(e.command, e.section, e.xml, "both", e.parent) for e in config]
    return config + live


def plan_network(net: Network, host: HostState, opts: PlanOptions) -> NetworkPlan:
    name = net.metadata.name
    key = ResourceKey(host.host, "Network", name)
    out = NetworkPlan()
    obs = host.networks.get(name)
    spec = net.spec
    refusal = ownership_problem(key, "network", obs is not None, obs.owner if obs else None, spec.adopt,
                                opts.instance)
    if refusal:
        out.problems.append(Problem(key, refusal))
        return out
    for f in NETWORK_FIELDS:  # what this host cannot do is said at plan time, before any define
        why = f.refuse(spec, host.caps, host.host) if f.refuse is not None else None
        if why:
            out.problems.append(Problem(key, why))
            return out
    suspended = net.metadata.annotations.get(SUSPEND_ANNOTATION) == "true"
    if obs is None:
        change = FieldChange("/spec", "defined", None, None, Impact.CREATE)
        out.drift.append(change)
        if not suspended:
            out.actions.append(DefineNetwork(key=key, reason="network does not exist", changes=(change,)))
        return out

    facts = Facts(name, host.caps.virt_type)
    view = NetworkView(spec, obs.config, obs.live_config if obs.active else None, obs)
    top = declared(spec)
    changes: list[FieldChange] = []
    edits: list[NetworkEdit] = []
    for f in NETWORK_FIELDS:
        if f.planned_by or f.want is None or f.have is None:
            continue
        is_declared = f.is_declared(spec) if f.is_declared is not None else f.name in top
        if not is_declared or not f.applies(spec, facts):
            continue
        want, have = f.want(spec, facts), f.have(obs.config, obs)
        ll = LIVE_LISTS.get(f.name)
        running_have = f.have(view.live, obs) if view.live is not None else None
        live_differs = ll is not None and running_have is not None and not f.same(want, running_have)
        if not f.same(want, have) or live_differs:
            running = f.show(running_have) if running_have is not None and f.shows_live else None
            impact = f.impact_for(view)
            # the call that makes it live, from the registry (a recreate says so by its impact)
            note = "" if impact != Impact.LIVE else f"{f.note}: {ll.effect}" if ll is not None and f.note else f.note
            changes.append(FieldChange(f.path, f.show(want), f.show(have), running, impact, note,
                                       call=", ".join(f.calls) if impact == Impact.LIVE and obs.active else ""))
            if ll is not None and impact == Impact.LIVE:
                config = list_edits(ll, ll.items(want), ll.items(have), "config",
                                    ll.parent(obs.config) if ll.parent else -1)
                live_ops = list_edits(ll, ll.items(want), ll.items(running_have), "live",
                                      ll.parent(view.live) if ll.parent and view.live else -1) \
                    if running_have is not None else []
                edits += _both(config, live_ops) if running_have is not None else config
    # like the network's other written fields, a patch lands by a recreate from the observed definition
    changes += patch_changes(obs.xml, net.spec.xml_patches, Impact.RECREATE)
    recreate = [c for c in changes if c.impact == Impact.RECREATE]
    live = [c for c in changes if c.impact == Impact.LIVE]

    # Static leases are compared on the running network too: networkUpdate reaches each apart.
    leases: list[LeaseUpdate] = []
    lease_field = next(f for f in NETWORK_FIELDS if f.name == "hosts")
    if lease_field.is_declared is not None and lease_field.is_declared(spec) and lease_field.want is not None:
        want_leases = lease_field.want(spec, facts)
        leases = lease_updates(want_leases, obs.config.dhcp_hosts, "config")
        if obs.active and obs.live_config is not None:
            running = lease_updates(want_leases, obs.live_config.dhcp_hosts, "live")
            leases += running
            if running and not any(c.path == lease_field.path for c in live):
                live.append(FieldChange(lease_field.path, lease_field.show(want_leases),
                                        lease_field.show(obs.config.dhcp_hosts),
                                        lease_field.show(obs.live_config.dhcp_hosts), Impact.LIVE,
                                        lease_field.note))
    out.drift.extend(recreate + live)
    if suspended:
        return out
    if recreate:
        out.actions.append(RecreateNetwork(key=key, reason="fields that need a new definition changed",
                                           changes=tuple(recreate + live)))
        return out
    if live:
        dhcp = spec.ipv4.dhcp if spec.ipv4 else None
        ranged = dhcp is not None and any(c.path == "/spec/ipv4/dhcp" for c in live)
        out.actions.append(UpdateNetwork(
            key=key, reason="spec and network differ", changes=tuple(live),
            dhcp_range=RangeUpdate(dhcp.start, dhcp.end, obs.config.dhcp_start or "", obs.config.dhcp_end or "")
            if ranged and dhcp is not None else None,
            leases=tuple(leases),
            edits=tuple(edits),
            autostart=spec.autostart if any(c.path == "/spec/autostart" for c in live) else None))
    if not obs.active:
        change = FieldChange("/status/active", True, False, False, Impact.LIVE)
        out.drift.append(change)
        out.actions.append(StartNetwork(key=key, reason="network is not active", changes=(change,)))
    return out

