"""Checks across the whole spec set: names, references, addresses, paths.

Pure: no file system or network access, except ``confine_path``'s optional
symlink resolution, which the caller enables only for hosts on this machine, and
controller/patch_check.py's run of virt-xml-validate for objects with xmlPatches.
"""

from __future__ import annotations

import ipaddress
import os
import posixpath
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from controller.errors import Diagnostic
from controller.patch_check import check_patches
from controller.spec.models import BackupPolicy, GuestSpec, Host, Network, Secret, SnapshotPolicy, StoragePool
from controller.spec.pool_sources import FILE_POOL_TYPES
from controller.spec.specset import Located, SpecSet
from controller.spec.volume import check_volumes

FORBIDDEN_ROOTS = ("/dev", "/proc", "/sys", "/run")


def uri_is_xen(uri: str) -> bool:
    return urlsplit(uri).scheme.split("+")[0] == "xen"


def uri_is_local(uri: str) -> bool:
    return not urlsplit(uri).hostname


def host_is_xen(host: Host) -> bool:
    return host.spec.hypervisor == "xen" or uri_is_xen(host.spec.uri)


def confine_path(
    path: str, allowed: list[str], realpath: Callable[[str], str] | None = None, host: str | None = None
) -> str | None:
    """Why ``path`` may not be used (None if it may): absolute, no '..', no device
    files, inside an allowed directory even after symlinks are followed. ``host`` names
    the Host whose spec.storage.allowedDirs would allow it."""
    field = f"spec.storage.allowedDirs of Host {host!r}" if host else "the Host's spec.storage.allowedDirs"
    if not path.startswith("/"):
        return f"{path!r} is not an absolute path"
    if ".." in path.split("/"):
        return f"{path!r} contains '..'"
    norm = posixpath.normpath(path)
    if any(norm == root or norm.startswith(root + "/") for root in FORBIDDEN_ROOTS):
        return f"{path!r} is a device or system path"

    def inside(p: str, dirs: list[str]) -> bool:
        return any(p == d or p.startswith(d.rstrip("/") + "/") for d in dirs)

    dirs = [posixpath.normpath(d) for d in allowed]
    if not inside(norm, dirs):
        return (f"{path!r} is outside the host's allowed directories ({', '.join(allowed)}); "
                f"to allow it, add its directory to {field}")
    if realpath is not None:
        real = realpath(norm)
        if not inside(real, [realpath(d) for d in dirs]):
            return (f"{path!r} resolves through a symlink to {real!r}, outside the allowed "
                    f"directories ({field})")
    return None


def _diag(item: Located, path: tuple[str | int, ...], message: str, severity: str = "error",
          key: bool = False) -> Diagnostic:
    line, col = item.where(*path, key=key)
    return Diagnostic(item.file, line, col, message, severity)


def _duplicates(items: list[Located], what: str, per_host: bool = False) -> Iterator[Diagnostic]:
    """Names unique per kind, or per kind and host for networks and pools."""
    first: dict[Any, Located] = {}
    for item in items:
        name = item.obj.metadata.name
        k = (item.obj.spec.host, name) if per_host else name
        if k in first:
            prev = first[k]
            line, _ = prev.where("metadata", "name")
            on = f" on host {item.obj.spec.host!r}" if per_host else ""
            yield _diag(item, ("metadata", "name"), f"duplicate {what} {name!r}{on} "
                        f"(also defined at {prev.file}:{line})")
        else:
            first[k] = item


