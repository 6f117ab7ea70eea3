"""libvirt calls for kind: Volume: make (LUKS too), copy within a host or between hosts, mark,
let go, delete. Each takes names and numbers (the executor stays free of libvirt).

Copies reuse the pool-filling discipline of operations.py: one full copy into a pool at a time,
the room checked first, and a copy that runs out of space midway removed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import libvirt

from controller.errors import OperationFailed
from controller.fields.volume import owned_volumes
from controller.hypervisor.deadline import Bounded, bounded
from controller.hypervisor.errors import is_not_found, libvirt_call
from controller.hypervisor.operations import HostOps, _filling, pump
from controller.hypervisor.pool_xml import encrypted_volume_xml, volume_encryption, volume_format, volume_xml
from controller.hypervisor.secrets import observe_secrets
from controller.model.state import ObservedPool
from controller.spec.units import format_size

# qemu-img's PBKDF benchmark (LUKS) sometimes fails to measure its own CPU time on a loaded
# machine ("Unable to get accurate CPU usage"); seen here once in four creates: tried again.
_PBKDF_FLAKE = "Unable to get accurate CPU usage"


def _create_long(p: Any, xml: str) -> Any:
    """storageVolCreateXML without the call deadline: a LUKS volume's PBKDF benchmark and key
    derivation take qemu-img seconds to minutes on a loaded host (the daemon still answers
    keepalive meanwhile), where a plain create takes milliseconds and keeps its deadline."""
    if isinstance(p, Bounded):
        return bounded(p._runner.call("createXML", p.unbounded.createXML, xml, 0, long=True), p._runner)
    return p.createXML(xml, 0)


def _write_marker(ops: HostOps, p: libvirt.virStoragePool, marker: str) -> None:
    if marker and marker not in p.listVolumes():
        p.createXML(volume_xml(marker, 0, None), 0)


def define_volume(ops: HostOps, pool: str, name: str, capacity: int, fmt: str, secret_uuid: str,
                  marker: str) -> str:
    """An empty volume (LUKS with ``secret_uuid``), then its ownership marker; the volume is
    removed again if the marker cannot be written (nothing unowned left behind)."""
    p = ops._pool(pool)
    xml = encrypted_volume_xml(name, capacity, fmt, secret_uuid) if secret_uuid else volume_xml(name, capacity, fmt)
    with libvirt_call(ops.host, f"create volume {pool}/{name}"):
        try:
            vol = _create_long(p, xml) if secret_uuid else p.createXML(xml, 0)
        except libvirt.libvirtError as exc:
            if not secret_uuid or _PBKDF_FLAKE not in str(exc):
                raise
            vol = _create_long(p, xml)
        try:
            _write_marker(ops, p, marker)
        except libvirt.libvirtError:
            with contextlib.suppress(libvirt.libvirtError):
                vol.delete(0)
            raise
        return str(vol.path())


def clone_volume(ops: HostOps, pool: str, name: str, fmt: str, from_pool: str, from_volume: str,
                 marker: str) -> str:
    """A full copy of a volume of this host (any pool) by storageVolCreateXMLFrom."""
    p = ops._pool(pool)
    with libvirt_call(ops.host, f"copy volume {from_pool}/{from_volume} → {pool}/{name}"):
        src = ops._pool(from_pool).storageVolLookupByName(from_volume)
        info = src.info()
        cap, need = int(info[1]), int(info[2])
        what = f"a full copy of {from_pool}/{from_volume} as {name}"
        with _filling(ops.host, pool):
            ops._room(p, pool, need, what)
            try:
                vol = p.createXMLFrom(volume_xml(name, cap, fmt), src, 0)
            except libvirt.libvirtError as exc:
                ops._out_of_space(exc, p, pool, need, what)
                raise
        _write_marker(ops, p, marker)
        return str(vol.path())


def stream_volume(src: HostOps, from_pool: str, from_volume: str, dest: HostOps, pool: str, name: str,
                  fmt: str, marker: str, progress: Callable[[int, int | None], None] | None = None) -> int:
    """A full copy of another host's volume: downloaded there and uploaded here through this
    process (streams work between any two libvirt hosts virtsync reaches). Bytes copied."""
    with libvirt_call(src.host, f"read volume {from_pool}/{from_volume}"):
        try:
            vol = src._pool(from_pool).storageVolLookupByName(from_volume)
        except libvirt.libvirtError as exc:
            if is_not_found(exc):
                raise OperationFailed(f"source volume {from_pool}/{from_volume} does not exist (yet) on "
                                      f"{src.host}", host=src.host, retryable=True, delay=30.0) from exc
            raise
        info = vol.info()
        capacity, need = int(info[1]), int(info[2])
        down = src._c().newStream(0)
        vol.download(down, 0, 0, 0)
    p = dest._pool(pool)
    copied = 0
    what = f"a copy of {src.host}:{from_pool}/{from_volume} as {name}"
    with libvirt_call(dest.host, f"write volume {pool}/{name}"), _filling(dest.host, pool):
        dest._room(p, pool, need, what)
        new = p.createXML(volume_xml(name, capacity, fmt), 0)
        try:
            up = dest._c().newStream(0)
            new.upload(up, 0, 0, 0)
            copied = pump(down, up, progress, need)
            p.refresh(0)
            _write_marker(dest, p, marker)
        except libvirt.libvirtError as exc:
            with contextlib.suppress(libvirt.libvirtError):
                new.delete(0)  # half a copy is no volume
            dest._out_of_space(exc, p, pool, need, what)
            raise
    return copied


def mark_volume(ops: HostOps, pool: str, name: str, marker: str, old_marker: str) -> None:
    """Write ``marker`` (if any) and remove ``old_marker`` (if any): adopt, a new deletePolicy, or
    letting go of a volume that left the specs."""
    p = ops._pool(pool)
    with libvirt_call(ops.host, f"mark volume {pool}/{name}"):
        _write_marker(ops, p, marker)
        if old_marker and old_marker != marker:
            try:
                p.storageVolLookupByName(old_marker).delete(0)
            except libvirt.libvirtError as exc:
                if not is_not_found(exc):
                    raise


def delete_owned_volume(ops: HostOps, pool: str, name: str, marker: str) -> None:
    """The volume, then its marker (a run killed between them leaves a marker of no volume, which
    the next plan lets go of)."""
    ops.delete_volume(pool, name)
    mark_volume(ops, pool, name, "", marker)


def volume_specs(conn: libvirt.virConnect, host: str, pools: Mapping[str, ObservedPool],
                 instance: str) -> list[tuple[str, dict[str, Any]]]:
    """(name, spec) of each volume this instance owns in ``pools``, for export: a spec that plans
    no change (its size is the capacity; format, LUKS secret and deletePolicy as they are)."""
    out: list[tuple[str, dict[str, Any]]] = []
    secret_names: dict[str, str] | None = None
    for pool in sorted(pools.values(), key=lambda p: p.name):
        for name, policy in sorted(owned_volumes(instance, pool.volumes).items()):
            vol = pool.volumes.get(name)
            if vol is None:
                continue
            with libvirt_call(host, f"read volume {pool.name}/{name}"):
                xml = conn.storagePoolLookupByName(pool.name).storageVolLookupByName(name).XMLDesc(0)
            spec: dict[str, Any] = {"host": host, "pool": pool.name, "format": volume_format(xml) or "raw",
                                    "size": format_size(vol.capacity)}
            enc = volume_encryption(xml)
            if enc is not None and secret_names is None:  # the kind: Secret each libvirt secret came from
                secret_names = {o.uuid: o.owner_name for o in (observe_secrets(conn, host) or {}).values()
                                if o.owner_name}
            if enc is not None and secret_names and enc[1] is not None and enc[1] in secret_names:
                spec["encryption"] = {"secretRef": secret_names[enc[1]]}
            if policy != "keep":
                spec["deletePolicy"] = policy
            out.append((name, spec))
    return out
