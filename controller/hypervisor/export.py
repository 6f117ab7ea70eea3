"""Live guests and networks → YAML specs (adoption of existing hosts)."""

from __future__ import annotations

import io
import posixpath
import re
from typing import Any

import libvirt
from pydantic import ValidationError
from ruamel.yaml import YAML

from controller.fields.base import Field
from controller.fields.devices import DISK_FIELDS, NIC_FIELDS
from controller.fields.guest import GUEST_FIELDS, xen_mode
from controller.fields.network import NETWORK_FIELDS
from controller.fields.volume import owned_volumes
from controller.hypervisor.capabilities import probe
from controller.hypervisor.observe import observe_guests, observe_networks, observe_pools
from controller.hypervisor.secrets import observe_secrets
from controller.hypervisor.volumes import volume_specs
from controller.model.state import (
    DiskState,
    GuestConfig,
    NetworkConfig,
    NicState,
    ObservedGuest,
    ObservedNetwork,
    ObservedPool,
    ObservedSecret,
    pool_uuid,
)
from controller.spec.models import Interface
from controller.spec.pool_sources import FILE_POOL_TYPES, POOL_TYPES


def _doc(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "virtsync/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def guest_spec(host: str, g: ObservedGuest, owned: bool, volume_paths: dict[tuple[str, str], str] | None = None,
               comments: list[str] | None = None, secret_names: dict[str, str] | None = None) -> dict[str, Any]:
    """A Guest spec that plans no change against ``g``: every field the registry can export (a
    NIC's source, network, bridge or direct, too). A device the spec cannot describe yet is never
    dropped: its list is put under ``ignore`` (so the plan leaves it alone) and ``comments`` says why."""
    cfg: GuestConfig = g.persistent or g.live  # type: ignore[assignment]
    notes = comments if comments is not None else []
    spec: dict[str, Any] = {"host": host, "state": g.state if g.state != "other" else "running"}
    for f in GUEST_FIELDS:
        if f.export is None or f.have is None or not f.exists_on(cfg.virt_type):
            continue
        value = f.export(f.have(cfg, g))
        if value is not None:
            _put(spec, f.path, value)
    if cfg.virt_type == "xen":
        spec["xen"] = {"mode": xen_mode(cfg.os_type)}
    tpm_secret = (secret_names or {}).get((cfg.tpm or {}).get("encryption", ""))
    if "tpm" in spec and tpm_secret:  # encrypted with a secret virtsync made: named by its Secret
        spec["tpm"]["encryptionSecretRef"] = tpm_secret
    ignore: list[str] = []
    disks = []
    for d in cfg.disks:
        path = d.path or (volume_paths or {}).get((d.pool or "", d.volume or ""))
        if d.type not in _FILE_DISKS or not path:
            if d.type in _FILE_DISKS and d.device == "cdrom" and not d.pool:
                continue  # an empty CD-ROM drive has nothing to declare
            notes.append(f"disk {d.target} ({_unmodelled_disk(d)}) is not modelled yet: "
                         "/spec/disks is ignored so the plan leaves the disks alone")
            ignore.append("/spec/disks")
            continue
        disk: dict[str, Any] = {"name": d.name, "path": path}
        if d.format in ("qcow2", "raw"):
            disk["format"] = d.format
        disk.update(_items(DISK_FIELDS, d))
        if d.device == "cdrom":
            disk["device"] = "cdrom"
        disks.append(disk)
    spec["disks"] = disks
    nics = []
    for n in cfg.interfaces:
        nic, why = _nic(n)
        if nic is None:
            notes.append(f"NIC {n.mac} ({why}) is not modelled yet: /spec/interfaces is ignored so the plan "
                         "leaves the NICs alone")
            ignore.append("/spec/interfaces")
            continue
        nics.append(nic)
    spec["interfaces"] = nics
    if ignore:
        spec["ignore"] = sorted(set(ignore))
    if not owned:
        spec["adopt"] = True
    return spec


