"""Diff of one network: spec × definition × active state → typed actions (fields/network.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.fields.base import Facts
from controller.fields.network import NETWORK_FIELDS, NetworkView
from controller.model.state import DhcpHostState, HostState, ResourceKey
from controller.plan.actions import (
    Action,
    DefineNetwork,
    FieldChange,
    Impact,
    LeaseUpdate,
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
    for f in NETWORK_FIELDS:
        if f.planned_by or f.want is None or f.have is None:
            continue
        is_declared = f.is_declared(spec) if f.is_declared is not None else f.name in top
        if not is_declared or not f.applies(spec, facts):
            continue
        want, have = f.want(spec, facts), f.have(obs.config, obs)
        if not f.same(want, have):
            running = f.show(f.have(view.live, obs)) if view.live is not None and f.shows_live else None
            changes.append(FieldChange(f.path, f.show(want), f.show(have), running, f.impact_for(view)))
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
                                        lease_field.show(obs.live_config.dhcp_hosts), Impact.LIVE))
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
            autostart=spec.autostart if any(c.path == "/spec/autostart" for c in live) else None))
    if not obs.active:
        change = FieldChange("/status/active", True, False, False, Impact.LIVE)
        out.drift.append(change)
        out.actions.append(StartNetwork(key=key, reason="network is not active", changes=(change,)))
    return out

