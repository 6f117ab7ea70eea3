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
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import count, groupby
from pathlib import Path
from typing import Any, TypeVar

from controller.apply.changeset import ChangeSet, Outcome, unchanged_of
from controller.apply.definitions import Definitions
from controller.apply.start_gate import StartGate, gated_starts
from controller.audit import AuditEntry, AuditLog, current_audit, definition_digest, record_digest
from controller.errors import ConflictError, PlanError, VirtsyncError
from controller.fields.keys import match_nics
from controller.fields.xmlutil import parse
from controller.hypervisor import ownership, volumes
from controller.hypervisor.domain_xml import (
    disk_xml_by_name,
    disk_xml_by_target,
    graphics_xml,
    nic_replug_xmls,
    nic_xml,
    nic_xml_at,
    read_guest,
)
from controller.hypervisor.errors import as_virtsync_error
from controller.hypervisor.network_xml import dhcp_host_xml, read_network
from controller.hypervisor.observe import observe_pools
from controller.hypervisor.operations import HostOps
from controller.hypervisor.secrets import observe_secrets, secret_xml
from controller.model.operations import TUNING_OP_TYPES
from controller.model.state import HostState, ObservedGuest, ResourceKey, pool_uuid
from controller.plan import actions as act
from controller.plan.actions import Action, HostPlan, LiveOp, Plan
from controller.plan.context import applied_fields, digest
from controller.report.progress import transfer, transfer_done
from controller.spec.models import Guest, Secret, Volume
from controller.spec.pool_sources import FILE_POOL_TYPES
from controller.spec.secrets import secret_digest
from controller.spec.specset import SpecSet

Progress = Callable[[Outcome, int, int], None]
A = TypeVar("A", bound=Action)

@dataclass
class ExecOptions:
    instance: str = "default"
    commit: str = ""
    concurrency: int = 8
    # one line per action carried out; by default the log audit_to set around Engine.reconcile
    audit: AuditLog | None = field(default_factory=current_audit)
    # Checked before each action on each host it touches: why this process must not change the
    # host now (a serve replica that no longer holds it), or None. The fence of `serve` replicas.
    fence: Callable[[str], str | None] | None = None

