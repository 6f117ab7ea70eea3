"""Diff of kind: Volume objects on one host: make, copy, grow, mark, let go of and delete them.

Ownership is a marker volume beside each volume (fields/volume.py): a volume without this
instance's marker is refused (or, with adopt: true, marked), never changed. A volume leaving
the specs is deleted only with --prune and deletePolicy: delete (the guard counts it); with
keep, --prune only removes the marker. Grow only: a smaller size is an error naming both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.fields.volume import foreign_owner, owned_volumes, volume_marker
from controller.model.state import HostState, ObservedPool, ResourceKey
from controller.plan.actions import (
    Action,
    CloneVolume,
    DefineVolume,
    DeleteVolume,
    FieldChange,
    Impact,
    MarkVolume,
    ObjectDrift,
    Problem,
    ResizeVolume,
)
from controller.plan.context import PlanOptions
from controller.spec.models import Volume
from controller.spec.secrets import libvirt_secret_uuid
from controller.spec.specset import SpecSet
from controller.spec.units import format_size


@dataclass
class VolumesPlan:
    """A host's volumes plan: actions, problems and drift."""

    actions: list[Action] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    drift: list[ObjectDrift] = field(default_factory=list)


def plan_volumes(specs: SpecSet, host: HostState, opts: PlanOptions) -> VolumesPlan:
    out = VolumesPlan()
    mine = [i.obj for i in specs.of_kind(Volume) if i.obj.spec.host == host.host]
    by_name = {v.metadata.name: v for v in specs.of_kind(Volume) for v in [v.obj]}
    for vol in mine:
        _plan_one(vol, by_name, host, opts, out)
    wanted = {(v.spec.pool, v.metadata.name) for v in mine}
    for pool in sorted(host.pools.values(), key=lambda p: p.name):
        for name, policy in sorted(owned_volumes(opts.instance, pool.volumes).items()):
            if (pool.name, name) not in wanted:
                _extra(pool, name, policy, host, opts, out)
    return out


def _plan_one(vol: Volume, volumes: dict[str, Volume], host: HostState, opts: PlanOptions,
              out: VolumesPlan) -> None:
    name, spec = vol.metadata.name, vol.spec
    key = ResourceKey(host.host, "Volume", name)
    marker = volume_marker(opts.instance, name, spec.delete_policy)
    pool = host.pools.get(spec.pool)
    # A pool this plan makes or starts lists no volumes yet: the volume is made after it.
    obs = pool.volumes.get(name) if pool is not None and pool.active else None
    needs = () if pool is not None and pool.active else (f"StoragePool/{spec.pool}",)
    if obs is None:
        if spec.encryption is not None and host.secrets is None:
            _error(out, key, f"volume {name}: host {host.host} ({host.caps.driver}) has no libvirt secret "
                   "driver: a LUKS volume cannot be made there")
            return
        if spec.adopt and spec.size is None and spec.from_ is None:
            _error(out, key, f"volume {name!r} (adopt: true, no size or from) does not exist in pool {spec.pool}")
            return
        made = _create(vol, volumes, key, marker, host, needs)
        if isinstance(made, str):
            _error(out, key, made)
            return
        out.actions.append(made)
        out.drift.append(ObjectDrift(key, "missing", made.changes))
        return
    assert pool is not None
    owned = owned_volumes(opts.instance, pool.volumes)
    other = foreign_owner(opts.instance, name, pool.volumes)
    changes: list[FieldChange] = []
    if name not in owned:
        if other is not None:
            _error(out, key, f"volume {name!r} in pool {spec.pool} is managed by virtsync instance {other!r}, "
                   f"not {opts.instance!r}")
            return
        if not spec.adopt:
            _error(out, key, f"a volume named {name!r} exists in pool {spec.pool} on {host.host} and is not "
                   "managed by virtsync; set adopt: true to take it over")
            return
        change = FieldChange("/metadata/owner", opts.instance, None, None, Impact.LIVE,
                             "adopt: ownership marker written (storageVolCreateXML of an empty marker)")
        changes.append(change)
        out.actions.append(MarkVolume(key=key, reason="adopt: true", changes=(change,), pool=spec.pool,
                                      volume=name, marker=marker))
    elif owned[name] != spec.delete_policy:
        change = FieldChange("/spec/deletePolicy", spec.delete_policy, owned[name], None, Impact.LIVE,
                             "marker renamed")
        changes.append(change)
        out.actions.append(MarkVolume(key=key, reason="deletePolicy changed", changes=(change,), pool=spec.pool,
                                      volume=name, marker=marker,
                                      old_marker=volume_marker(opts.instance, name, owned[name])))
    if spec.size is not None and spec.size < obs.capacity:
        _error(out, key, f"volume {name}: size {format_size(spec.size)} is smaller than the volume "
               f"({format_size(obs.capacity)}); volumes are never shrunk")
        return
    if spec.size is not None and spec.size > obs.capacity:
        guest, disk, target = _attached(host, obs.path)
        how = (f"blockResize of {guest}'s {target} (live)" if guest and host.caps.block_resize
               else "storageVolResize")
        change = FieldChange("/spec/size", format_size(spec.size), format_size(obs.capacity), None,
                             Impact.LIVE, how)
        changes.append(change)
        out.actions.append(ResizeVolume(key=key, reason="grow volume" + (f" (attached to {guest})" if guest else ""),
                                        changes=(change,), pool=spec.pool, volume=name, capacity=spec.size,
                                        guest=guest if host.caps.block_resize else "",
                                        disk=disk if host.caps.block_resize else ""))
    out.drift.append(ObjectDrift(key, "drift" if changes else "in-sync", tuple(changes)))


