"""Live guests and networks → YAML specs (adoption of existing hosts)."""

from __future__ import annotations

import io
import posixpath
from typing import Any

import libvirt
from ruamel.yaml import YAML

from controller.fields.base import Field
from controller.fields.devices import DISK_FIELDS, NIC_FIELDS
from controller.fields.guest import GUEST_FIELDS, xen_mode
from controller.fields.network import NETWORK_FIELDS
from controller.hypervisor.capabilities import probe
from controller.hypervisor.observe import observe_guests, observe_networks
from controller.model.state import GuestConfig, NetworkConfig, ObservedGuest, ObservedNetwork

HEADER = "# yaml-language-server: $schema=https://virtsync.dev/schemas/v1/virtsync.schema.json\n"


def _doc(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "virtsync/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def guest_spec(host: str, g: ObservedGuest, owned: bool) -> dict[str, Any]:
    """A Guest spec that plans no change against ``g``: every field the registry can export."""
    cfg: GuestConfig = g.persistent or g.live  # type: ignore[assignment]
    spec: dict[str, Any] = {"host": host, "state": g.state if g.state != "other" else "running"}
    for f in GUEST_FIELDS:
        if f.export is None or f.have is None or (f.name == "firmware" and cfg.virt_type in ("test", "xen")):
            continue
        value = f.export(f.have(cfg, g))
        if value is not None:
            spec[f.name] = value
    if cfg.virt_type == "xen":
        spec["xen"] = {"mode": xen_mode(cfg.os_type)}
        spec.pop("machine", None)  # Xen's machine follows its guest type
    disks = []
    for d in cfg.disks:
        if not d.path:
            continue  # an empty CD-ROM drive has nothing to declare
        disk: dict[str, Any] = {"name": d.name, "path": d.path}
        if d.format in ("qcow2", "raw"):
            disk["format"] = d.format
        disk.update(_items(DISK_FIELDS, d))
        if d.device == "cdrom":
            disk["device"] = "cdrom"
        disks.append(disk)
    spec["disks"] = disks
    spec["interfaces"] = [{"network": n.network, "mac": n.mac, **_items(NIC_FIELDS, n)}
                          for n in cfg.interfaces if n.network]
    if not owned:
        spec["adopt"] = True
    return spec


def _items(fields: tuple[Field[Any], ...], state: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields:
        if f.export is None or f.have is None:
            continue
        value = f.export(f.have(state, None))
        if value is not None:
            out[f.name] = value
    return out


def network_spec(host: str, n: ObservedNetwork, owned: bool) -> dict[str, Any]:
    """A Network spec that plans no change against ``n``: its top-level registry fields, and ipv4."""
    c: NetworkConfig = n.config
    spec: dict[str, Any] = {"host": host}
    for f in NETWORK_FIELDS:
        if f.export is None or f.have is None:
            continue
        value = f.export(f.have(c, n))
        if value is not None:
            spec[f.name] = value
    if c.address:
        ipv4: dict[str, Any] = {"address": c.address}
        if c.dhcp_start:
            dhcp: dict[str, Any] = {"start": c.dhcp_start, "end": c.dhcp_end}
            if c.dhcp_hosts:
                dhcp["hosts"] = [{"mac": h.mac, "ip": h.ip, **({"name": h.name} if h.name else {})}
                                 for h in c.dhcp_hosts]
            ipv4["dhcp"] = dhcp
        spec["ipv4"] = ipv4
    if not owned:
        spec["adopt"] = True
    return spec


def export_host(conn: libvirt.virConnect, host: str, uri: str, names: list[str], *,
                include_host: bool, instance: str) -> str:
    """YAML documents for ``host``'s guests and networks (all, or those in ``names``)."""
    caps = probe(conn, host, None)
    guests = observe_guests(conn, host)
    networks = observe_networks(conn, host)
    docs: list[dict[str, Any]] = []
    wanted = set(names)

    def pick(name: str) -> bool:
        return not wanted or name in wanted

    chosen_guests = [g for n, g in sorted(guests.items()) if pick(n) and (g.persistent or g.live)]
    chosen_nets = [n for k, n in sorted(networks.items()) if pick(k)]
    used_nets = {i.network for g in chosen_guests for i in (g.persistent or g.live).interfaces  # type: ignore[union-attr]
                 if i.network}
    if not wanted:
        chosen_nets = [n for n in chosen_nets if n.persistent or n.name in used_nets]
    if include_host:
        files = [d.path for g in chosen_guests for d in (g.persistent or g.live).disks if d.path]  # type: ignore[union-attr]
        files += [p for g in chosen_guests for p in ((g.persistent or g.live).kernel,  # type: ignore[union-attr]
                                                     (g.persistent or g.live).initrd) if p]  # type: ignore[union-attr]
        dirs = sorted({posixpath.dirname(f) for f in files})
        hspec: dict[str, Any] = {"uri": uri}
        if caps.virt_type in ("kvm", "qemu"):
            hspec["hypervisor"] = caps.virt_type
        if dirs:
            hspec["storage"] = {"allowedDirs": dirs}
        docs.append(_doc("Host", host, hspec))
    for n in chosen_nets:
        owned = n.owner is not None and n.owner.instance == instance
        docs.append(_doc("Network", n.name, network_spec(host, n, owned)))
    for g in chosen_guests:
        owned = g.owner is not None and g.owner.instance == instance
        docs.append(_doc("Guest", g.name, guest_spec(host, g, owned)))
    missing = wanted - {g.name for g in chosen_guests} - {n.name for n in chosen_nets}
    if missing:
        from controller.errors import ObjectNotFound

        raise ObjectNotFound(f"no guest or network named {', '.join(sorted(missing))}", host=host)
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    buf = io.StringIO()
    buf.write(HEADER)
    yaml.dump_all(docs, buf)
    return buf.getvalue()