class _HostRun(Definitions):
    def __init__(self, hp: HostPlan, specs: SpecSet, state: HostState, ops: HostOps,
                 opts: ExecOptions, ops_for: Callable[[str], HostOps] | None = None) -> None:
        # The XML each action defines comes from Definitions (plan --diff shows the same).
        super().__init__(hp, specs, state, opts.instance, opts.commit)
        self.ops, self.opts = ops, opts
        self.ops_for = ops_for  # other hosts' operations (a migration's source)
        self.failed: set[str] = set()  # "Kind/name" of objects whose action failed
        self.lock = threading.Lock()
        self.gate: StartGate | None = None  # the guests this phase starts together (start_gate.py)

    # ------------------------------------------------------------- helpers

    def blocked(self, action: Action) -> str | None:
        deps = [f"{action.key.kind}/{action.key.name}", *action.needs]
        if action.guest:
            deps.append(f"Guest/{action.guest}")
        if isinstance(action, act.Start | act.Restart):
            g = self.guest(action.key.name)
            deps += [f"Network/{i.network}" for i in g.spec.interfaces]
            deps += [f"StoragePool/{d.pool}" for d in g.spec.disks if d.pool]
            deps += [f"Volume/{d.pool}/{vol}" for d in g.spec.disks if d.pool
                     for vol in [f"{g.metadata.name}-{d.name}"]]
            vols = {v.obj.metadata.name: v.obj for v in self.specs.of_kind(Volume)}
            deps += [dep for d in g.spec.disks if d.volume  # a kind: Volume, and its pool
                     for dep in (f"Volume/{d.volume}", f"StoragePool/{vols[d.volume].spec.pool}" if d.volume in vols
                                 else "")]
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
            gated = gated_starts(chains.values())
            self.gate = StartGate(gated, self.opts.concurrency) if gated else None
            # A gated start waits on a worker of its own; the gate's slots bound the phase's calls.
            workers = len(chains) if gated else self.opts.concurrency
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                for chain in pool.map(self.run_chain, chains.values(), count()):
                    for outcome in chain:
                        outcomes.append(outcome)
                        if progress is not None:
                            with self.lock:
                                counter[0] += 1
                                n = counter[0]
                            progress(outcome, n, total)
        return outcomes

    def run_chain(self, actions: list[Action], k: int = 0) -> list[Outcome]:
        with self.ops.lane(k):  # the k-th object at once goes over the host's k-th connection
            gate = self.gate
            if gate is None:
                return [self.run_one(a) for a in actions]
            if actions[0].key not in gate.keys:
                with gate.slots:
                    return [self.run_one(a) for a in actions]
            try:  # _start takes a slot for its call
                return [self.run_one(a) for a in actions]
            finally:
                gate.arrive(actions[0].key)  # skipped, or failed before its call: none to wait for

    def run_one(self, action: Action) -> Outcome:
        """One action; whatever it raises is its failed outcome (the host's other actions go on)."""
        started = time.monotonic()
        why = self.blocked(action) or self.fenced(action)
        if why:
            return Outcome(action.key, action.op, "skipped", why)  # nothing changed: not audited
        before = self.object_digest(action) if self.opts.audit is not None else None
        try:
            detail = HANDLERS[type(action)](self, action) or ""
        except Exception as raised:
            exc = as_virtsync_error(raised, self.hp.host, action.label)
            with self.lock:
                self.failed.add(f"{action.key.kind}/{action.key.name}")
            outcome = Outcome(action.key, action.op, "failed", str(exc).removeprefix(f"{self.hp.host}: "),
                              time.monotonic() - started, exc.retryable, exc.delay,
                              isinstance(exc, ConflictError))
            self.audit(action, outcome, before)
            return outcome
        outcome = Outcome(action.key, action.op, action.outcome, detail, time.monotonic() - started)
        self.audit(action, outcome, before)
        _die_if_asked(action)
        return outcome

    def fenced(self, action: Action) -> str | None:
        fence = self.opts.fence
        if fence is None:
            return None
        for host in act.touched_hosts(self.hp.host, action):
            why = fence(host)
            if why:
                return f"skipped: {why}"
        return None

    # -------------------------------------------------------------- audit

    def audit(self, action: Action, outcome: Outcome, before: str | None) -> None:
        """The action's line in the audit log (when there is one): what it did to the object."""
        sink = self.opts.audit
        if sink is None:
            return
        ok = outcome.status != "failed"
        sink.write(AuditEntry(self.hp.host, action.key.kind, action.key.name, action.op, ok,
                              None if ok else outcome.detail, outcome.detail if ok else "", before,
                              self.object_digest(action), self.opts.commit, is_repair(self, action)))

    def object_digest(self, action: Action) -> str | None:
        """The object's digest as it is now on the host (see controller/audit.py); None when it
        does not exist or cannot be read (the audit line must never fail the action)."""
        kind, name = action.key.kind, action.key.name
        try:
            if kind == "Guest":
                return definition_digest(self.ops.guest_xml(name))
            if kind == "Network":
                return definition_digest(self.ops.network_xml(name))
            if kind == "StoragePool":
                pool = observe_pools(self.ops.conn.get(), self.hp.host).get(name)
                return None if pool is None else definition_digest(
                    pool.xml, f"\nowner={pool.owner.instance if pool.owner else ''}")
            if kind == "Volume":
                pool_name, _, vol = name.partition("/")
                if not vol:  # a kind: Volume is keyed by its own name; its pool is on the action
                    pool_name, vol = getattr(action, "pool", ""), name
                return record_digest(self.ops.volume_info(pool_name, vol))
            if kind == "Secret":
                uuid = getattr(action, "uuid", None)
                found = observe_secrets(self.ops.conn.get(), self.hp.host) or {}
                sec = next((s for s in found.values() if s.uuid == uuid), None)
                return None if sec is None else record_digest(
                    [sec.uuid, sec.usage, sec.usage_id, sec.owner_instance, sec.owner_name, sec.digest])
        except Exception:  # a digest that cannot be read is null, never a failure
            return None
        return None

_NEVER_REPAIRS = (act.DefinePool, act.DefineNetwork, act.Adopt, act.Migrate, act.Move, act.DeleteGuest,
                  act.DeleteVolume, act.DeleteNetwork, act.DeletePool, act.DefineSecret, act.DeleteSecret,
                  act.DefineVolume, act.CloneVolume, act.MarkVolume)