def _put(spec: dict[str, Any], pointer: str, value: Any) -> None:
    """Set a field at its pointer: a nested one (/spec/cpu/topology) inside its block."""
    *parents, last = pointer.removeprefix("/spec/").split("/")
    for part in parents:
        spec = spec.setdefault(part, {})
    spec[last] = value


# The disks a spec names by their file (a volume by its pool's file); a spec path is never a
# device (spec/checks.py refuses /dev), so block, network and other disks stay under ignore.
_FILE_DISKS = ("file", "volume")


def _unmodelled_disk(d: DiskState) -> str:
    """Why ``d`` cannot be written into a spec, for the comment export puts over it."""
    if d.type == "block":
        return f"{d.device} on block device {d.source or '?'}: a spec's disk is a file"
    if d.type == "network":
        return f"{d.device} on network storage {d.source or '?'}: a spec's disk is a file"
    if d.type == "volume":
        return f"{d.device}, volume {d.pool}/{d.volume} that the host does not list"
    if d.type in _FILE_DISKS:
        return f"{d.device}, no file virtsync can name"
    return f"{d.device} of type {d.type}" + (f" on {d.source}" if d.source else "")


def pool_spec(host: str, p: ObservedPool, owned: bool, secret_names: dict[str, str] | None = None,
              notes: list[str] | None = None) -> dict[str, Any]:
    """A StoragePool spec that plans no change against ``p``: its type, path and <source>; an auth's
    libvirt secret as a reference to the kind: Secret it was made from (``secret_names``: UUID → name)."""
    spec: dict[str, Any] = {"host": host, "type": p.type}
    if p.path is not None and POOL_TYPES[p.type].path != "none":
        spec["path"] = p.path
    source = dict(p.source)
    auth = source.pop("auth", None)
    if auth is not None:
        ref = (secret_names or {}).get(auth.get("secretUuid", ""))
        if ref is None:
            ref = "FIXME"
            (notes if notes is not None else []).append(
                f"its auth secret ({auth.get('secretUuid') or auth.get('secretUsage')}) was not made from a kind: "
                "Secret: write one (libvirt: {usage: " + (POOL_TYPES[p.type].auth or "") + "}) and name it in "
                "source.auth.secretRef")
        source["auth"] = {"username": auth.get("username", ""), "secretRef": ref}
    if source:
        spec["source"] = source
    spec["autostart"] = p.autostart
    if not owned:
        spec["adopt"] = True
    return spec


_NIC_SOURCES = ("network", "bridge", "direct")


def _nic(n: NicState) -> tuple[dict[str, Any] | None, str]:
    """A NIC as the spec writes it (its source first, then its MAC), or None and why it cannot be."""
    if n.type not in _NIC_SOURCES:
        return None, f"type {n.type}"
    items = _items(NIC_FIELDS, n)
    source = next((k for k in _NIC_SOURCES if k in items), None)
    if source is None:
        return None, f"{n.type} NIC without a source"
    nic = {source: items.pop(source), "mac": n.mac, **items}
    try:  # what libvirt holds but the spec refuses (a VLAN tag on a virtual network's NIC …)
        Interface.model_validate(nic)
    except ValueError as exc:
        first = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        return None, first.removeprefix("Value error, ")
    return nic, ""


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
        if value is not None:  # at the field's place: ipv6.address under ipv6, dns.hosts under dns
            *parents, leaf = f.path.removeprefix("/spec/").split("/")
            at = spec
            for p in parents:
                at = at.setdefault(p, {})
            at[leaf] = value
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