def _create(vol: Volume, volumes: dict[str, Volume], key: ResourceKey, marker: str, host: HostState,
            needs: tuple[str, ...]) -> Action | str:
    """The action that makes the volume, or why it cannot be made now."""
    name, spec = vol.metadata.name, vol.spec
    size = spec.size or 0
    src = spec.from_
    if src is None:
        secret = libvirt_secret_uuid(spec.encryption.secret_ref) if spec.encryption else ""
        note = "storageVolCreateXML" + (" (LUKS)" if secret else "")
        change = FieldChange("/spec", f"{format_size(size)} {spec.format}", None, None, Impact.CREATE, note)
        return DefineVolume(key=key, reason=f"volume does not exist in pool {spec.pool}", changes=(change,),
                            needs=needs, pool=spec.pool, volume=name, capacity=size, format=spec.format,
                            secret_uuid=secret, marker=marker)
    if src.pool is None:  # a kind: Volume, wherever it is
        source = volumes[src.volume]
        from_host, from_pool, from_volume = source.spec.host, source.spec.pool, src.volume
        if from_host == host.host:
            needs = (*needs, f"Volume/{src.volume}")
    else:
        from_host, from_pool, from_volume = src.host or host.host, src.pool, src.volume
    where = f"{from_pool}/{from_volume}" + ("" if from_host == host.host else f" on {from_host}")
    seen = host.pools.get(from_pool)
    source_vol = seen.volumes.get(from_volume) if seen is not None and from_host == host.host else None
    user = _attached(host, source_vol.path)[0] if source_vol is not None else ""
    if user:  # qemu-img cannot open it: QEMU holds the image's write lock
        return (f"volume {name}: its source {where} is attached to the running guest {user}: stop {user} "
                "to copy it (a running disk has no consistent copy)")
    how = ("storageVolCreateXMLFrom" if from_host == host.host
           else f"download stream from {from_host}, upload stream here")
    change = FieldChange("/spec/from", where, None, None, Impact.CREATE, how)
    return CloneVolume(key=key, reason=f"full copy of {where}",
                       changes=(change,), needs=needs, pool=spec.pool, volume=name, from_host=from_host,
                       from_pool=from_pool, from_volume=from_volume, capacity=size, format=spec.format,
                       marker=marker)


def _extra(pool: ObservedPool, name: str, policy: str, host: HostState, opts: PlanOptions,
           out: VolumesPlan) -> None:
    """A volume this instance owns that no Volume of the specs declares any more."""
    key = ResourceKey(host.host, "Volume", name)
    marker = volume_marker(opts.instance, name, policy)
    exists = name in pool.volumes
    if policy == "delete" and exists:
        out.drift.append(ObjectDrift(key, "extra", message="managed by virtsync, gone from the specs "
                                     "(deletePolicy: delete: deleted with --prune)"))
        if opts.prune:
            out.actions.append(DeleteVolume(key=key, reason="deletePolicy: delete, gone from the specs",
                                            changes=(FieldChange("/", None, f"{pool.name}/{name}", None,
                                                                 Impact.DELETE, "storageVolDelete"),),
                                            pool=pool.name, volume=name, marker=marker))
        return
    why = "deletePolicy: keep" if exists else "the volume is gone"
    out.drift.append(ObjectDrift(key, "extra", message=f"managed by virtsync, gone from the specs ({why}: "
                                 "--prune removes only its ownership marker)"))
    if opts.prune:
        out.actions.append(MarkVolume(key=key, reason=f"{why}: let go (its ownership marker is removed)",
                                      changes=(FieldChange("/metadata/owner", None, opts.instance, None,
                                                           Impact.LIVE, "marker removed"),),
                                      pool=pool.name, volume=name, marker="", old_marker=marker))


def _attached(host: HostState, path: str) -> tuple[str, str, str]:
    """(guest, disk name, target) of a running guest that has the file attached, or empty strings."""
    for gname, g in sorted(host.guests.items()):
        if g.live is None:
            continue
        for d in g.live.disks:
            if d.path == path:
                return gname, d.name, d.target
    return "", "", ""


def _error(out: VolumesPlan, key: ResourceKey, message: str) -> None:
    out.problems.append(Problem(key, message))
    out.drift.append(ObjectDrift(key, "error", message=message))