def is_repair(run: _HostRun, action: Action) -> bool:
    """Whether an action repairs drift: it changes back an object this instance already owns whose
    spec did not change since virtsync last wrote it — the digest of the spec's applied fields
    equals the one in the object's ownership record. A create, an adoption, a move, a deletion and
    a Secret's value are never repairs (a Secret's value is never read back: a new one comes from
    the spec). A volume or seed action takes the answer of the guest it serves; a pool, whose
    ownership marker records no digest, is repaired only when it is just started again."""
    if isinstance(action, _NEVER_REPAIRS):
        return False
    kind, name, state = action.key.kind, action.key.name, run.state
    try:
        if kind == "StoragePool":
            pool = state.pools.get(name)
            only_start = isinstance(action, act.UpdatePool) and action.start and not (
                action.redefine or action.adopt or action.autostart is not None)
            # a stopped pool shows no marker: its UUID says whose it is
            return bool(only_start and pool is not None and (
                pool.owner.instance == run.opts.instance if pool.owner is not None
                else pool.uuid == pool_uuid(run.opts.instance, name)))
        if kind == "Network":
            net = state.networks.get(name)
            return bool(net is not None and net.owner is not None and net.owner.instance == run.opts.instance
                        and net.owner.digest == digest(applied_fields(run.network(name).spec)))
        guest_name = action.serves
        if guest_name is None:
            return False
        obs = state.guests.get(guest_name)
        return bool(obs is not None and obs.owner is not None and obs.owner.instance == run.opts.instance
                    and obs.owner.digest == digest(applied_fields(run.guest(guest_name).spec)))
    except PlanError:  # no spec for it on this host
        return False


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

def _define_pool(run: _HostRun, a: act.DefinePool) -> str:
    p = run.pool(a.key.name)
    built = run.ops.define_pool(p.metadata.name, p.spec, run.opts.instance)
    where = f" at {p.spec.path}" if p.spec.path else ""
    return f"{p.spec.type} pool{where}" + (f", {built}" if built else "")

def _update_pool(run: _HostRun, a: act.UpdatePool) -> str:
    done = []
    if a.redefine:
        p = run.pool(a.key.name)
        run.ops.redefine_pool(a.key.name, p.spec)
        done.append("definition written")
    if a.start:  # first: the marker volume of an adoption needs a started pool
        run.ops.start_pool(a.key.name)
        done.append("started")
        # ours by its UUID: a run killed before it wrote the marker left none (pools whose volumes
        # are not files take no marker: their UUID is the record)
        if not a.adopt and run.pool(a.key.name).spec.type in FILE_POOL_TYPES:
            run.ops.mark_pool(a.key.name, run.opts.instance)
    if a.adopt:
        run.ops.mark_pool(a.key.name, run.opts.instance)
        done.append("adopted")
    if a.autostart is not None:
        run.ops.set_pool_autostart(a.key.name, a.autostart)
        done.append(f"autostart {a.autostart}")
    return ", ".join(done)

def _define_network(run: _HostRun, a: act.DefineNetwork) -> str:
    net = run.network(a.key.name)
    if run.ops.network_xml(a.key.name) is not None:
        raise _conflict(run, f"network {a.key.name} appeared since it was observed")
    run.ops.define_network(run.new_network(a), net.spec.autostart)
    return f"{net.spec.mode} network started"

def _update_network(run: _HostRun, a: act.UpdateNetwork) -> str:
    name = a.key.name
    _check_network(run, name)
    done = []
    if a.dhcp_range is not None:
        r = a.dhcp_range
        for cmd, start, end in (("delete", r.old_start, r.old_end), ("add", r.start, r.end)):
            target = "both" if run.ops.network_active(name) else "config"
            run.ops.network_update(name, cmd, "range", f"<range start='{start}' end='{end}'/>", target)
        done.append(f"DHCP range {r.start}-{r.end}")
    for lease in a.leases:
        run.ops.network_update(name, lease.command, "host", dhcp_host_xml(lease.mac, lease.ip, lease.name),
                               lease.target)
        done.append(f"{lease.command} lease {lease.mac} ({lease.target})")
    for edit in a.edits:
        # a network stopped since the plan has only its definition left to edit
        target = edit.target
        if target != "config" and not run.ops.network_active(name):
            if target == "live":
                continue
            target = "config"
        run.ops.network_update(name, edit.command, edit.section, edit.xml, target, edit.parent)
        done.append(f"{edit.command} {edit.section} ({target})")
    if a.autostart is not None:
        run.ops.set_network_autostart(name, a.autostart)
        done.append(f"autostart {a.autostart}")
    return "; ".join(done)

