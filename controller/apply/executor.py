"""Plan → libvirt calls → ChangeSet.

Hosts run in parallel; within a host the phases run in order (pools →
networks → guests → volumes → power → deletes) and the actions of one phase
run concurrently, bounded, so starting 20 guests is not 20 waits in a row.
A failed action fails only its object: later actions on the same object (or
on volumes of a failed guest) are skipped with the reason.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path
from typing import Any, TypeVar

from controller.apply.changeset import ChangeSet, Outcome, status_for
from controller.errors import PlanError, VirtsyncError
from controller.hypervisor import ownership
from controller.hypervisor.domain_xml import (
    WriteContext,
    disk_xml_by_name,
    disk_xml_by_target,
    new_guest_xml,
    nic_replug_xmls,
    nic_xml,
    nic_xml_at,
    read_guest,
    update_guest_xml,
)
from controller.hypervisor.network_xml import dhcp_host_xml, network_xml, read_network
from controller.hypervisor.operations import HostOps
from controller.hypervisor.xmlutil import parse
from controller.model.state import HostState, ObservedGuest, Owner, ResourceKey
from controller.plan.actions import Action, HostPlan, Plan
from controller.plan.context import applied_fields, digest
from controller.plan.guests import owner_for
from controller.plan.keys import match_nics
from controller.spec.models import Guest, Network, StoragePool
from controller.spec.specset import SpecSet

Progress = Callable[[Outcome, int, int], None]
T = TypeVar("T", Guest, Network, StoragePool)

@dataclass
class ExecOptions:
    instance: str = "default"
    commit: str = ""
    concurrency: int = 8

class _HostRun:
    def __init__(self, hp: HostPlan, specs: SpecSet, state: HostState, ops: HostOps,
                 opts: ExecOptions, ops_for: Callable[[str], HostOps] | None = None) -> None:
        self.hp, self.specs, self.state, self.ops, self.opts = hp, specs, state, ops, opts
        self.ops_for = ops_for  # other hosts' operations (a migration's source)
        self.failed: set[str] = set()  # "Kind/name" of objects whose action failed
        self.lock = threading.Lock()

    # ------------------------------------------------------------- helpers

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
                      if p.spec.host == self.hp.host})
        return paths

    def write_ctx(self, owner: Owner, uuid: str | None = None) -> WriteContext:
        return WriteContext(virt_type=self.state.caps.virt_type, pool_paths=self.pool_paths(), owner=owner, uuid=uuid)

    def guest_owner(self, guest: Guest, obs: ObservedGuest | None) -> Owner:
        data = owner_for(guest, self.opts.instance, self.opts.commit)
        if not self.opts.commit and obs is not None and obs.owner is not None:
            data["commit"] = obs.owner.commit  # the commit changes only with the object
        return Owner(**data)

    def net_owner(self, net: Network) -> Owner:
        applied = applied_fields(net.spec)
        return Owner(self.opts.instance, "Network", net.metadata.name, digest(applied),
                     self.opts.commit, applied)

    def blocked(self, action: Action) -> str | None:
        deps = [f"{action.key.kind}/{action.key.name}", *action.args.get("needs", [])]
        if "guest" in action.args:
            deps.append(f"Guest/{action.args['guest']}")
        if action.key.kind == "Guest" and action.op in ("start", "restart"):
            g = self.guest(action.key.name)
            deps += [f"Network/{i.network}" for i in g.spec.interfaces]
            deps += [f"StoragePool/{d.pool}" for d in g.spec.disks if d.pool]
            deps += [f"Volume/{d.pool}/{vol}" for d in g.spec.disks if d.pool
                     for vol in [f"{g.metadata.name}-{d.name}"]]
        with self.lock:
            hit = [d for d in deps if d in self.failed or any(
                f.startswith(d + ".") for f in self.failed if f.startswith("Volume/"))]
        return f"skipped: {hit[0]} failed earlier" if hit else None

    # ------------------------------------------------------------ running

    def run(self, progress: Progress | None, counter: list[int], total: int) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for _, group in groupby(self.hp.actions, key=lambda a: a.phase):
            # Objects run concurrently; one object's actions run in plan order (update-network
            # before start-network: a config-only update of a started network misses it live).
            chains: dict[ResourceKey, list[Action]] = {}
            for action in group:
                chains.setdefault(action.key, []).append(action)
            with ThreadPoolExecutor(max_workers=max(1, self.opts.concurrency)) as pool:
                for chain in pool.map(self.run_chain, chains.values()):
                    for outcome in chain:
                        outcomes.append(outcome)
                        if progress is not None:
                            with self.lock:
                                counter[0] += 1
                                n = counter[0]
                            progress(outcome, n, total)
        return outcomes

    def run_chain(self, actions: list[Action]) -> list[Outcome]:
        return [self.run_one(a) for a in actions]

    def run_one(self, action: Action) -> Outcome:
        started = time.monotonic()
        why = self.blocked(action)
        if why:
            return Outcome(action.key, action.op, "skipped", why)
        try:
            detail = HANDLERS[action.op](self, action) or ""
        except VirtsyncError as exc:
            with self.lock:
                self.failed.add(f"{action.key.kind}/{action.key.name}")
            return Outcome(action.key, action.op, "failed", str(exc).removeprefix(f"{self.hp.host}: "),
                           time.monotonic() - started, exc.retryable)
        _die_if_asked(action)
        return Outcome(action.key, action.op, status_for(action.op), detail,
                       time.monotonic() - started)

def _die_if_asked(action: Action) -> None:
    """Tests of crash safety: VIRTSYNC_TEST_DIE_AFTER=OP[:NAME] kills the process right
    after that action, as a `kill -9` would, so every action boundary can be tested."""
    target = os.environ.get("VIRTSYNC_TEST_DIE_AFTER")
    if not target:
        return
    op, _, name = target.partition(":")
    if op == action.op and (not name or name == action.key.name):
        os._exit(137)


# ------------------------------------------------------------------ handlers

def _define_pool(run: _HostRun, a: Action) -> str:
    p = run.pool(a.key.name)
    run.ops.define_pool(p.metadata.name, p.spec.path, p.spec.autostart, run.opts.instance)
    return f"dir pool at {p.spec.path}"

def _update_pool(run: _HostRun, a: Action) -> str:
    done = []
    if a.args.get("adopt"):
        run.ops.mark_pool(a.key.name, run.opts.instance)
        done.append("adopted")
    if a.args.get("start"):
        run.ops.start_pool(a.key.name)
        done.append("started")
    if any(c.path == "/spec/autostart" for c in a.changes):
        run.ops.set_pool_autostart(a.key.name, bool(a.args["autostart"]))
        done.append(f"autostart {a.args['autostart']}")
    return ", ".join(done)

def _define_network(run: _HostRun, a: Action) -> str:
    net = run.network(a.key.name)
    if run.ops.network_xml(a.key.name) is not None:
        raise _conflict(run, f"network {a.key.name} appeared since it was observed")
    run.ops.define_network(network_xml(a.key.name, net.spec, run.net_owner(net)), net.spec.autostart)
    return f"{net.spec.mode} network started"

def _update_network(run: _HostRun, a: Action) -> str:
    name = a.key.name
    _check_network(run, name)
    done = []
    for op in a.args.get("ops", []):
        if op["cmd"] == "range":
            for cmd, start, end in (("delete", op["old_start"], op["old_end"]),
                                    ("add", op["start"], op["end"])):
                target = "both" if run.ops.network_active(name) else "config"
                run.ops.network_update(name, cmd, "range", f"<range start='{start}' end='{end}'/>",
                                       target)
            done.append(f"DHCP range {op['start']}-{op['end']}")
            continue
        run.ops.network_update(name, op["cmd"], "host", dhcp_host_xml(op["mac"], op["ip"], op["name"]),
                               op["target"])
        done.append(f"{op['cmd']} lease {op['mac']} ({op['target']})")
    if a.args.get("autostart") is not None:
        run.ops.set_network_autostart(name, bool(a.args["autostart"]))
        done.append(f"autostart {a.args['autostart']}")
    return "; ".join(done)

def _check_network(run: _HostRun, name: str) -> None:
    obs = run.state.networks.get(name)
    now = run.ops.network_xml(name)
    if obs is not None and now != obs.xml:
        raise _conflict(run, f"network {name} changed since it was observed")

def _conflict(run: _HostRun, message: str) -> VirtsyncError:
    from controller.errors import ConflictError

    return ConflictError(message, host=run.hp.host)

def _replug(run: _HostRun, network: str) -> list[str]:
    """Plug running guests' NICs back onto a (re)started network's bridge.

    libvirt 9.0 leaves the taps of running guests off the new bridge, and a
    detach + attach needs the guest to acknowledge the unplug (firmware-only
    guests never do). Switching the live NIC to the bridge directly and back
    to the network re-plugs the tap and restores its network port, with no
    help from the guest.
    """
    if not run.state.caps.hotplug:
        return []
    xml = run.ops.network_xml(network)
    bridge = read_network(xml)[2].bridge if xml else None
    if not bridge:
        return []
    done = []
    for g in run.state.guests.values():
        if g.live is None:
            continue
        for nic in g.live.interfaces:
            if nic.network != network:
                continue
            updates = nic_replug_xmls(run.ops.live_xml(g.name), nic.mac, bridge)
            if updates is None:
                continue
            for device in updates:
                run.ops.update_live(g.name, device)
            done.append(f"{g.name}:{nic.mac}")
    return done


def _start_network(run: _HostRun, a: Action) -> str:
    run.ops.start_network(a.key.name)
    replugged = _replug(run, a.key.name)
    return "started" + (f"; re-plugged {', '.join(replugged)}" if replugged else "")

def _recreate_network(run: _HostRun, a: Action) -> str:
    _check_network(run, a.key.name)
    net = run.network(a.key.name)
    obs = run.state.networks[a.key.name]
    run.ops.delete_network(a.key.name)
    run.ops.define_network(network_xml(a.key.name, net.spec, run.net_owner(net), obs.uuid),
                           net.spec.autostart)
    replugged = _replug(run, a.key.name)
    return "recreated" + (f"; re-plugged {', '.join(replugged)}" if replugged else "")

def _define_guest(run: _HostRun, a: Action) -> str:
    guest = run.guest(a.key.name)
    # A transient (running, undefined) guest is defined again under its own UUID.
    obs = run.state.guests.get(a.key.name)
    run.ops.check_unchanged(a.key.name, obs.xml if obs is not None else None)
    ctx = run.write_ctx(run.guest_owner(guest, obs), obs.uuid if obs is not None else None)
    run.ops.define_guest(new_guest_xml(a.key.name, guest.spec, ctx))
    if guest.spec.autostart:
        run.ops.set_guest_autostart(a.key.name, True)
    return f"defined ({run.state.caps.virt_type})"

def _rewritten(run: _HostRun, a: Action) -> tuple[Guest, ObservedGuest, str]:
    """The guest's definition as observed (refusing if it changed since), with the action's fields
    written in place."""
    guest = run.guest(a.key.name)
    obs = run.state.guests[a.key.name]
    run.ops.check_unchanged(a.key.name, obs.xml)
    ctx = run.write_ctx(run.guest_owner(guest, obs), obs.uuid)
    return guest, obs, update_guest_xml(obs.xml, a.key.name, guest.spec, ctx, a.args.get("fields", []))


def _update_guest(run: _HostRun, a: Action) -> str:
    name = a.key.name
    guest, _, new_xml = _rewritten(run, a)
    done = []
    if a.args.get("snapshot_first"):
        taken = _snapshot_before_restart(run, name).removeprefix("; ")
        if taken:
            done.append(taken)
    run.ops.define_guest(new_xml)
    done.append("definition updated")
    if "autostart" in a.args.get("fields", []):
        run.ops.set_guest_autostart(name, guest.spec.autostart)
    for op in a.args.get("live", []):
        done.append(_live_op(run, name, guest, new_xml, op))
    return "; ".join(done)

def _live_op(run: _HostRun, name: str, guest: Guest, new_xml: str, op: dict[str, Any]) -> str:
    kind = op["op"]
    if kind == "setmem":
        run.ops.set_memory_live(name, int(op["bytes"]))
        return "memory set live"
    if kind == "setvcpus":
        run.ops.set_vcpus_live(name, int(op["count"]))
        return f"{op['count']} vCPUs live"
    if kind == "detach-disk":
        device = disk_xml_by_target(run.ops.live_xml(name), op["target"])
        if device is not None:
            run.ops.detach_live(name, device)
        return f"detached disk {op['target']}"
    if kind == "attach-nic":
        _, _, cfg, _ = read_guest(new_xml)
        if "index" in op:
            pairs, _ = match_nics(guest.spec.interfaces, cfg.interfaces)
            idx = pairs[int(op["index"])][1]
        else:
            idx = next((i for i, n in enumerate(cfg.interfaces) if n.mac == op["mac"]), None)
        device = nic_xml_at(new_xml, idx) if idx is not None else None
        if device is None or idx is None:
            return "NIC not found in the definition"
        run.ops.attach_live(name, device)
        return f"attached NIC {cfg.interfaces[idx].mac}"
    if kind == "detach-nic":
        device = nic_xml(run.ops.live_xml(name), op["mac"])
        if device is not None:
            run.ops.detach_live(name, device)
        return f"detached NIC {op['mac']}"
    raise PlanError(f"unknown live operation {kind}")

def _attach_disks(run: _HostRun, a: Action) -> str:
    name = a.key.name
    xml = run.ops.guest_xml(name) or ""
    done = []
    for disk_name in a.args["disks"]:
        device = disk_xml_by_name(xml, name, disk_name)
        if device is not None:
            run.ops.attach_live(name, device)
            done.append(disk_name)
    return "attached " + ", ".join(done)

def _recreate_guest(run: _HostRun, a: Action) -> str:
    name = a.key.name
    guest, obs, new_xml = _rewritten(run, a)
    before = _snapshot_before_restart(run, name)
    snapshots = run.ops.snapshot_xmls(name)
    done = []
    if obs.state != "stopped":
        done.append(run.ops.stop(name, guest.spec.shutdown_timeout))
    run.ops.undefine_guest(name, keep_nvram=True)
    run.ops.define_guest(new_xml)
    if snapshots:
        run.ops.redefine_snapshots(name, snapshots)
        done.append(f"{len(snapshots)} snapshot(s) re-registered")
    if a.args.get("restart"):
        run.ops.start(name, paused=guest.spec.state == "paused")
        done.append("started")
    return "recreated under the same UUID; " + "; ".join(done) + before

def _create_volume(run: _HostRun, a: Action) -> str:
    args = a.args
    capacity = int(args["capacity"] or 0)
    source = args.get("source")
    if not source:
        return run.ops.create_volume(args["pool"], args["volume"], capacity, args["format"])
    kind, ref = source
    if kind == "path":
        path, fmt, base_cap = ref, run.ops.file_format(ref), None
    else:
        info = run.ops.volume_info(args["pool"], ref)
        if info is None:
            raise PlanError(f"image {ref!r} not found in pool {args['pool']}")
        path, fmt, base_cap = info
    if args.get("clone") == "full" and kind == "volume":
        made = run.ops.clone_volume(args["pool"], ref, args["volume"], args["format"])
        if capacity and base_cap and capacity > base_cap:
            run.ops.resize_volume(args["pool"], args["volume"], capacity)
        return f"{made} (full copy of {ref})"
    if args.get("clone") == "full":
        raise PlanError(f"a full clone needs an image volume in the pool, not the file {ref}")
    made = run.ops.create_volume(args["pool"], args["volume"], max(capacity, base_cap or 0), "qcow2",
                                 backing=(path, fmt))
    return f"{made} (linked to {path})"


def _fetch_image(run: _HostRun, a: Action) -> str:
    from controller.images.download import fetch_image

    args = a.args
    local = fetch_image(args["url"], args["sha256"], image_cache_dir())
    run.ops.upload_volume(args["pool"], args["volume"], local)
    return f"downloaded, verified (sha256) and uploaded as {args['volume']}"


def image_cache_dir() -> Path:
    base = os.environ.get("VIRTSYNC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "virtsync")
    return Path(base) / "images"


def _upload_file(run: _HostRun, a: Action) -> str:
    local = Path(str(a.args["path"]))
    if not local.is_file():
        raise PlanError(f"{local} (boot file of guest {a.args['guest']}) does not exist here")
    run.ops.upload_volume(a.args["pool"], a.args["volume"], local)
    return f"uploaded {local} ({local.stat().st_size} bytes)"


def _write_seed(run: _HostRun, a: Action) -> str:
    from controller.images.seed import build_seed_iso

    guest = run.guest(a.args["guest"])
    ci = guest.spec.cloud_init
    assert ci is not None
    meta = ci.meta_data if ci.meta_data is not None else (
        f"instance-id: {guest.metadata.name}\nlocal-hostname: {guest.metadata.name}\n")
    data = build_seed_iso(ci.user_data or "#cloud-config\n", meta, ci.network_config)
    run.ops.write_volume(a.args["pool"], a.args["volume"], data)
    return f"seed ISO written ({len(data)} bytes)"

def _resize_volume(run: _HostRun, a: Action) -> str:
    args = a.args
    obs = run.state.guests.get(args["guest"])
    if obs is not None and obs.live is not None:
        target = next((d.target for d in obs.live.disks if d.name == args["disk"]), None)
        if target:
            run.ops.block_resize(args["guest"], target, int(args["capacity"]))
            return f"grown live ({target})"
    run.ops.resize_volume(args["pool"], args["volume"], int(args["capacity"]))
    return "grown"

def _migrate(run: _HostRun, a: Action) -> str:
    source = str(a.args["source"])
    if run.ops_for is None:
        raise PlanError("a migration needs the source host's connection")
    host = next(h for h in run.specs.hosts if h.metadata.name == run.hp.host)
    guest = run.guest(a.key.name)
    dest_uri = host.spec.migration_uri or host.spec.uri
    shared = {p.metadata.name for p in run.specs.pools if p.spec.shared}
    # disks on shared storage stay where they are; any other disk is copied live
    copy = any(d.device == "disk" and d.pool not in shared for d in guest.spec.disks)
    started = time.monotonic()
    run.ops_for(source).migrate(a.key.name, dest_uri, host.spec.migration_address, copy)
    return f"live-migrated from {source} in {time.monotonic() - started:.1f}s" + (" (disks copied)" if copy else "")


def _move(run: _HostRun, a: Action) -> str:
    """Cold move: stop on the source, copy the guest's volumes, define here (same UUID), start."""
    source = str(a.args["source"])
    if run.ops_for is None:
        raise PlanError("a move needs the source host's connection")
    src = run.ops_for(source)
    name = a.key.name
    guest = run.guest(name)
    xml = src.guest_xml(name)
    if xml is None:
        raise PlanError(f"guest {name} is no longer on {source}")
    started = time.monotonic()
    done = [src.stop(name, guest.spec.shutdown_timeout)]
    owner = ownership.find_owner(parse(xml))
    copied = 0
    for vol in owner.volumes if owner else ():
        pool, _, vol_name = vol.partition("/")
        if run.ops.volume_path(pool, vol_name) is None:
            copied += src.copy_volume_to(pool, vol_name, run.ops)
        src_dir, dst_dir = src.pool_path(pool), run.ops.pool_path(pool)
        if src_dir and dst_dir and src_dir != dst_dir:
            xml = xml.replace(f"{src_dir.rstrip('/')}/{vol_name}", f"{dst_dir.rstrip('/')}/{vol_name}")
    run.ops.define_guest(xml)
    src.undefine_guest(name, keep_nvram=True)  # its volumes stay on the source: data is never deleted
    if guest.spec.state in ("running", "paused"):
        run.ops.start(name, paused=guest.spec.state == "paused")
        done.append("started here")
    return (f"moved from {source} in {time.monotonic() - started:.1f}s ({copied} bytes copied; the source's "
            f"volumes are kept); " + "; ".join(done))