def export_objects(conn: libvirt.virConnect, host: str, uri: str, names: list[str], *,
                   include_host: bool, instance: str, everything: bool = False,
                   schema_url: str | None = None) -> list[tuple[str, str, str]]:
    """(kind, name, YAML) of ``host``'s guests, networks and the dir pools their disks live in
    (those in ``names``; without names the defined ones; ``everything``: every object of the
    host, transient networks and unused pools too), each planning no change once adopted."""
    caps = probe(conn, host, None)
    guests = observe_guests(conn, host)
    networks = observe_networks(conn, host)
    pools = observe_pools(conn, host)
    volume_paths = {(p.name, v.name): v.path for p in pools.values() for v in p.volumes.values()}
    docs: list[tuple[dict[str, Any], list[str]]] = []
    wanted = set(names)

    def pick(name: str) -> bool:
        return not wanted or name in wanted

    chosen_guests = [g for n, g in sorted(guests.items()) if pick(n) and (g.persistent or g.live)]
    configs = [g.persistent or g.live for g in chosen_guests]
    chosen_nets = [n for k, n in sorted(networks.items()) if pick(k)]
    used_nets = {i.network for c in configs for i in c.interfaces if i.network}  # type: ignore[union-attr]
    if not wanted and not everything:
        chosen_nets = [n for n in chosen_nets if n.persistent or n.name in used_nets]
    used_pools = {d.pool for c in configs for d in c.disks if d.pool}  # type: ignore[union-attr]
    used_pools |= {p.name for p in pools.values() for c in configs for d in c.disks  # type: ignore[union-attr]
                   if p.path and d.path and posixpath.dirname(d.path) == p.path.rstrip("/")}
    # pools holding volumes this instance owns as kind: Volume (their Volumes are exported too)
    owning = {k for k, p in pools.items() if owned_volumes(instance, p.volumes)} if not wanted else set()
    chosen_pools = [p for k, p in sorted(pools.items())
                    if (pick(k) and (wanted or everything)) or k in used_pools or k in owning]
    chosen_pools = [p for p in chosen_pools if p.type in POOL_TYPES]  # the pool types the spec has
    if include_host:
        files = [volume_paths.get((d.pool or "", d.volume or ""), d.path) for c in configs
                 for d in c.disks if d.type in _FILE_DISKS]  # type: ignore[union-attr]
        files += [p for c in configs for p in (c.kernel, c.initrd) if p]  # type: ignore[union-attr]
        dirs = {posixpath.dirname(f) for f in files if f} | {p.path.rstrip("/") for p in chosen_pools
                                                               if p.path and p.type in FILE_POOL_TYPES}
        dirs |= {posixpath.normpath(fs["source"]) for c in configs for fs in c.filesystems}  # type: ignore[union-attr]
        hspec: dict[str, Any] = {"uri": uri}
        if caps.virt_type in ("kvm", "qemu"):
            # the guests' own type where they agree: a host run under TCG stays TCG when re-created
            kinds = {c.virt_type for c in configs if c is not None}
            hspec["hypervisor"] = kinds.pop() if len(kinds) == 1 and kinds <= {"kvm", "qemu"} else caps.virt_type
        if dirs:
            hspec["storage"] = {"allowedDirs": sorted(dirs)}
        docs.append((_doc("Host", host, hspec), []))
    secret_names = _secret_names(conn, host) if any("auth" in p.source for p in chosen_pools) else {}
    for p in chosen_pools:
        # a pool that takes no marker volume (not files) is ours by the UUID virtsync gave it
        owned = (p.owner.instance == instance if p.owner is not None
                 else p.type not in FILE_POOL_TYPES and p.uuid == pool_uuid(instance, p.name))
        pool_notes: list[str] = []
        docs.append((_doc("StoragePool", p.name, pool_spec(host, p, owned, secret_names, pool_notes)), pool_notes))
    chosen_vols = [(n, v) for n, v in volume_specs(conn, host, {p.name: p for p in chosen_pools}, instance)
                   if pick(n) or not wanted]
    for vname, vspec in chosen_vols:
        docs.append((_doc("Volume", vname, vspec), []))
    for n in chosen_nets:
        owned = n.owner is not None and n.owner.instance == instance
        docs.append((_doc("Network", n.name, network_spec(host, n, owned)), []))
    host_secrets = observe_secrets(conn, host) or {}
    ours = {o.uuid: o.owner_name for o in host_secrets.values() if o.owner_name and o.owner_instance == instance}
    for g in chosen_guests:
        owned = g.owner is not None and g.owner.instance == instance
        notes: list[str] = []
        docs.append((_doc("Guest", g.name, guest_spec(host, g, owned, volume_paths, notes, ours)), notes))
    docs += secret_docs(host_secrets, host, instance, _secret_refs(docs), everything)
    missing = wanted - {g.name for g in chosen_guests} - {n.name for n in chosen_nets} - {p.name for p in chosen_pools}
    missing -= {n for n, _ in chosen_vols}
    if missing:
        from controller.errors import ObjectNotFound

        raise ObjectNotFound(f"no guest, network or storage pool named {', '.join(sorted(missing))}", host=host)
    return [(doc["kind"], doc["metadata"]["name"], _render(doc, notes, schema_url)) for doc, notes in docs]