def _check_network(run: _HostRun, name: str) -> None:
    obs = run.state.networks.get(name)
    now = run.ops.network_xml(name)
    if obs is not None and now != obs.xml:
        raise _conflict(run, f"network {name} changed since it was observed")

def _conflict(run: _HostRun, message: str) -> VirtsyncError:
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
    config = read_network(xml)[2] if xml else None
    # A host bridge (Linux or Open vSwitch) and a macvtap or SR-IOV pool are not libvirt's to take
    # down: the guests' taps stay where they are (and a Linux-bridge re-plug fails on OVS).
    if config is None or not config.bridge or config.mode in ("bridge", "macvtap", "hostdev"):
        return []
    bridge = config.bridge
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


def _start_network(run: _HostRun, a: act.StartNetwork) -> str:
    run.ops.start_network(a.key.name)
    replugged = _replug(run, a.key.name)
    return "started" + (f"; re-plugged {', '.join(replugged)}" if replugged else "")

def _recreate_network(run: _HostRun, a: act.RecreateNetwork) -> str:
    _check_network(run, a.key.name)
    net = run.network(a.key.name)
    obs = run.state.networks[a.key.name]
    xml = run.rewritten_network(a, base=obs.xml or run.ops.network_xml(a.key.name))
    # Defined over the old one first: a definition libvirt refuses leaves the network as it was.
    run.ops.define_network(xml, net.spec.autostart, start=False)
    run.ops.delete_network(a.key.name)
    run.ops.define_network(xml, net.spec.autostart)
    replugged = _replug(run, a.key.name)
    return "recreated" + (f"; re-plugged {', '.join(replugged)}" if replugged else "")

def _define_guest(run: _HostRun, a: act.DefineGuest) -> str:
    guest = run.guest(a.key.name)
    # A transient (running, undefined) guest is defined again under its own UUID.
    obs = run.state.guests.get(a.key.name)
    run.ops.check_unchanged(a.key.name, obs.xml if obs is not None else None)
    run.ops.define_guest(run.new_guest(a))
    if guest.spec.autostart:
        run.ops.set_guest_autostart(a.key.name, True)
    return f"defined ({run.state.caps.virt_type})"

def _rewritten(run: _HostRun, a: act.UpdateGuest | act.RecreateGuest) -> tuple[Guest, ObservedGuest, str]:
    """The guest's definition as observed (refusing if it changed since), with the action's fields
    written in place."""
    guest = run.guest(a.key.name)
    obs = run.state.guests[a.key.name]
    run.ops.check_unchanged(a.key.name, obs.xml)
    return guest, obs, run.rewritten_guest(a)


def _update_guest(run: _HostRun, a: act.UpdateGuest) -> str:
    name = a.key.name
    guest, _, new_xml = _rewritten(run, a)
    done = []
    if a.snapshot_first:
        taken = _snapshot_before_restart(run, name).removeprefix("; ")
        if taken:
            done.append(taken)
    run.ops.define_guest(new_xml)
    done.append("definition updated")
    for op in a.live:
        done.append(_live_op(run, name, guest, new_xml, op))
    return "; ".join(done)