def _start(run: _HostRun, a: Action) -> str:
    run.ops.start(a.key.name, paused=bool(a.args.get("paused")))
    return "started paused" if a.args.get("paused") else "started"

def _stop(run: _HostRun, a: Action) -> str:
    return run.ops.stop(a.key.name, float(a.args.get("timeout", 120)))

def _snapshot_before_restart(run: _HostRun, name: str) -> str:
    """beforeRestart: a snapshot of the guest right before a restart or recreate."""
    from controller.hypervisor.snapshots import SnapshotOps
    from controller.snapshots.naming import snapshot_name

    guest = run.guest(name)
    wanted = [p for p in run.specs.policies if p.spec.before_restart
              and p.spec.selector.match_labels.items() <= guest.metadata.labels.items()]
    if not wanted:
        return ""
    if not run.state.caps.snapshots:
        return "; no snapshot before the restart (the host has no snapshot API)"
    ops = SnapshotOps(run.ops.conn, run.opts.instance)
    now = datetime.now(UTC).replace(microsecond=0)
    done = []
    for policy in sorted(wanted, key=lambda p: p.metadata.name):
        snap = snapshot_name(policy.metadata.name, now)
        ops.take(name, snap, policy.metadata.name, now, quiesce=policy.spec.quiesce, memory=policy.spec.memory)
        done.append(snap)
    return f"; snapshot {', '.join(done)} taken first"