def _secret_names(conn: libvirt.virConnect, host: str) -> dict[str, str]:
    """UUID → the kind: Secret name of the libvirt secrets virtsync made on the host."""
    return {o.uuid: o.owner_name for o in (observe_secrets(conn, host) or {}).values() if o.owner_name}


_SECRET_USAGES = ("volume", "ceph", "iscsi", "tls", "vtpm")


def _secret_refs(docs: list[tuple[dict[str, Any], list[str]]]) -> set[str]:
    """The Secrets the exported objects name: a TPM's encryption, a pool's auth."""
    out = set()
    for doc, _notes in docs:
        spec = doc["spec"]
        for ref in ((spec.get("tpm") or {}).get("encryptionSecretRef"),
                    ((spec.get("source") or {}).get("auth") or {}).get("secretRef")):
            if isinstance(ref, str):
                out.add(ref)
    return out


def _free_name(usage: str, usage_id: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{usage}-{usage_id}").strip("-._")[:56] or usage
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    return name


def secret_docs(observed: dict[str, ObservedSecret], host: str, instance: str, referenced: set[str],
                everything: bool) -> list[tuple[dict[str, Any], list[str]]]:
    """A kind: Secret *reference* per libvirt secret with a usage (every one with ``everything``,
    else those the exported objects name): its usage and id, never its value, which libvirt does
    not hand out. The value source is a file to fill in, ``optional`` until it exists: a plan then
    leaves the host's secret (and its value) as it is."""
    out = []
    taken = {o.owner_name for o in observed.values() if o.owner_name and o.owner_instance == instance}
    for o in sorted(observed.values(), key=lambda s: (s.usage, s.usage_id)):
        if o.usage not in _SECRET_USAGES or not o.usage_id:
            continue
        ours = o.owner_name if o.owner_instance == instance else None
        name = ours or _free_name(o.usage, o.usage_id, taken)
        if not everything and name not in referenced:
            continue
        value_file = f"{name}.secret"
        notes = [f"libvirt secret {o.uuid} on host {host} ({o.usage} {o.usage_id!r}): its value is never exported.",
                 f"Write the value into {value_file} beside this file (or use fromEnv) and drop 'optional';",
                 "until the file exists this Secret has no value and virtsync leaves the host's secret as it is."]
        if not ours:
            notes.append("It was not made by virtsync: a spec that references this Secret is refused until the "
                         "host's secret of this usage is removed (libvirt keeps one secret per usage).")
        spec = {"fromFile": value_file, "optional": True, "libvirt": {"usage": o.usage, "id": o.usage_id}}
        out.append((_doc("Secret", name, spec), notes))
    return out


def _render(doc: dict[str, Any], notes: list[str], schema_url: str | None) -> str:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    buf = io.StringIO()
    if schema_url:
        buf.write(f"# yaml-language-server: $schema={schema_url}\n")
    for note in notes:
        buf.write(f"# {note}\n")
    yaml.dump(doc, buf)
    return buf.getvalue()
