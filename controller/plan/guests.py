"""Diff of one guest: spec × persistent definition × running state → actions.

Only declared fields are compared (plus ``state``, which is always enforced);
lists are keyed sets; ``ignore`` pointers are skipped. A change that is
defined but not yet running becomes a Pending (status), never an action.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from croniter import croniter

from controller.model.naming import volume_name
from controller.model.state import GuestConfig, HostState, ObservedGuest, ResourceKey
from controller.plan.actions import Action, FieldChange, Impact, Pending, Phase, Problem
from controller.plan.context import PlanOptions, applied_fields, declared, digest, ownership_problem
from controller.plan.disks import SEED_DISK, boot_files, boot_volume, effective_disks, image_volume, seed_volume
from controller.plan.keys import match_nics
from controller.plan.policy import guest_impact
from controller.spec.models import Disk, Guest, GuestSpec, RestartWindow
from controller.spec.units import format_size

SUSPEND_ANNOTATION = "virtsync/suspend"


@dataclass
class GuestPlan:
    actions: list[Action] = field(default_factory=list)
    pending: list[Pending] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    drift: list[FieldChange] = field(default_factory=list)  # everything that differs


def machine_matches(desired: str, observed: str | None) -> bool:
    """libvirt expands aliases: q35 → pc-q35-7.2, pc → pc-i440fx-7.2."""
    if observed is None or observed == desired:
        return observed == desired
    base = {"pc": "i440fx"}.get(desired, desired)
    return observed.startswith(f"pc-{base}-")


def _graphics(spec: GuestSpec) -> str | None:
    g = spec.graphics
    return None if g is None or g.type == "none" else f"{g.type}@{g.listen}"


def _xen_mode(config: GuestConfig) -> str:
    if config.os_type in ("linux", "xen"):
        return "pv"
    return "pvh" if config.os_type == "xenpvh" else "hvm"


class _Ctx:
    def __init__(self, guest: Guest, obs: ObservedGuest | None, host: HostState):
        self.guest = guest
        self.spec = guest.spec
        self.obs = obs
        self.host = host
        self.declared = declared(guest.spec)
        self.ignore = tuple(guest.spec.ignore)

    def ignored(self, pointer: str) -> bool:
        return any(pointer == p or pointer.startswith(p + "/") for p in self.ignore)


def plan_guest(guest: Guest, host: HostState, opts: PlanOptions) -> GuestPlan:
    name = guest.metadata.name
    key = ResourceKey(host.host, "Guest", name)
    obs = host.guests.get(name)
    out = GuestPlan()
    ctx = _Ctx(guest, obs, host)
    spec = guest.spec

    refusal = ownership_problem(key, "guest", obs is not None, obs.owner if obs else None, spec.adopt, opts.instance)
    if refusal:
        out.problems.append(Problem(key, refusal))
        return out
    if spec.xen is not None and host.caps.virt_type not in ("xen", "test"):
        out.problems.append(Problem(key, f"host {host.host} is not a Xen host ({host.caps.driver})"))
        return out
    if spec.xen is not None and host.caps.virt_type == "xen" and host.caps.guest_types:
        needed = {"pv": "xen", "hvm": "hvm", "pvh": "xenpvh"}[spec.xen.mode]
        if needed not in host.caps.guest_types:
            out.problems.append(Problem(key, f"host {host.host} cannot run Xen {spec.xen.mode.upper()} guests: "
                                        f"its libvirt capabilities list no '{needed}' guests (they list "
                                        f"{', '.join(host.caps.guest_types)}; HVM needs VMX/SVM)"))
            return out

    volumes = _volume_actions(key, guest, host, out)
    suspended = guest.metadata.annotations.get(SUSPEND_ANNOTATION) == "true"
    report_only = spec.reconcile == "report" or suspended

    if obs is None or obs.persistent is None:
        # Still running but undefined out of band (transient): the checks above made sure it
        # is ours (or adopted), so define it again under its UUID; it keeps running.
        transient = obs is not None
        change = FieldChange("/spec", desired="defined", defined=None,
                             live=obs.state if obs is not None else None, impact=Impact.CREATE)
        out.drift.append(change)
        power = _power_change(ctx, obs) if obs is not None else None
        if power is not None:
            out.drift.append(power)
        if not report_only:
            out.actions.append(Action(key, "define", Impact.CREATE, Phase.GUESTS,
                                      "guest is running but not defined (transient)" if transient
                                      else "guest does not exist", (change,),
                                      {"commit": opts.commit,
                                       # its images must be fetched and verified first
                                       "needs": [f"Volume/{a.key.name}" for a in volumes
                                                 if a.op in ("fetch-image", "upload-file")]}))
            out.actions.extend(volumes)
            if power is not None and obs is not None:
                out.actions.append(_power_action(key, spec, obs, power))
            elif obs is None and spec.state in ("running", "paused"):
                out.actions.append(Action(key, "start", Impact.LIVE, Phase.POWER,
                                          f"state: {spec.state}",
                                          args={"paused": spec.state == "paused"}))
        return out

    defined_changes, live_ops, pending = _config_changes(ctx, obs)
    power = _power_change(ctx, obs)
    out.drift.extend(defined_changes)
    # Running guest differs from its (matching) definition, e.g. vCPUs set live: drift too.
    out.drift.extend(c for c, _ in live_ops if c not in defined_changes)
    out.drift.extend(c for c, _ in pending)
    if power is not None:
        out.drift.append(power)
    if report_only:
        return out
    out.actions.extend(volumes)

    running = obs.state in ("running", "paused")
    recreate = [c for c in defined_changes if c.impact == Impact.RECREATE]
    next_boot = [c for c in defined_changes if c.impact == Impact.NEXT_BOOT]
    restart_needed = running and (bool(next_boot) or bool(recreate) or
                                  any(reason for _, reason in pending))
    may_restart, why_not = _may_restart(spec, opts.now)
    stays_down = spec.state == "stopped"

    if recreate and running and not may_restart and not stays_down:
        out.pending.append(Pending(key, f"needs recreate ({why_not})", tuple(recreate)))
        defined_changes = [c for c in defined_changes if c.impact != Impact.RECREATE]
        recreate = []
    owner_args = {"commit": opts.commit}
    # New disks reach a running guest after their volumes exist (Phase.POWER).
    attach = [op["disk"] for _, op in live_ops if op["op"] == "attach-disk"]
    live_ops = [(c, op) for c, op in live_ops if op["op"] != "attach-disk"]
    if recreate:
        out.actions.append(Action(key, "recreate", Impact.RECREATE, Phase.GUESTS,
                                  "fields that need a new definition changed",
                                  tuple(defined_changes),
                                  {**owner_args, "restart": running and not stays_down,
                                   "fields": sorted(_fields_of(defined_changes))}))
    elif defined_changes or live_ops:
        # An adopted guest that already matches needs no write: ownership is recorded
        # with its first change (until then it is never pruned, which is the safe side).
        impact = Impact.NEXT_BOOT if next_boot else Impact.LIVE
        reason = "spec and definition differ" + (" (adopting it)" if obs.owner is None else "")
        if not defined_changes and live_ops:
            reason = "running guest differs from its definition"
        out.actions.append(Action(key, "update", impact, Phase.GUESTS, reason,
                                  tuple(defined_changes) + tuple(
                                      c for c, _ in live_ops if c not in defined_changes),
                                  {**owner_args, "fields": sorted(_fields_of(defined_changes)),
                                   "live": [op for _, op in live_ops] if running else []}))
    if attach and running and not recreate:
        out.actions.append(Action(key, "attach-disks", Impact.LIVE, Phase.POWER,
                                  "hot-plug new disks", (), {"disks": attach}))
    pend_changes = tuple(next_boot) + tuple(c for c, _ in pending)
    # A restart (or a recreate of a running guest) starts it in the wanted state itself; a
    # resume or suspend after it would act on a guest that is no longer in the observed state.
    restarts = bool(recreate) and running and not stays_down
    if restart_needed and not recreate and not stays_down:
        if may_restart:
            restarts = True
            out.actions.append(Action(key, "restart", Impact.NEXT_BOOT, Phase.POWER,
                                      "apply changes that need a restart",
                                      pend_changes + ((power,) if power is not None else ()),
                                      {"timeout": spec.shutdown_timeout,
                                       "paused": spec.state == "paused"}))
        elif pend_changes:
            out.pending.append(Pending(key, f"pending restart ({why_not})", pend_changes))
    if power is not None and not restarts:
        out.actions.append(_power_action(key, spec, obs, power))
    # beforeRestart snapshots must show the old definition: the update takes it, before it writes.
    update = next((a for a in out.actions if a.op == "update"), None)
    if update is not None and any(a.op == "restart" for a in out.actions):
        update.args["snapshot_first"] = True
        for a in out.actions:
            if a.op == "restart":
                a.args["snapshot_taken"] = True
    return out


def _fields_of(changes: list[FieldChange]) -> set[str]:
    return {c.path.split("/")[2] for c in changes}


def _may_restart(spec: GuestSpec, now: datetime) -> tuple[bool, str]:
    if spec.restart_policy == "onChange":
        return True, ""
    if spec.restart_policy == "window" and spec.window is not None:
        inside, opens = in_window(spec.window, now)
        if inside:
            return True, ""
        return False, f"restart window opens {opens.isoformat()}"
    return False, "restartPolicy: never"


def in_window(window: RestartWindow, now: datetime) -> tuple[bool, datetime]:
    """Whether ``now`` is inside the window, and when the next one opens."""
    local = now.astimezone(ZoneInfo(window.timezone))
    last_open = croniter(window.schedule, local + timedelta(seconds=1)).get_prev(datetime)
    if local < last_open + timedelta(seconds=window.duration):
        return True, last_open
    return False, croniter(window.schedule, local).get_next(datetime)


def _config_changes(
    ctx: _Ctx, obs: ObservedGuest
) -> tuple[list[FieldChange], list[tuple[FieldChange, dict[str, Any]]], list[tuple[FieldChange, str]]]:
    """(definition changes, live repairs with their operation, pending (defined, not running))."""
    spec, d = ctx.spec, ctx.declared
    persistent = obs.persistent
    assert persistent is not None
    live = obs.live if obs.state in ("running", "paused") else None
    hotplug = ctx.host.caps.hotplug
    changes: list[FieldChange] = []
    live_ops: list[tuple[FieldChange, dict[str, Any]]] = []
    pending: list[tuple[FieldChange, str]] = []

    def check(fld: str, want: Any, have: Any, live_have: Any, impact: Impact,
              show: Any = None, same: Any = None) -> None:
        pointer = f"/spec/{fld}"
        if fld not in d or ctx.ignored(pointer):
            return
        eq = same or (lambda a, b: a == b)
        fmt = show or (lambda v: v)
        if not eq(want, have):
            changes.append(FieldChange(pointer, fmt(want), fmt(have),
                                       fmt(live_have) if live else None, impact))
        elif live is not None and impact != Impact.LIVE and not eq(want, live_have):
            pending.append((FieldChange(pointer, fmt(want), fmt(have), fmt(live_have), impact),
                            "definition differs from the running guest"))

    ceiling = persistent.max_memory
    if "maxMemory" in d and spec.max_memory is not None:
        ceiling = spec.max_memory
    if live is not None:  # a running guest balloons only up to its running maximum
        ceiling = min(ceiling, live.max_memory)
    mem_impact = Impact.LIVE if spec.memory <= ceiling else Impact.NEXT_BOOT
    if "memory" in d and not ctx.ignored("/spec/memory") and spec.memory != persistent.memory:
        change = FieldChange("/spec/memory", format_size(spec.memory), format_size(persistent.memory),
                             format_size(live.memory) if live else None, mem_impact)
        changes.append(change)
        if live is not None and mem_impact == Impact.LIVE:
            live_ops.append((change, {"op": "setmem", "bytes": spec.memory}))
    if "maxMemory" in d and spec.max_memory is not None:
        check("maxMemory", spec.max_memory, persistent.max_memory,
              live.max_memory if live else None, Impact.NEXT_BOOT, show=format_size)
    elif "memory" in d and spec.memory > persistent.max_memory:
        pass  # the memory change above is next-boot and grows the ceiling
    vceiling = persistent.max_vcpus
    if "maxVcpus" in d and spec.max_vcpus is not None:
        vceiling = spec.max_vcpus
    if live is not None:  # hot-plug reaches only the running maximum; a new one needs a boot
        vceiling = min(vceiling, live.max_vcpus)
    if "vcpus" in d and not ctx.ignored("/spec/vcpus"):
        fewer_live = live is not None and spec.vcpus < live.vcpus
        impact = Impact.LIVE if spec.vcpus <= vceiling and not fewer_live else Impact.NEXT_BOOT
        if spec.vcpus != persistent.vcpus:
            changes.append(FieldChange("/spec/vcpus", spec.vcpus, persistent.vcpus,
                                       live.vcpus if live else None, impact))
        elif live is not None and live.vcpus != spec.vcpus:
            # Hot-plug only adds vCPUs: most guests and machine types refuse unplug.
            if live.vcpus < spec.vcpus <= live.max_vcpus:
                c = FieldChange("/spec/vcpus", spec.vcpus, persistent.vcpus, live.vcpus, Impact.LIVE)
                live_ops.append((c, {"op": "setvcpus", "count": spec.vcpus}))
            else:
                pending.append((FieldChange("/spec/vcpus", spec.vcpus, persistent.vcpus, live.vcpus,
                                            Impact.NEXT_BOOT),
                                "vCPUs are only hot-plugged, never unplugged"
                                if spec.vcpus < live.vcpus else "above the running maximum"))
    if "maxVcpus" in d and spec.max_vcpus is not None:
        check("maxVcpus", spec.max_vcpus, persistent.max_vcpus,
              live.max_vcpus if live else None, Impact.NEXT_BOOT)
    if spec.cpu is not None:
        want_cpu = (spec.cpu.mode, spec.cpu.model)
        have_cpu = (persistent.cpu_mode, persistent.cpu_model if spec.cpu.model else None)
        # The running XML expands host-model into a full CPU: compare definitions only.
        if "cpu" in d and not ctx.ignored("/spec/cpu") and want_cpu != have_cpu:
            changes.append(FieldChange("/spec/cpu", _cpu_str(want_cpu), _cpu_str(have_cpu), None,
                                       guest_impact("cpu")))
    if spec.machine:
        check("machine", spec.machine, persistent.machine, live.machine if live else None,
              guest_impact("machine"), same=machine_matches)
    if ctx.host.caps.virt_type not in ("test",) and spec.xen is None:
        check("firmware", spec.firmware, persistent.firmware, live.firmware if live else None,
              guest_impact("firmware"))
    if spec.xen is not None:
        check("xen", spec.xen.mode, _xen_mode(persistent), _xen_mode(live) if live else None,
              guest_impact("xen"))
    if spec.boot is not None:
        want_boot = _boot_tuple(spec, ctx.guest.metadata.name, ctx.host)
        check("boot", want_boot, _boot_of(persistent, spec), _boot_of(live, spec) if live else None,
              guest_impact("boot"), show=_boot_str)
    if spec.graphics is not None:
        check("graphics", _graphics(spec), persistent.graphics,
              live.graphics if live else None, guest_impact("graphics"))
    if "autostart" in d and not ctx.ignored("/spec/autostart") and spec.autostart != obs.autostart:
        changes.append(FieldChange("/spec/autostart", spec.autostart, obs.autostart, None,
                                   Impact.LIVE))
    if "disks" in d or "cloudInit" in d:
        _disk_changes(ctx, persistent, live, hotplug, changes, live_ops, pending)
    if "cloudInit" in d and not ctx.ignored("/spec/cloudInit") and obs.owner is not None:
        want_seed = applied_fields(spec).get("cloudInit")
        had_seed = obs.owner.applied.get("cloudInit")
        if had_seed is not None and want_seed != had_seed:
            changes.append(FieldChange("/spec/cloudInit", want_seed, had_seed, None, Impact.NEXT_BOOT,
                                       "seed ISO rebuilt"))
    if "agent" in d and not ctx.ignored("/spec/agent"):
        check("agent", spec.agent, persistent.agent, live.agent if live else None, Impact.NEXT_BOOT)
    if "interfaces" in d:
        _nic_changes(ctx, persistent, live, hotplug, changes, live_ops, pending)
    if live is not None:
        live_ops.extend((c, op) for c in changes if (op := _live_op(c, live)) is not None)
    return changes, live_ops, pending


def _live_op(change: FieldChange, live: GuestConfig) -> dict[str, Any] | None:
    """The call that brings a LIVE definition change to the running guest too."""
    if change.impact != Impact.LIVE:
        return None
    parts = change.path.split("/")
    field_name = parts[2]
    if field_name == "memory":
        return None  # done by the executor from the spec: setMemoryFlags(LIVE)
    if field_name == "vcpus":
        return {"op": "setvcpus", "count": change.desired}
    if field_name == "disks" and change.note == "attach disk":
        return {"op": "attach-disk", "disk": change.desired}
    if field_name == "disks" and change.note.startswith("detach disk") and change.live:
        target = next((d.target for d in live.disks if d.name == change.live), None)
        return {"op": "detach-disk", "target": target} if target else None
    if field_name == "interfaces" and change.note == "attach NIC":
        return {"op": "attach-nic", "index": int(parts[3])}
    if field_name == "interfaces" and change.note == "detach NIC" and change.live:
        return {"op": "detach-nic", "mac": str(change.live).split()[-1]}
    return None


def _cpu_str(value: tuple[str | None, str | None]) -> str:
    mode, model = value
    return f"{mode or 'default'}{'/' + model if model else ''}"


def _boot_tuple(spec: GuestSpec, name: str, host: HostState) -> tuple[Any, ...]:
    b = spec.boot
    assert b is not None
    order = tuple(b.order) if b.order else None
    kernel, initrd = boot_files(name, spec, {n: p.path for n, p in host.pools.items() if p.path})
    return (order, kernel, initrd, b.cmdline)


def _boot_of(config: GuestConfig | None, spec: GuestSpec) -> tuple[Any, ...] | None:
    if config is None:
        return None
    order = config.boot_order if spec.boot and spec.boot.order else None
    return (order, config.kernel, config.initrd, config.cmdline)


def _boot_str(value: tuple[Any, ...] | None) -> str | None:
    if value is None:
        return None
    order, kernel, initrd, cmdline = value
    parts = []
    if order:
        parts.append("order=" + ",".join(order))
    for label, v in (("kernel", kernel), ("initrd", initrd), ("cmdline", cmdline)):
        if v:
            parts.append(f"{label}={v}")
    return " ".join(parts) or "default"


def _disk_changes(ctx: _Ctx, persistent: GuestConfig, live: GuestConfig | None, hotplug: bool,
                  changes: list[FieldChange], live_ops: list[tuple[FieldChange, dict[str, Any]]],
                  pending: list[tuple[FieldChange, str]]) -> None:
    spec = ctx.spec
    have = {d.name: d for d in persistent.disks}
    running = {d.name: d for d in live.disks} if live else {}
    add_impact = Impact.LIVE if (hotplug or live is None) else Impact.NEXT_BOOT
    for i, disk in enumerate(effective_disks(spec)):
        seed = disk.name == SEED_DISK and i >= len(spec.disks)
        pointer = "/spec/cloudInit" if seed else f"/spec/disks/{i}"
        if ctx.ignored(pointer):
            continue
        cur = have.get(disk.name)
        if cur is None:
            if seed:  # a CD-ROM on IDE/SATA is not hot-pluggable: the seed counts at next boot
                changes.append(FieldChange(pointer, "seed ISO attached", None, None, Impact.NEXT_BOOT,
                                           "attach cloud-init seed"))
            else:
                changes.append(FieldChange(pointer, disk.name, None, None, add_impact, "attach disk"))
            continue
        if seed:
            continue
        if live is not None and disk.name not in running:
            c = FieldChange(pointer, disk.name, disk.name, None, add_impact, "attach disk (live)")
            if hotplug:
                live_ops.append((c, {"op": "attach-disk", "disk": disk.name}))
            else:
                pending.append((c, "not attached to the running guest"))
        if "bus" in disk.model_fields_set and not ctx.ignored(pointer + "/bus"):
            bus = "xen" if spec.xen is not None and disk.bus == "virtio" else disk.bus
            if cur.bus != bus:
                changes.append(FieldChange(pointer + "/bus", bus, cur.bus,
                                           running[disk.name].bus if disk.name in running else None,
                                           Impact.NEXT_BOOT))
    wanted = {d.name for d in effective_disks(spec)}
    for name in have:
        if name not in wanted and not ctx.ignored("/spec/disks"):
            changes.append(FieldChange("/spec/disks/-", None, name, name if name in running else None,
                                       Impact.LIVE if hotplug or live is None else Impact.NEXT_BOOT,
                                       "detach disk (volume kept)"))
    for name in running:
        if name not in have and name not in wanted and hotplug:
            c = FieldChange("/spec/disks/-", None, None, name, Impact.LIVE, "detach disk (live)")
            live_ops.append((c, {"op": "detach-disk", "target": running[name].target}))


def _nic_changes(ctx: _Ctx, persistent: GuestConfig, live: GuestConfig | None, hotplug: bool,
                 changes: list[FieldChange], live_ops: list[tuple[FieldChange, dict[str, Any]]],
                 pending: list[tuple[FieldChange, str]]) -> None:
    spec = ctx.spec
    pairs, extra = match_nics(spec.interfaces, persistent.interfaces)
    add_impact = Impact.LIVE if (hotplug or live is None) else Impact.NEXT_BOOT
    running_macs = {n.mac: n for n in live.interfaces} if live else {}
    for i, (want, idx) in enumerate(pairs):
        pointer = f"/spec/interfaces/{i}"
        if ctx.ignored(pointer):
            continue
        if idx is None:
            changes.append(FieldChange(pointer, f"{want.network} {want.mac or ''}".strip(), None,
                                       None, add_impact, "attach NIC"))
            continue
        cur = persistent.interfaces[idx]
        if "model" in want.model_fields_set and not ctx.ignored(pointer + "/model") and (
                cur.model != want.model):
            live_model = running_macs[cur.mac].model if cur.mac in running_macs else None
            changes.append(FieldChange(pointer + "/model", want.model, cur.model, live_model,
                                       Impact.NEXT_BOOT))
        if "boot_rom" in want.model_fields_set and not ctx.ignored(pointer + "/bootRom") and (
                cur.boot_rom != want.boot_rom):
            changes.append(FieldChange(pointer + "/bootRom", want.boot_rom, cur.boot_rom, None, Impact.NEXT_BOOT))
        if not ctx.ignored(pointer + "/network") and cur.network != want.network:
            changes.append(FieldChange(pointer + "/network", want.network, cur.network,
                                       None, Impact.NEXT_BOOT))
        if live is not None and cur.mac not in running_macs:
            c = FieldChange(pointer, f"{want.network} {cur.mac}", f"{cur.network} {cur.mac}", None,
                            Impact.LIVE, "attach NIC (live)")
            if hotplug:
                live_ops.append((c, {"op": "attach-nic", "mac": cur.mac}))
            else:
                pending.append((c, "not attached to the running guest"))
    for idx in extra:
        cur = persistent.interfaces[idx]
        if ctx.ignored("/spec/interfaces"):
            continue
        changes.append(FieldChange("/spec/interfaces/-", None, f"{cur.network} {cur.mac}",
                                   f"{cur.network} {cur.mac}" if cur.mac in running_macs else None,
                                   Impact.LIVE if hotplug or live is None else Impact.NEXT_BOOT,
                                   "detach NIC"))
    persistent_macs = {n.mac for n in persistent.interfaces}
    for mac, nic in running_macs.items():
        if mac not in persistent_macs and hotplug and not ctx.ignored("/spec/interfaces"):
            c = FieldChange("/spec/interfaces/-", None, None, f"{nic.network} {mac}", Impact.LIVE,
                            "detach NIC (live)")
            live_ops.append((c, {"op": "detach-nic", "mac": mac}))


def _power_change(ctx: _Ctx, obs: ObservedGuest) -> FieldChange | None:
    if ctx.ignored("/spec/state"):
        return None
    want = ctx.spec.state
    have = obs.state
    if have == "other" or want == have:
        return None
    return FieldChange("/spec/state", want, have, have, Impact.LIVE)


def _power_action(key: ResourceKey, spec: GuestSpec, obs: ObservedGuest,
                  change: FieldChange) -> Action:
    want, have = spec.state, obs.state
    if want == "running":
        op = "resume" if have == "paused" else "start"
    elif want == "paused":
        op = "suspend" if have == "running" else "start"
    else:
        op = "stop"
    return Action(key, op, Impact.LIVE, Phase.POWER, f"state: {have} → {want}", (change,),
                  {"paused": want == "paused", "timeout": spec.shutdown_timeout})


def _volume_actions(key: ResourceKey, guest: Guest, host: HostState, out: GuestPlan) -> list[Action]:
    """Volumes to make or grow for the guest's pool disks."""
    actions: list[Action] = []
    name = guest.metadata.name
    for i, disk in enumerate(guest.spec.disks):
        if disk.pool is None:
            continue
        vol_name = volume_name(name, disk.name, disk.format)
        pool = host.pools.get(disk.pool)
        vol = pool.volumes.get(vol_name) if pool else None
        vkey = ResourceKey(host.host, "Volume", f"{disk.pool}/{vol_name}")
        if vol is None:
            source = _image_source(key, disk, host, out, actions)
            if source is False:
                continue
            size = disk.size or 0
            base_cap = source[2] if source else None
            if base_cap is not None and size and size < base_cap:
                out.problems.append(Problem(key, f"disk {disk.name}: size {format_size(size)} is smaller than "
                                            f"its image ({format_size(base_cap)}); disks are never shrunk"))
                continue
            change = FieldChange(f"/spec/disks/{i}", format_size(size) if size else disk.from_,
                                 None, None, Impact.CREATE, f"{disk.clone} clone of {disk.from_}" if disk.from_ else "")
            actions.append(Action(vkey, "create-volume", Impact.CREATE, Phase.VOLUMES,
                                  f"disk {disk.name} of guest {name}", (change,),
                                  {"pool": disk.pool, "volume": vol_name, "capacity": size,
                                   "format": disk.format, "from": disk.from_,
                                   "source": list(source[:2]) if source else None, "clone": disk.clone,
                                   "guest": name, "disk": disk.name}))
            continue
        if disk.size is None or "size" not in disk.model_fields_set:
            continue
        pointer = f"/spec/disks/{i}/size"
        if any(pointer.startswith(p) for p in guest.spec.ignore):
            continue
        if disk.size < vol.capacity:
            out.problems.append(Problem(key, f"disk {disk.name}: size {format_size(disk.size)} is "
                                        f"smaller than the volume ({format_size(vol.capacity)}); "
                                        "disks are never shrunk"))
        elif disk.size > vol.capacity:
            change = FieldChange(pointer, format_size(disk.size), format_size(vol.capacity), None,
                                 Impact.LIVE)
            out.drift.append(change)
            actions.append(Action(vkey, "resize-volume", Impact.LIVE, Phase.VOLUMES,
                                  f"grow disk {disk.name}", (change,),
                                  {"pool": disk.pool, "volume": vol_name, "capacity": disk.size,
                                   "guest": guest.metadata.name, "disk": disk.name}))
    boot = guest.spec.boot
    if boot is not None and boot.pool is not None:
        boot_pool = host.pools.get(boot.pool)
        for local in (boot.kernel, boot.initrd):
            if not local:
                continue
            boot_vol = boot_volume(name, local)
            if boot_pool is None or boot_vol not in boot_pool.volumes:
                actions.append(Action(ResourceKey(host.host, "Volume", f"{boot.pool}/{boot_vol}"), "upload-file",
                                      Impact.CREATE, Phase.IMAGES, f"boot file of guest {name}",
                                      (FieldChange("/spec/boot", local, None, None, Impact.CREATE, "upload"),),
                                      {"pool": boot.pool, "volume": boot_vol, "path": local, "guest": name}))
    seed_pool_name = next((d.pool for d in guest.spec.disks if d.pool), None)
    if guest.spec.cloud_init is not None and seed_pool_name is not None:
        pool = host.pools.get(seed_pool_name)
        seed = seed_volume(name)
        want = applied_fields(guest.spec).get("cloudInit")
        obs = host.guests.get(name)
        had = obs.owner.applied.get("cloudInit") if obs is not None and obs.owner is not None else None
        if pool is None or seed not in pool.volumes or want != had:
            change = FieldChange("/spec/cloudInit", want, had, None, Impact.CREATE if had is None else Impact.NEXT_BOOT,
                                 "NoCloud seed ISO")
            actions.append(Action(ResourceKey(host.host, "Volume", f"{seed_pool_name}/{seed}"), "write-seed",
                                  change.impact, Phase.VOLUMES, f"cloud-init seed of guest {name}", (change,),
                                  {"pool": seed_pool_name, "volume": seed, "guest": name}))
    return actions