def _restart(run: _HostRun, a: Action) -> str:
    before = "" if a.args.get("snapshot_taken") else _snapshot_before_restart(run, a.key.name)
    how = run.ops.stop(a.key.name, float(a.args.get("timeout", 120)))
    paused = bool(a.args.get("paused"))  # state: paused comes back paused
    run.ops.start(a.key.name, paused=paused)
    return f"{how}, started" + (" paused" if paused else "") + before

def _suspend(run: _HostRun, a: Action) -> str:
    run.ops.suspend(a.key.name)
    return "paused"

def _resume(run: _HostRun, a: Action) -> str:
    run.ops.resume(a.key.name)
    return "resumed"

def _delete_guest(run: _HostRun, a: Action) -> str:
    name = a.key.name
    obs = run.state.guests[name]
    run.ops.check_unchanged(name, obs.xml)
    if obs.state != "stopped":
        run.ops.destroy(name)
    run.ops.undefine_guest(name, keep_nvram=bool(obs.owner and obs.owner.volumes and
                                                  len(a.args.get("volumes", [])) < len(obs.owner.volumes)))
    kept = [v for v in (obs.owner.volumes if obs.owner else ()) if v not in a.args.get("volumes", [])]
    return "undefined" + (f"; volumes kept: {', '.join(kept)}" if kept else "")

