"""Diff of one network: spec × definition × active state → actions."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from controller.model.state import DhcpHostState, HostState, NetworkConfig, ResourceKey
from controller.plan.actions import Action, FieldChange, Impact, Phase, Problem
from controller.plan.context import PlanOptions, declared, ownership_problem
from controller.plan.policy import NETWORK_FIELDS
from controller.spec.models import Network, NetworkSpec


@dataclass
class NetworkPlan:
    actions: list[Action] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    drift: list[FieldChange] = field(default_factory=list)


def desired_config(spec: NetworkSpec) -> NetworkConfig:
    ip = spec.ipv4
    dhcp = ip.dhcp if ip else None
    return NetworkConfig(
        mode=spec.mode,
        bridge=spec.bridge,
        forward_dev=spec.forward_dev,
        address=ip.address if ip else None,
        dhcp_start=dhcp.start if dhcp else None,
        dhcp_end=dhcp.end if dhcp else None,
        dhcp_hosts=tuple(DhcpHostState(h.mac, h.ip, h.name) for h in dhcp.hosts) if dhcp else (),
        mtu=spec.mtu,
        domain=spec.domain,
    )


def _hosts_diff(want: tuple[DhcpHostState, ...], have: tuple[DhcpHostState, ...]
                ) -> list[dict[str, Any]]:
    """networkUpdate operations turning ``have`` static leases into ``want``, keyed by MAC."""
    w = {h.mac: h for h in want}
    h = {x.mac: x for x in have}
    ops: list[dict[str, Any]] = []
    for mac, old in h.items():
        if mac not in w:
            ops.append({"cmd": "delete", "mac": mac, "ip": old.ip, "name": old.name})
        elif w[mac] != old:
            ops.append({"cmd": "modify", "mac": mac, "ip": w[mac].ip, "name": w[mac].name})
    for mac, new in w.items():
        if mac not in h:
            ops.append({"cmd": "add", "mac": mac, "ip": new.ip, "name": new.name})
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
    if obs is None:
        change = FieldChange("/spec", "defined", None, None, Impact.CREATE)
        out.drift.append(change)
        out.actions.append(Action(key, "define-network", Impact.CREATE, Phase.NETWORKS,
                                  "network does not exist", (change,), {"commit": opts.commit}))
        return out

    want = desired_config(spec)
    have = obs.config
    d = declared(spec)
    ip_declared = declared(spec.ipv4) if spec.ipv4 else set()
    dhcp_declared = declared(spec.ipv4.dhcp) if spec.ipv4 and spec.ipv4.dhcp else set()
    recreate: list[FieldChange] = []
    live: list[FieldChange] = []
    ops: list[dict[str, Any]] = []

    def cmp(fld: str, a: Any, b: Any, present: bool) -> None:
        if present and a != b:
            recreate.append(FieldChange(f"/spec/{fld.replace('.', '/')}", a, b, None,
                                        NETWORK_FIELDS[fld].impact))

    cmp("mode", want.mode, have.mode, "mode" in d)
    cmp("bridge", want.bridge, have.bridge, "bridge" in d)
    cmp("forwardDev", want.forward_dev, have.forward_dev, "forwardDev" in d)
    cmp("mtu", want.mtu, have.mtu, "mtu" in d)
    cmp("domain", want.domain, have.domain, "domain" in d)
    if "ipv4" in d:
        want_addr = str(ipaddress.IPv4Interface(want.address)) if want.address else None
        cmp("ipv4.address", want_addr, have.address, "address" in ip_declared)
        if want.dhcp_start and (want.dhcp_start, want.dhcp_end) != (have.dhcp_start, have.dhcp_end):
            c = FieldChange("/spec/ipv4/dhcp", f"{want.dhcp_start}-{want.dhcp_end}",
                            f"{have.dhcp_start}-{have.dhcp_end}" if have.dhcp_start else None,
                            None, Impact.LIVE if have.dhcp_start else Impact.RECREATE)
            (live if have.dhcp_start else recreate).append(c)
            if have.dhcp_start:
                ops.append({"cmd": "range", "start": want.dhcp_start, "end": want.dhcp_end,
                            "old_start": have.dhcp_start, "old_end": have.dhcp_end})
        if "hosts" in dhcp_declared:
            for target, cfg in (("config", have), ("live", obs.live_config)):
                if cfg is None or (target == "live" and not obs.active):
                    continue
                host_ops = _hosts_diff(want.dhcp_hosts, cfg.dhcp_hosts)
                for op in host_ops:
                    op["target"] = target
                ops.extend(host_ops)
            if ops and not any(c.path == "/spec/ipv4/dhcp/hosts" for c in live):
                live.append(FieldChange("/spec/ipv4/dhcp/hosts",
                                        [f"{h.mac}={h.ip}" for h in want.dhcp_hosts],
                                        [f"{h.mac}={h.ip}" for h in have.dhcp_hosts],
                                        [f"{h.mac}={h.ip}" for h in obs.live_config.dhcp_hosts]
                                        if obs.live_config else None, Impact.LIVE))
    if "autostart" in d and spec.autostart != obs.autostart:
        live.append(FieldChange("/spec/autostart", spec.autostart, obs.autostart, None, Impact.LIVE))
    out.drift.extend(recreate + live)
    if recreate:
        out.actions.append(Action(key, "recreate-network", Impact.RECREATE, Phase.NETWORKS,
                                  "fields that need a new definition changed",
                                  tuple(recreate + live), {"commit": opts.commit}))
        return out
    if live:
        out.actions.append(Action(key, "update-network", Impact.LIVE, Phase.NETWORKS,
                                  "spec and network differ", tuple(live),
                                  {"ops": ops, "autostart": spec.autostart if "autostart" in d
                                   else None}))
    if not obs.active:
        change = FieldChange("/status/active", True, False, False, Impact.LIVE)
        out.drift.append(change)
        out.actions.append(Action(key, "start-network", Impact.LIVE, Phase.NETWORKS,
                                  "network is not active", (change,)))
    return out