def _live_op(run: _HostRun, name: str, guest: Guest, new_xml: str, op: LiveOp) -> str:
    """One typed call after the definition is written. A device that is not where the plan saw
    it is a conflict (another writer changed the guest), never a silent success."""
    if isinstance(op, act.SetMemory):
        run.ops.set_memory_live(name, op.bytes)
        return "memory set live"
    if isinstance(op, act.SetVcpus):
        run.ops.set_vcpus_live(name, op.count)
        return f"{op.count} vCPUs live"
    if isinstance(op, act.SetAutostart):
        run.ops.set_guest_autostart(name, op.on)
        return f"autostart {op.on}"
    if isinstance(op, act.DetachDisk):
        device = disk_xml_by_target(run.ops.live_xml(name), op.target)
        if device is None:
            raise _conflict(run, f"disk {op.target} of guest {name} is no longer attached (changed since observed)")
        run.ops.detach_live(name, device)
        return f"detached disk {op.target}"
    if isinstance(op, act.AttachNic):
        _, _, cfg, _ = read_guest(new_xml)
        if op.index is not None:
            pairs, _ = match_nics(guest.spec.interfaces, cfg.interfaces)
            idx = pairs[op.index][1] if op.index < len(pairs) else None
        else:
            idx = next((i for i, n in enumerate(cfg.interfaces) if n.mac == op.mac), None)
        device = nic_xml_at(new_xml, idx) if idx is not None else None
        if device is None or idx is None:
            raise _conflict(run, f"the NIC to attach to guest {name} is not in its new definition")
        run.ops.attach_live(name, device)
        return f"attached NIC {cfg.interfaces[idx].mac}"
    if isinstance(op, act.DetachNic):
        device = nic_xml(run.ops.live_xml(name), op.mac)
        if device is None:
            raise _conflict(run, f"NIC {op.mac} of guest {name} is no longer attached (changed since observed)")
        run.ops.detach_live(name, device)
        return f"detached NIC {op.mac}"
    if isinstance(op, act.SetBlockIoTune):
        run.ops.set_block_iotune(name, op.target, op.params())
        return f"I/O limits of {op.target} set live"
    if isinstance(op, act.SetInterfaceBandwidth):
        run.ops.set_interface_bandwidth(name, op.mac, op.params())
        return f"bandwidth of NIC {op.mac} set live"
    if isinstance(op, act.SetLinkState):
        if not run.ops.set_link_state(name, op.mac, op.state):
            raise _conflict(run, f"NIC {op.mac} of guest {name} is no longer attached (changed since observed)")
        return f"link of NIC {op.mac} {op.state} live"
    if isinstance(op, act.UpdateGraphics):
        device = graphics_xml(new_xml)
        if device is None:
            raise PlanError(f"guest {name}'s new definition has no graphics console to update")
        run.ops.update_live(name, device)
        return "graphics console updated live"
    if isinstance(op, TUNING_OP_TYPES):
        return run.ops.tune_live(name, op)
    raise PlanError(f"unknown live operation {op.op}")


def _attach_disks(run: _HostRun, a: act.AttachDisks) -> str:
    name = a.key.name
    xml = run.ops.guest_xml(name) or ""
    done = []
    for disk_name in a.disks:
        device = disk_xml_by_name(xml, name, disk_name)
        if device is None:
            raise _conflict(run, f"disk {disk_name} is not in the definition of guest {name} (changed since observed)")
        run.ops.attach_live(name, device)
        done.append(disk_name)
    return "attached " + ", ".join(done)

def _recreate_guest(run: _HostRun, a: act.RecreateGuest) -> str:
    name = a.key.name
    guest, obs, new_xml = _rewritten(run, a)
    before = _snapshot_before_restart(run, name)
    snapshots = run.ops.snapshot_xmls(name)
    done = []
    if obs.state != "stopped":
        done.append(run.ops.stop(name, guest.spec.shutdown_timeout))
    run.ops.undefine_guest(name, keep_nvram=True)
    try:
        run.ops.define_guest(new_xml)
    except Exception:
        # The new definition was refused: the old one comes back (same UUID, NVRAM and TPM state
        # kept), so a failed recreate never loses the guest.
        run.ops.define_guest(obs.xml)
        if snapshots:
            run.ops.redefine_snapshots(name, snapshots)
        if obs.state != "stopped":
            run.ops.start(name, paused=obs.state == "paused")
        raise
    if snapshots:
        run.ops.redefine_snapshots(name, snapshots)
        done.append(f"{len(snapshots)} snapshot(s) re-registered")
    if a.restart:
        run.ops.start(name, paused=guest.spec.state == "paused")
        done.append("started")
    return "recreated under the same UUID; " + "; ".join(done) + before

def _create_volume(run: _HostRun, a: act.CreateVolume) -> str:
    # A pool observed stopped listed no volumes: started by this run, it may show the volume
    if a.pool in run.state.pools and not run.state.pools[a.pool].active \
            and run.ops.volume_info(a.pool, a.volume) is not None:
        raise _conflict(run, f"volume {a.pool}/{a.volume} is there now that its pool runs")
    capacity = a.capacity
    if a.source is None:
        return run.ops.create_volume(a.pool, a.volume, capacity, a.format)
    kind, ref = a.source.kind, a.source.ref
    if kind == "path":
        path, fmt, base_cap = ref, run.ops.file_format(ref), None
    else:
        info = run.ops.volume_info(a.pool, ref)
        if info is None:
            raise PlanError(f"image {ref!r} not found in pool {a.pool}")
        path, fmt, base_cap = info
    if a.clone == "full" and kind == "volume":
        made = run.ops.clone_volume(a.pool, ref, a.volume, a.format)
        if capacity and base_cap and capacity > base_cap:
            run.ops.resize_volume(a.pool, a.volume, capacity)
        return f"{made} (full copy of {ref})"
    if a.clone == "full":
        raise PlanError(f"a full clone needs an image volume in the pool, not the file {ref}")
    made = run.ops.create_volume(a.pool, a.volume, max(capacity, base_cap or 0), "qcow2", backing=(path, fmt))
    return f"{made} (linked to {path})"