def _delete_volume(run: _HostRun, a: Action) -> str:
    run.ops.delete_volume(a.args["pool"], a.args["volume"])
    return "deleted"

def _delete_network(run: _HostRun, a: Action) -> str:
    _check_network(run, a.key.name)
    run.ops.delete_network(a.key.name)
    return "deleted"

def _delete_pool(run: _HostRun, a: Action) -> str:
    run.ops.delete_pool(a.key.name, run.opts.instance)
    return "deleted"

HANDLERS: dict[str, Callable[[_HostRun, Action], str]] = {
    "define-pool": _define_pool,
    "update-pool": _update_pool,
    "define-network": _define_network,
    "update-network": _update_network,
    "start-network": _start_network,
    "recreate-network": _recreate_network,
    "define": _define_guest,
    "update": _update_guest,
    "recreate": _recreate_guest,
    "attach-disks": _attach_disks,
    "create-volume": _create_volume,
    "fetch-image": _fetch_image,
    "write-seed": _write_seed,
    "upload-file": _upload_file,
    "resize-volume": _resize_volume,
    "migrate": _migrate,
    "move": _move,
    "start": _start,
    "stop": _stop,
    "restart": _restart,
    "suspend": _suspend,
    "resume": _resume,
    "delete": _delete_guest,
    "delete-volume": _delete_volume,
    "delete-network": _delete_network,
    "delete-pool": _delete_pool,
}

def execute(plan: Plan, specs: SpecSet, states: Mapping[str, HostState],
            ops_for: Callable[[str], HostOps], opts: ExecOptions,
            progress: Progress | None = None) -> ChangeSet:
    """Carry out ``plan``; one host's failure never stops another host."""
    total = len(plan.actions)
    counter = [0]
    runs = [
        _HostRun(hp, specs.for_host(hp.host), states[hp.host], ops_for(hp.host), opts, ops_for)
        for hp in plan.hosts
        if hp.actions and hp.host in states
    ]
    changes = ChangeSet()
    with ThreadPoolExecutor(max_workers=max(1, len(runs))) as pool:
        for outcomes in pool.map(lambda r: r.run(progress, counter, total), runs):
            changes.outcomes.extend(outcomes)
    touched = {(o.key.host, o.key.kind, o.key.name) for o in changes.outcomes}
    for hp in plan.hosts:
        for entry in hp.drift:
            k = entry.key
            if (k.host, k.kind, k.name) not in touched and entry.status in ("in-sync", "pending-restart"):
                changes.unchanged.append(k)
    return changes