def check_spec_set(specs: SpecSet) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    hosts = {h.obj.metadata.name: h.obj for h in specs.of_kind(Host)}
    nets = list(specs.of_kind(Network))
    pools = list(specs.of_kind(StoragePool))
    guests = [g for g in specs.items if isinstance(getattr(g.obj, "spec", None), GuestSpec)]
    policies = list(specs.of_kind(SnapshotPolicy))

    def realpath_for(host: Host) -> Callable[[str], str] | None:
        return os.path.realpath if uri_is_local(host.spec.uri) else None

    out += _duplicates(list(specs.of_kind(Host)), "Host")
    out += _duplicates(nets, "Network", per_host=True)
    out += _duplicates(pools, "StoragePool", per_host=True)
    out += _duplicates(guests, "Guest")
    out += _duplicates(policies, "SnapshotPolicy")
    out += _duplicates(list(specs.of_kind(BackupPolicy)), "BackupPolicy")
    out += _duplicates(list(specs.of_kind(Secret)), "Secret")

    # Host URIs: a Xen URI with another hypervisor is a contradiction.
    for item in specs.of_kind(Host):
        h = item.obj
        if not urlsplit(h.spec.uri).scheme:
            out.append(_diag(item, ("spec", "uri"), f"{h.spec.uri!r} is not a libvirt URI "
                             "(e.g. qemu:///system)"))
        elif uri_is_xen(h.spec.uri) and h.spec.hypervisor not in (None, "xen"):
            out.append(_diag(item, ("spec", "hypervisor"),
                             f"hypervisor {h.spec.hypervisor} does not match the Xen URI"))
        for i, d in enumerate(h.spec.storage.allowed_dirs):
            if not d.startswith("/") or ".." in d.split("/"):
                out.append(_diag(item, ("spec", "storage", "allowedDirs", i),
                                 f"{d!r} must be an absolute path without '..'"))

    def missing_host(item: Located) -> bool:
        name = item.obj.spec.host
        if name is None and getattr(item.obj.spec, "host_selector", None) is not None:
            return True  # not placed yet (only `virtsync place` loads such specs): nothing to check
        if name in hosts:
            return False
        known = ", ".join(sorted(hosts)) or "none defined"
        out.append(_diag(item, ("spec", "host"), f"unknown host {name!r} (hosts: {known})"))
        return True

    # Networks: addresses, DHCP, overlaps and bridge names per host.
    net_index: dict[tuple[str, str], Network] = {}
    subnets: dict[str, list[tuple[ipaddress.IPv4Network, Located]]] = defaultdict(list)
    bridges: dict[tuple[str, str], Located] = {}
    for item in nets:
        n: Network = item.obj
        net_index[(n.spec.host, n.metadata.name)] = n
        missing_host(item)
        if n.spec.bridge and n.spec.mode != "bridge":
            bkey = (n.spec.host, n.spec.bridge)
            if bkey in bridges:
                other_name = bridges[bkey].obj.metadata.name
                out.append(_diag(item, ("spec", "bridge"), f"bridge {n.spec.bridge!r} is already "
                                 f"used by network {other_name!r}"))
            bridges[bkey] = item
        if n.spec.ipv4 is None:
            continue
        iface = ipaddress.IPv4Interface(n.spec.ipv4.address)
        for other_net, other in subnets[n.spec.host]:
            if iface.network.overlaps(other_net):
                out.append(_diag(item, ("spec", "ipv4", "address"),
                                 f"subnet {iface.network} overlaps network "
                                 f"{other.obj.metadata.name!r} ({other_net}) on the same host"))
        subnets[n.spec.host].append((iface.network, item))
        out += _check_dhcp(item, iface)

    # Pools.
    pool_index: dict[tuple[str, str], StoragePool] = {}
    for item in pools:
        p: StoragePool = item.obj
        pool_index[(p.spec.host, p.metadata.name)] = p
        if missing_host(item):
            continue
        host = hosts[p.spec.host]
        if p.spec.path is None or p.spec.type not in FILE_POOL_TYPES:
            continue  # the others' paths are device directories (/dev/VG, /dev/disk/by-path), not files
        why = confine_path(p.spec.path, host.spec.storage.allowed_dirs, realpath_for(host), p.spec.host)
        if why:
            out.append(_diag(item, ("spec", "path"), why))

    # Guests: references, MACs, Xen-only fields, paths, ignore pointers.
    macs: dict[tuple[str, str], tuple[Located, int]] = {}
    for item in guests:
        g = item.obj
        spec: GuestSpec = g.spec
        if missing_host(item):
            continue
        host = hosts[spec.host or ""]
        xen = host_is_xen(host)
        if spec.xen is not None and not xen:
            out.append(_diag(item, ("spec", "xen"), f"'xen' applies only to guests of Xen hosts; "
                             f"host {host.metadata.name!r} is not one"))
        for i, nic in enumerate(spec.interfaces):
            # bridge and direct NICs are on host devices, not on a kind: Network
            if nic.network is not None and (spec.host, nic.network) not in net_index:
                out.append(_diag(item, ("spec", "interfaces", i, "network"),
                                 _elsewhere("network", nic.network, str(spec.host), net_index)
                                 or f"unknown network {nic.network!r} on host {spec.host!r} "
                                 "(declare it as kind: Network; adopt: true takes over an "
                                 "existing one)"))
            if nic.model == "netfront" and not xen:
                out.append(_diag(item, ("spec", "interfaces", i, "model"),
                                 "model netfront exists only on Xen hosts"))
            if nic.mac:
                mkey = (spec.host or "", nic.mac)
                if mkey in macs:
                    other, j = macs[mkey]
                    out.append(_diag(item, ("spec", "interfaces", i, "mac"),
                                     f"MAC {nic.mac} is also used by guest "
                                     f"{other.obj.metadata.name!r} (interfaces[{j}])"))
                else:
                    macs[mkey] = (item, i)
        realpath = realpath_for(host)
        allowed = host.spec.storage.allowed_dirs
        for i, disk in enumerate(spec.disks):
            if disk.pool and (spec.host, disk.pool) not in pool_index:
                out.append(_diag(item, ("spec", "disks", i, "pool"),
                                 _elsewhere("storage pool", disk.pool, str(spec.host), pool_index)
                                 or f"unknown storage pool {disk.pool!r} on host {spec.host!r} "
                                 "(declare it as kind: StoragePool)"))
            elif disk.pool and (ptype := pool_index[(str(spec.host), disk.pool)].spec.type) not in FILE_POOL_TYPES:
                out.append(_diag(item, ("spec", "disks", i, "pool"), f"pool {disk.pool!r} is a {ptype} pool: "
                                 "guests' disks are made as files, in dir, fs or netfs pools"))
            if disk.bus == "xen" and not xen:
                out.append(_diag(item, ("spec", "disks", i, "bus"),
                                 "bus xen exists only on Xen hosts"))
            for fld, value in (("path", disk.path), ("from", disk.from_)):
                if value is None or (fld == "from" and not value.startswith(("/", "."))):
                    continue  # 'from' without a slash names a volume of the pool
                why = confine_path(value, allowed, realpath, host.metadata.name)
                if why:
                    out.append(_diag(item, ("spec", "disks", i, fld), why))
        for i, share in enumerate(spec.filesystems):  # a guest must not be handed the host's /etc
            why = confine_path(share.source, allowed, realpath, host.metadata.name)
            if why:
                out.append(_diag(item, ("spec", "filesystems", i, "source"), why))
        if spec.cloud_init is not None and not any(d.pool for d in spec.disks):
            out.append(_diag(item, ("spec", "cloudInit"), "cloudInit needs a disk in a pool: the seed ISO "
                             "is kept in that pool"))
        if spec.boot and spec.boot.pool is not None:
            if (spec.host, spec.boot.pool) not in pool_index:
                out.append(_diag(item, ("spec", "boot", "pool"),
                                 _elsewhere("storage pool", spec.boot.pool, str(spec.host), pool_index)
                                 or f"unknown storage pool {spec.boot.pool!r} on "
                                 f"host {spec.host!r} (declare it as kind: StoragePool)"))
            for fld in ("kernel", "initrd"):
                value = getattr(spec.boot, fld)
                if value and not value.startswith("/"):
                    out.append(_diag(item, ("spec", "boot", fld), f"{value!r}: give the absolute path of the "
                                     "file to upload"))
        elif spec.boot:
            for fld in ("kernel", "initrd"):
                value = getattr(spec.boot, fld)
                why = confine_path(value, allowed, realpath, host.metadata.name) if value else None
                if why:
                    out.append(_diag(item, ("spec", "boot", fld), why))
        if spec.window is not None and spec.restart_policy != "window":
            out.append(_diag(item, ("spec", "window"), f"'window' has no effect with restartPolicy "
                             f"{spec.restart_policy}: only restartPolicy: window restarts inside it",
                             severity="warning", key=True))
        for i, pointer in enumerate(spec.ignore):
            why = _check_pointer(pointer)
            if why:
                out.append(_diag(item, ("spec", "ignore", i), why))

    out += check_volumes(specs)  # kind: Volume's pool, Secret, source; guests' volume: references

    # xmlPatches: owned XML and libvirt's schema (only objects with patches; runs virt-xml-validate).
    out += check_patches(specs)

    for item in policies:
        sel = item.obj.spec.selector.match_labels
        if not any(sel.items() <= g.obj.metadata.labels.items() for g in guests):
            out.append(_diag(item, ("spec", "selector"),
                             f"selector {sel} matches no guest", severity="warning"))
    return out