def _fetch_image(run: _HostRun, a: act.FetchImage) -> str:
    from controller.images.download import fetch_image

    label = f"download {a.url.rsplit('/', 1)[-1] or a.url}"
    local = fetch_image(a.url, a.sha256, image_cache_dir(), progress=_reporter(label))
    transfer_done(label, local.stat().st_size)  # a size the server did not announce: the line ends here
    run.ops.upload_volume(a.pool, a.volume, local, progress=_reporter(f"upload {a.pool}/{a.volume}"))
    return f"downloaded, verified (sha256) and uploaded as {a.volume}"


def _reporter(label: str) -> Callable[[int, int | None], None]:
    """A transfer's progress callback: to the command's display (report/progress.py), if any."""
    return lambda done, total: transfer(label, done, total)


def image_cache_dir() -> Path:
    base = os.environ.get("VIRTSYNC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "virtsync")
    return Path(base) / "images"


def _upload_file(run: _HostRun, a: act.UploadFile) -> str:
    local = Path(a.path)
    if not local.is_file():
        raise PlanError(f"{local} (boot file of guest {a.guest}) does not exist here")
    run.ops.upload_volume(a.pool, a.volume, local, progress=_reporter(f"upload {a.pool}/{a.volume}"))
    return f"uploaded {local} ({local.stat().st_size} bytes)"


def _write_seed(run: _HostRun, a: act.WriteSeed) -> str:
    from controller.images.seed import build_seed_iso

    guest = run.guest(a.guest)
    ci = guest.spec.cloud_init
    assert ci is not None
    meta = ci.meta_data if ci.meta_data is not None else (
        f"instance-id: {guest.metadata.name}\nlocal-hostname: {guest.metadata.name}\n")
    data = build_seed_iso(ci.user_data or "#cloud-config\n", meta, ci.network_config)
    run.ops.write_volume(a.pool, a.volume, data)
    return f"seed ISO written ({len(data)} bytes)"

def _resize_volume(run: _HostRun, a: act.ResizeVolume) -> str:
    obs = run.state.guests.get(a.guest)
    if obs is not None and obs.live is not None and run.state.caps.block_resize:
        target = next((d.target for d in obs.live.disks if d.name == a.disk), None)
        if target:
            run.ops.block_resize(a.guest, target, a.capacity)
            return f"grown live ({target})"
    run.ops.resize_volume(a.pool, a.volume, a.capacity)
    return "grown"


def _migrate(run: _HostRun, a: act.Migrate) -> str:
    source = a.source
    if run.ops_for is None:
        raise PlanError("a migration needs the source host's connection")
    host = next(h for h in run.specs.hosts if h.metadata.name == run.hp.host)
    guest = run.guest(a.key.name)
    dest_uri = host.spec.migration_uri or host.spec.uri
    shared = {p.metadata.name for p in run.specs.pools if p.spec.shared}
    # disks on shared storage stay where they are; any other disk is copied live
    copy = any(d.device == "disk" and d.pool not in shared for d in guest.spec.disks)
    started = time.monotonic()
    run.ops_for(source).migrate(a.key.name, dest_uri, host.spec.migration_address, copy,
                                progress=_reporter(f"migrate {a.key.name} {source} → {run.hp.host}"))
    return f"live-migrated from {source} in {time.monotonic() - started:.1f}s" + (" (disks copied)" if copy else "")


def _move(run: _HostRun, a: act.Move) -> str:
    """Cold move: stop on the source, copy the guest's volumes, define here (same UUID), start."""
    source = a.source
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
            label = f"copy {pool}/{vol_name} {source} → {run.hp.host}"
            done_bytes = src.copy_volume_to(pool, vol_name, run.ops, progress=_reporter(label))
            transfer_done(label, done_bytes)
            copied += done_bytes
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


def _start(run: _HostRun, a: act.Start) -> str:
    gate = run.gate
    if gate is None or a.key not in gate.keys:
        run.ops.start(a.key.name, paused=a.paused)
        return "started paused" if a.paused else "started"
    with gate.slots:
        try:
            run.ops.start(a.key.name, paused=True)
        finally:
            gate.arrive(a.key)
    waited = gate.wait()
    try:
        run.ops.resume(a.key.name)
    except VirtsyncError as exc:
        raise VirtsyncError(f"started paused, but the resume failed (it stays paused): {exc}",
                            retryable=exc.retryable, delay=exc.delay) from exc
    return f"started (paused {waited:.1f}s, until all {len(gate.keys)} starts on this host were made)"

def _stop(run: _HostRun, a: act.Stop) -> str:
    return run.ops.stop(a.key.name, a.timeout)

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


def _restart(run: _HostRun, a: act.Restart) -> str:
    before = "" if a.snapshot_taken else _snapshot_before_restart(run, a.key.name)
    how = run.ops.stop(a.key.name, a.timeout)
    paused = a.paused  # state: paused comes back paused
    run.ops.start(a.key.name, paused=paused)
    return f"{how}, started" + (" paused" if paused else "") + before

def _suspend(run: _HostRun, a: act.Suspend) -> str:
    run.ops.suspend(a.key.name)
    return "paused"

def _resume(run: _HostRun, a: act.Resume) -> str:
    run.ops.resume(a.key.name)
    return "resumed"

def _recover(run: _HostRun, a: act.Recover) -> str:
    """crashPolicy restart: a crashed guest is destroyed and started again (a resume cannot help).
    One QEMU paused for a reason libvirt does not know is resumed if QEMU lets it (a stop sent past
    libvirt); after an internal error QEMU refuses ("Resetting the Virtual Machine is required")."""
    if a.resume_first:
        try:
            run.ops.resume(a.key.name)
            return f"{a.fault}: resumed"
        except VirtsyncError as exc:
            refused = str(exc)
        run.ops.destroy(a.key.name)
        run.ops.start(a.key.name, paused=a.paused)
        return f"{a.fault}: the resume was refused ({refused}): destroyed and started"
    run.ops.destroy(a.key.name)
    run.ops.start(a.key.name, paused=a.paused)
    return f"{a.fault or 'crashed'}: destroyed and started" + (" paused" if a.paused else "")

def _delete_guest(run: _HostRun, a: act.DeleteGuest) -> str:
    name = a.key.name
    obs = run.state.guests[name]
    run.ops.check_unchanged(name, obs.xml)
    if obs.state != "stopped":
        run.ops.destroy(name)
    run.ops.undefine_guest(name, keep_nvram=bool(obs.owner and obs.owner.volumes and
                                                  len(a.volumes) < len(obs.owner.volumes)))
    kept = [v for v in (obs.owner.volumes if obs.owner else ()) if v not in a.volumes]
    return "undefined" + (f"; volumes kept: {', '.join(kept)}" if kept else "")

def _delete_volume(run: _HostRun, a: act.DeleteVolume) -> str:
    if a.marker:  # a kind: Volume: its ownership marker goes with it
        volumes.delete_owned_volume(run.ops, a.pool, a.volume, a.marker)
        return "deleted (and its ownership marker)"
    run.ops.delete_volume(a.pool, a.volume)
    return "deleted"

def _delete_network(run: _HostRun, a: act.DeleteNetwork) -> str:
    _check_network(run, a.key.name)
    run.ops.delete_network(a.key.name)
    return "deleted"

def _delete_pool(run: _HostRun, a: act.DeletePool) -> str:
    run.ops.delete_pool(a.key.name, run.opts.instance)
    return "deleted"

def _adopt(run: _HostRun, a: act.Adopt) -> str:
    """Ownership only: the object matched its spec when planned (and still must)."""
    name = a.key.name
    if a.key.kind == "StoragePool":
        run.ops.mark_pool(name, run.opts.instance)
        return "adopted (ownership marker written)"
    if a.key.kind == "Network":
        _check_network(run, name)
        obs = run.state.networks[name]
        run.ops.define_network(run.rewritten_network(a), bool(obs.autostart), start=False)
        return "adopted (ownership recorded in its definition)"
    gobs = run.state.guests[name]
    run.ops.check_unchanged(name, gobs.xml)
    run.ops.define_guest(run.adopted_guest(a))
    return "adopted (ownership recorded in its definition)"


# The executor dispatches on the action's type; a test checks every type has a handler.
def _define_secret(run: _HostRun, a: act.DefineSecret) -> str:
    secret = next((i.obj for i in run.specs.of_kind(Secret) if i.obj.metadata.name == a.key.name), None)
    if secret is None or secret.secret_value is None:
        raise PlanError(f"Secret {a.key.name} is not in the specs (or has no value)")
    if secret_digest(secret.secret_value) != a.digest:
        raise PlanError(f"Secret {a.key.name}'s value changed since the plan was made: plan again")
    run.ops.define_secret(secret_xml(a.uuid, a.usage, a.usage_id, run.opts.instance, a.key.name, a.digest),
                          secret.secret_value)
    return f"{a.usage} secret {a.uuid} " + ("given its new value" if a.exists else "defined")


def _delete_secret(run: _HostRun, a: act.DeleteSecret) -> str:
    run.ops.delete_secret(a.uuid)
    return f"secret {a.uuid} deleted"


def _define_volume(run: _HostRun, a: act.DefineVolume) -> str:
    made = volumes.define_volume(run.ops, a.pool, a.volume, a.capacity, a.format, a.secret_uuid, a.marker)
    return made + (" (LUKS)" if a.secret_uuid else "")


def _clone_volume(run: _HostRun, a: act.CloneVolume) -> str:
    if a.from_host == run.hp.host:
        made = volumes.clone_volume(run.ops, a.pool, a.volume, a.format, a.from_pool, a.from_volume, a.marker)
        how = "storageVolCreateXMLFrom"
    else:
        if run.ops_for is None:
            raise PlanError(f"a copy from {a.from_host} needs that host's connection")
        label = f"copy {a.from_host}:{a.from_pool}/{a.from_volume}"
        copied = volumes.stream_volume(run.ops_for(a.from_host), a.from_pool, a.from_volume, run.ops, a.pool,
                                       a.volume, a.format, a.marker, progress=_reporter(label))
        made, how = f"{a.pool}/{a.volume}", f"streamed {copied} bytes from {a.from_host}"
    info = run.ops.volume_info(a.pool, a.volume)
    if a.capacity and info is not None and a.capacity > info[2]:
        run.ops.resize_volume(a.pool, a.volume, a.capacity)
        how += f", grown to {a.capacity} bytes"
    return f"{made} (full copy of {a.from_pool}/{a.from_volume}: {how})"


def _mark_volume(run: _HostRun, a: act.MarkVolume) -> str:
    volumes.mark_volume(run.ops, a.pool, a.volume, a.marker, a.old_marker)
    return "ownership marker written" if a.marker else "let go: ownership marker removed, volume kept"


HANDLERS: dict[type[Action], Callable[[_HostRun, Any], str]] = {
    act.DefinePool: _define_pool,
    act.UpdatePool: _update_pool,
    act.DefineNetwork: _define_network,
    act.UpdateNetwork: _update_network,
    act.StartNetwork: _start_network,
    act.RecreateNetwork: _recreate_network,
    act.DefineGuest: _define_guest,
    act.UpdateGuest: _update_guest,
    act.RecreateGuest: _recreate_guest,
    act.AttachDisks: _attach_disks,
    act.CreateVolume: _create_volume,
    act.FetchImage: _fetch_image,
    act.WriteSeed: _write_seed,
    act.UploadFile: _upload_file,
    act.ResizeVolume: _resize_volume,
    act.Migrate: _migrate,
    act.Move: _move,
    act.Start: _start,
    act.Stop: _stop,
    act.Restart: _restart,
    act.Suspend: _suspend,
    act.Resume: _resume,
    act.Recover: _recover,
    act.DeleteGuest: _delete_guest,
    act.DeleteVolume: _delete_volume,
    act.DeleteNetwork: _delete_network,
    act.DeletePool: _delete_pool,
    act.Adopt: _adopt,
    act.DefineSecret: _define_secret,
    act.DeleteSecret: _delete_secret,
    act.DefineVolume: _define_volume,
    act.CloneVolume: _clone_volume,
    act.MarkVolume: _mark_volume,
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
    changes.unchanged.extend(unchanged_of(plan, {(o.key.host, o.key.kind, o.key.name) for o in changes.outcomes}))
    return changes