def _image_source(key: ResourceKey, disk: Disk, host: HostState, out: GuestPlan,
                  actions: list[Action]) -> tuple[str, str, int | None] | Literal[False] | None:
    """Where a disk's `from` image comes from: (kind, name-or-path, capacity); None without
    one; False after a plan problem. A URL image missing from the pool is fetched first."""
    src = disk.from_
    if src is None:
        return None
    pool = host.pools.get(disk.pool or "")
    if src.startswith(("http://", "https://")):
        vol = image_volume(disk.sha256 or "", src)
        have = pool.volumes.get(vol) if pool else None
        if have is None:
            vkey = ResourceKey(host.host, "Volume", f"{disk.pool}/{vol}")
            if not any(a.key == vkey for a in actions):
                actions.append(Action(vkey, "fetch-image", Impact.CREATE, Phase.IMAGES, f"download {src}",
                                      (FieldChange("/spec/disks/-/from", src, None, None, Impact.CREATE),),
                                      {"pool": disk.pool, "volume": vol, "url": src, "sha256": disk.sha256}))
            return ("volume", vol, None)
        return ("volume", vol, have.capacity)
    if src.startswith("/"):
        return ("path", src, None)
    have = pool.volumes.get(src) if pool else None
    if have is None and pool is not None:
        out.problems.append(Problem(key, f"disk {disk.name}: image {src!r} is not a volume of pool {disk.pool}"))
        return False
    return ("volume", src, have.capacity if have else None)


def owner_for(guest: Guest, instance: str, commit: str) -> dict[str, Any]:
    """The ownership record's content for a guest (see hypervisor/ownership.py)."""
    applied = applied_fields(guest.spec)
    vols = tuple(f"{d.pool}/{volume_name(guest.metadata.name, d.name, d.format)}"
                 for d in guest.spec.disks if d.pool)
    return {"instance": instance, "kind": "Guest", "name": guest.metadata.name,
            "digest": digest(applied), "commit": commit, "applied": applied, "volumes": vols}