def _elsewhere(what: str, name: str, host: str, index: dict[tuple[str, str], Any]) -> str | None:
    """The message for a network or pool that is declared, but on other hosts only."""
    others = sorted(h for h, n in index if n == name and h != host)
    if not others:
        return None
    on = ", ".join(repr(h) for h in others)
    plural = "s" if len(others) > 1 else ""
    kind = "Network" if what == "network" else "StoragePool"
    return (f"{what} {name!r} is declared on host{plural} {on}, not on host {host!r}: networks and "
            f"storage pools belong to one host (declare a kind: {kind} {name!r} with host: {host})")


def _check_dhcp(item: Located, iface: ipaddress.IPv4Interface) -> Iterator[Diagnostic]:
    dhcp = item.obj.spec.ipv4.dhcp
    if dhcp is None:
        return
    net = iface.network
    usable = (net.network_address, net.broadcast_address)
    start, end = ipaddress.IPv4Address(dhcp.start), ipaddress.IPv4Address(dhcp.end)
    for fld, addr in (("start", start), ("end", end)):
        if addr not in net or addr in usable:
            yield _diag(item, ("spec", "ipv4", "dhcp", fld),
                        f"DHCP range {fld} {addr} is not a usable address of {net}")
    if start > end:
        yield _diag(item, ("spec", "ipv4", "dhcp", "start"),
                    f"DHCP range start {start} is after its end {end}")
    elif start <= iface.ip <= end:
        yield _diag(item, ("spec", "ipv4", "dhcp", "start"),
                    f"DHCP range {start}-{end} includes the host's own address {iface.ip}")
    seen: dict[str, dict[Any, int]] = {"mac": {}, "ip": {}, "name": {}}
    for i, lease in enumerate(dhcp.hosts):
        ip = ipaddress.IPv4Address(lease.ip)
        if ip not in net or ip in usable or ip == iface.ip:
            yield _diag(item, ("spec", "ipv4", "dhcp", "hosts", i, "ip"),
                        f"static lease {ip} is not a usable guest address of {net}")
        for fld in ("mac", "ip", "name"):
            value = getattr(lease, fld)
            if value is None:
                continue
            if value in seen[fld]:
                yield _diag(item, ("spec", "ipv4", "dhcp", "hosts", i, fld),
                            f"{fld} {value} is also used by static lease hosts[{seen[fld][value]}]")
            else:
                seen[fld][value] = i


def _check_pointer(pointer: str) -> str | None:
    parts = pointer.split("/")[2:]
    field = parts[0]
    names = {f.alias or n for n, f in GuestSpec.model_fields.items()}
    if field not in names:
        return f"ignore {pointer!r}: /spec/{field} is not a Guest field"
    return None
