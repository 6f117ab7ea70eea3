"""Diff of one guest: spec × persistent definition × running state → typed actions.

The fields and how each lands come from the registry (controller/fields/guest.py and
fields/devices.py); this module only walks it. Only declared fields are compared (plus
``state``, which is always enforced); lists are keyed sets; ``ignore`` pointers are
skipped. A change that is defined but not yet running becomes a Pending (status), never an
action.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from controller.fields.base import Facts, Field, GuestView, call_names, declared_fields, declared_names, live_ops
from controller.fields.devices import (
    DISK_FIELDS,
    NIC_FIELDS,
    disk_names,
    disk_source,
    item_view,
    nic_label,
    observed_source,
    spec_nic_label,
)
from controller.fields.disks import SEED_DISK, boot_volume, effective_disks, image_volume, seed_volume
from controller.fields.guest import GUEST_FIELDS
from controller.fields.keys import match_nics
from controller.model.naming import volume_name
from controller.model.records import record
from controller.model.state import GuestConfig, HostState, ObservedGuest, ResourceKey
from controller.plan.actions import (
    Action,
    AttachDisks,
    AttachNic,
    CreateVolume,
    DefineGuest,
    DetachDisk,
    DetachNic,
    FetchImage,
    FieldChange,
    ImageSource,
    Impact,
    LiveOp,
    Pending,
    Problem,
    Recover,
    RecreateGuest,
    ResizeVolume,
    Restart,
    Resume,
    SetAutostart,
    Start,
    Stop,
    Suspend,
    UpdateGuest,
    UploadFile,
    WriteSeed,
)
from controller.plan.context import (
    SUSPEND_ANNOTATION,
    PlanOptions,
    applied_fields,
    digest,
    ownership_problem,
    patch_changes,
)
from controller.spec.models import Disk, Guest, GuestSpec, RestartWindow
from controller.spec.units import format_size


@dataclass
class GuestPlan:
    """One guest's plan: its actions, what waits for a restart, its problems and drift."""

    actions: list[Action] = field(default_factory=list)
    pending: list[Pending] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    drift: list[FieldChange] = field(default_factory=list)  # everything that differs
    held: int = 0  # device removals waiting for --prune: drift, not a pending restart


def guest_facts(name: str, host: HostState) -> Facts:
    """The facts the writer will use, so the planner normalises desired values the same way."""
    return Facts(name, host.caps.virt_type, {n: p.path for n, p in host.pools.items() if p.path})


def _ignored(ignore: Any, pointer: str) -> bool:
    return bool(ignore) and any(pointer == p or pointer.startswith(p + "/") for p in ignore)


# A live repair of the running guest: a typed call, or a disk to hot-plug once its volume exists.
_LiveWork = LiveOp | str


class _Diff:
    """The collected differences of one guest."""

    def __init__(self, guest: Guest, obs: ObservedGuest, host: HostState, prune: bool = False):
        self.spec = guest.spec
        self.obs = obs
        self.host = host
        self.facts = guest_facts(guest.metadata.name, host)
        self.declared = declared_names(guest.spec)
        self.ignore = tuple(guest.spec.ignore)
        assert obs.persistent is not None
        self.persistent: GuestConfig = obs.persistent
        self.live = obs.live if obs.state in ("running", "paused") else None
        self.view = GuestView(self.spec, self.facts, host.caps, self.persistent, self.live, obs)
        self.hotplug = host.caps.hotplug
        self.changes: list[FieldChange] = []  # the definition differs
        self.live_work: list[tuple[FieldChange, _LiveWork]] = []  # the running guest needs a call
        self.pending: list[tuple[FieldChange, str]] = []  # defined, not running
        # Removing a device is destructive: only with --prune, never on the first apply of an
        # adopted guest. Held removals are drift (and a pending status), their devices kept.
        self.may_remove = prune and obs.owner is not None
        self.held: list[tuple[FieldChange, str]] = []
        self.keep: set[str] = set()  # disk names and NIC MACs the writer must not remove
        self.removes: list[str] = []  # devices this plan detaches ("disk data", "NIC 52:54:…")

    def hold(self, change: FieldChange, device: str | None,
             why: str = "removing a device is destructive: apply --prune does it") -> None:
        if self.obs.owner is None:
            why = "adopting: the first apply never removes a device or changes a disk's source"
        self.held.append((change, why))
        if device is not None:
            self.keep.add(device)

    def ignored(self, pointer: str) -> bool:
        return _ignored(self.ignore, pointer)

    @property
    def add_impact(self) -> Impact:
        return Impact.LIVE if (self.hotplug or self.live is None) else Impact.NEXT_BOOT


def plan_guest(guest: Guest, host: HostState, opts: PlanOptions) -> GuestPlan:
    name = guest.metadata.name
    key = ResourceKey(host.host, "Guest", name)
    obs = host.guests.get(name)
    out = GuestPlan()
    spec = guest.spec

    refusal = ownership_problem(key, "guest", obs is not None, obs.owner if obs else None, spec.adopt, opts.instance)
    if refusal:
        out.problems.append(Problem(key, refusal))
        return out
    problem = _host_problem(spec, host) or _device_refusal(spec, host)
    if problem:
        out.problems.append(Problem(key, problem))
        return out

    volumes = _volume_actions(key, guest, host, out)
    suspended = guest.metadata.annotations.get(SUSPEND_ANNOTATION) == "true"
    report_only = spec.reconcile == "report" or suspended

    if obs is None or obs.persistent is None:
        _plan_define(key, guest, obs, volumes, report_only, out)
        return out

    diff = _Diff(guest, obs, host, prune=opts.prune)
    for f in _without_effect(spec, diff.facts):
        out.problems.append(Problem(key, f"{f.name} has no effect on host {host.host} ({host.caps.driver}): "
                                    "it is not compared or written there", severity="warning"))
    _scalar_changes(diff)
    _patch_changes(diff)
    if "disks" in diff.declared or "cloudInit" in diff.declared:
        _disk_changes(diff)
    if "interfaces" in diff.declared:
        _nic_changes(diff)
    power = _power_change(spec, obs, diff.ignored)
    fault = _fault_plan(key, spec, obs, host) if not diff.ignored("/spec/state") else None
    if fault is not None:
        power = fault.change
        if fault.problem is not None:
            out.problems.append(fault.problem)
    defined_changes = diff.changes
    out.drift.extend(defined_changes)
    # Running guest differs from its (matching) definition, e.g. vCPUs set live: drift too.
    out.drift.extend(c for c, _ in diff.live_work if c not in defined_changes)
    out.drift.extend(c for c, _ in diff.pending)
    out.drift.extend(c for c, _ in diff.held)
    if power is not None:
        out.drift.append(power)
    if report_only:
        return out
    if not (defined_changes or diff.live_work or diff.pending or diff.held or volumes or fault or power):
        return out  # in sync: nothing below adds an action or a pending restart
    for change, why in diff.held:
        out.pending.append(Pending(key, f"held: {why}", (change,)))
    out.held = len(diff.held)
    out.actions.extend(volumes)

    # A crashed guest takes no live call: only its recovery (destroy + start) reaches it.
    running = obs.state in ("running", "paused") and not (fault is not None and fault.crashed)
    recreate = [c for c in defined_changes if c.impact == Impact.RECREATE]
    next_boot = [c for c in defined_changes if c.impact == Impact.NEXT_BOOT]
    restart_needed = running and (bool(next_boot) or bool(recreate) or any(r for _, r in diff.pending))
    if fault is not None:
        restart_needed = False  # the fault decides the power: a recovery boots the new definition
    may_restart, why_not = _may_restart(spec, opts.now)
    stays_down = spec.state == "stopped"

    if recreate and running and not may_restart and not stays_down:
        out.pending.append(Pending(key, f"needs recreate ({why_not})", tuple(recreate)))
        defined_changes = [c for c in defined_changes if c.impact != Impact.RECREATE]
        recreate = []
    # New disks reach a running guest after their volumes exist (AttachDisks runs in the power phase).
    attach = tuple(w for _, w in diff.live_work if isinstance(w, str))
    calls = tuple(w for _, w in diff.live_work if not isinstance(w, str))
    live_changes = tuple(dict.fromkeys(c for c, w in diff.live_work  # a change with several calls: once
                                       if not isinstance(w, str) and c not in defined_changes))
    if recreate:
        out.actions.append(RecreateGuest(key=key, reason="fields that need a new definition changed",
                                         changes=tuple(defined_changes), restart=running and not stays_down,
                                         fields=tuple(sorted(_fields_of(defined_changes))),
                                         keep=tuple(sorted(diff.keep)), removes=tuple(diff.removes)))
    elif defined_changes or calls:
        # An adopted guest that already matches needs no write: ownership is recorded
        # with its first change (until then it is never pruned, which is the safe side).
        reason = "spec and definition differ" + (" (adopting it)" if obs.owner is None else "")
        if not defined_changes:
            reason = "running guest differs from its definition"
        out.actions.append(UpdateGuest(
            key=key, reason=reason, impact=Impact.NEXT_BOOT if next_boot else Impact.LIVE,
            changes=tuple(defined_changes) + live_changes,
            fields=tuple(sorted(_fields_of(defined_changes))), keep=tuple(sorted(diff.keep)),
            removes=tuple(diff.removes),
            live=tuple(op for op in calls if running or not _needs_running(op))))
    if attach and running and not recreate:
        out.actions.append(AttachDisks(key=key, reason="hot-plug new disks", disks=attach))
    pend_changes = tuple(next_boot) + tuple(c for c, _ in diff.pending)
    # A restart (or a recreate of a running guest) starts it in the wanted state itself; a
    # resume or suspend after it would act on a guest that is no longer in the observed state.
    restarts = bool(recreate) and running and not stays_down
    if restart_needed and not recreate and not stays_down:
        if may_restart:
            restarts = True
            out.actions.append(Restart(key=key, reason="apply changes that need a restart",
                                       changes=pend_changes + ((power,) if power is not None else ()),
                                       timeout=spec.shutdown_timeout, paused=spec.state == "paused"))
        elif pend_changes:
            out.pending.append(Pending(key, f"pending restart ({why_not})", pend_changes))
    if fault is not None:
        if fault.action is not None:
            out.actions.append(fault.action)
        if pend_changes and not isinstance(fault.action, Recover):
            out.pending.append(Pending(key, f"pending restart (the guest is {obs.reason})", pend_changes))
    elif power is not None and not restarts:
        out.actions.append(_power_action(key, spec, obs, power))
    # beforeRestart snapshots must show the old definition: the update takes it, before it writes.
    if any(isinstance(a, Restart) for a in out.actions) and any(isinstance(a, UpdateGuest) for a in out.actions):
        out.actions = [replace(a, snapshot_first=True) if isinstance(a, UpdateGuest)
                       else replace(a, snapshot_taken=True) if isinstance(a, Restart) else a
                       for a in out.actions]
    return out


def _needs_running(op: LiveOp) -> bool:
    return not isinstance(op, SetAutostart)  # the only call that also reaches a stopped guest


def _host_problem(spec: GuestSpec, host: HostState) -> str | None:
    if spec.xen is not None and host.caps.virt_type not in ("xen", "test"):
        return f"host {host.host} is not a Xen host ({host.caps.driver})"
    if spec.xen is not None and host.caps.virt_type == "xen" and host.caps.guest_types:
        needed = {"pv": "xen", "hvm": "hvm", "pvh": "xenpvh"}[spec.xen.mode]
        if needed not in host.caps.guest_types:
            return (f"host {host.host} cannot run Xen {spec.xen.mode.upper()} guests: its libvirt "
                    f"capabilities list no '{needed}' guests (they list {', '.join(host.caps.guest_types)}; "
                    "HVM needs VMX/SVM)")
    return None


def _device_refusal(spec: GuestSpec, host: HostState) -> str | None:
    """A declared device this host cannot provide, from its capability probe: said at plan time,
    per host, instead of a failed define or start."""
    facts: Facts | None = None
    for f in declared_fields(GUEST_FIELDS, spec):
        if f.refuse is None or f.want is None:
            continue
        facts = facts or guest_facts("", host)
        if not f.exists_on(facts.virt_type):
            if f.want(spec, facts):
                return f"host {host.host} ({host.caps.driver}) has no {f.name}: {f.how}"
            continue
        why = f.refuse(spec, host.caps, host.host)
        if why:
            return why
    return None


def _plan_define(key: ResourceKey, guest: Guest, obs: ObservedGuest | None, volumes: list[Action],
                 report_only: bool, out: GuestPlan) -> None:
    """The guest is not defined. Still running but undefined out of band (transient): the
    ownership check made sure it is ours (or adopted), so it is defined again under its UUID."""
    spec = guest.spec
    transient = obs is not None
    change = FieldChange("/spec", desired="defined", defined=None,
                         live=obs.state if obs is not None else None, impact=Impact.CREATE)
    out.drift.append(change)
    power = _power_change(spec, obs, lambda p: _ignored(spec.ignore, p)) if obs is not None else None
    if power is not None:
        out.drift.append(power)
    if report_only:
        return
    # its images must be fetched and verified first
    needs = tuple(f"Volume/{a.key.name}" for a in volumes if isinstance(a, FetchImage | UploadFile))
    out.actions.append(DefineGuest(key=key, changes=(change,), needs=needs,
                                   reason="guest is running but not defined (transient)" if transient
                                   else "guest does not exist"))
    out.actions.extend(volumes)
    if power is not None and obs is not None:
        out.actions.append(_power_action(key, spec, obs, power))
    elif obs is None and spec.state in ("running", "paused"):
        out.actions.append(Start(key=key, reason=f"state: {spec.state}", paused=spec.state == "paused"))


def _fields_of(changes: list[FieldChange]) -> set[str]:
    """The registry fields the changes are of: a nested field (/spec/cpu/pinning) by its own pointer,
    else the spec's top-level name (/spec/disks/0/cache is the disks field)."""
    out = set()
    for c in changes:
        nested = next((f.name for f in GUEST_FIELDS if f.pointer and "{" not in f.pointer
                       and (c.path == f.pointer or c.path.startswith(f.pointer + "/"))), None)
        out.add(nested or c.path.split("/")[2])
    return out


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
    from croniter import croniter  # only guests with a restart window need it, not every plan

    local = now.astimezone(ZoneInfo(window.timezone))
    last_open = croniter(window.schedule, local + timedelta(seconds=1)).get_prev(datetime)
    if local < last_open + timedelta(seconds=window.duration):
        return True, last_open
    return False, croniter(window.schedule, local).get_next(datetime)


# ---------------------------------------------------------------- the registry walk


def _scalar_changes(d: _Diff) -> None:
    """Every declared scalar field of the registry: compare, class the impact, name the call."""
    for f in declared_fields(GUEST_FIELDS, d.spec):
        if f.planned_by or f.want is None or f.have is None:
            continue
        if d.ignored(f.path) or not f.applies(d.spec, d.facts):
            continue
        _compare(d, f)


def _patch_changes(d: _Diff) -> None:
    """Each xmlPatch the definition does not satisfy (changed out of band, or new): the update
    writes the definition again, which applies every patch. The running guest's XML is not
    observed, so a patch counts at next boot."""
    if d.spec.xml_patches:
        d.changes.extend(c for c in patch_changes(d.obs.xml, d.spec.xml_patches, Impact.NEXT_BOOT)
                         if not d.ignored(c.path))


def _without_effect(spec: GuestSpec, facts: Facts) -> list[Field[Any]]:
    """Declared fields this host's kind ignores (firmware on Xen, say): said, not silently dropped.
    The test driver has no firmware at all; specs written for real hosts run on it quietly."""
    if facts.virt_type == "test":
        return []
    ignored = [f for f in declared_fields(GUEST_FIELDS, spec) if f.want is not None and not f.applies(spec, facts)]
    given = applied_fields(spec) if ignored else {}
    return [f for f in ignored if _at(given, f.path) is not None]


def _at(doc: Any, pointer: str) -> Any:
    for part in pointer.removeprefix("/spec/").split("/"):
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


def _waits(f: Field[Any], impact: Impact) -> str:
    return f.next_boot_why if impact in (Impact.NEXT_BOOT, Impact.RECREATE) else ""


def _compare(d: _Diff, f: Field[Any]) -> None:
    assert f.want is not None and f.have is not None
    want = f.want(d.spec, d.facts)
    have = f.have(d.persistent, d.obs)
    live_have = f.have(d.live, d.obs) if d.live is not None else None
    if not f.same(want, have):
        impact = f.impact_for(d.view)
        ops: tuple[LiveOp, ...] = ()
        if f.call is not None:
            ops = (f.call(d.spec),)
        elif d.live is not None and impact == Impact.LIVE and f.live is not None:
            ops = live_ops(f.live(d.view))
        change = FieldChange(f.path, f.show(want), f.show(have),
                             f.show(live_have) if d.live is not None and f.shows_live else None, impact, f.note,
                             call=call_names(ops), waits=_waits(f, impact))
        d.changes.append(change)
        d.live_work.extend((change, op) for op in ops)
        return
    if d.live is None or not f.compare_live:
        return
    if f.same_live(d.view, want, live_have) if f.same_live is not None else f.same(want, live_have):
        return
    # The definition matches; the running guest does not.
    if f.running_differs is not None:
        found, why = f.running_differs(d.view)
        ops = live_ops(found)
        change = FieldChange(f.path, f.show(want), f.show(have), f.show(live_have),
                             Impact.LIVE if ops else Impact.NEXT_BOOT, call=call_names(ops),
                             waits="" if ops else why)
        if ops:
            d.live_work.extend((change, op) for op in ops)
        else:
            d.pending.append((change, why))
    elif (impact := f.impact_for(d.view)) != Impact.LIVE:
        d.pending.append((FieldChange(f.path, f.show(want), f.show(have), f.show(live_have), impact,
                                      waits=_waits(f, impact)),
                          "definition differs from the running guest"))


def _item_changes(d: _Diff, fields: tuple[Field[Any], ...], item: Any, state: Any, running: Any,
                  pointer: str) -> None:
    """The declared fields of one list item (a disk, a NIC) against its defined state and, for
    fields with a live call, its running state: a LIVE change of a running guest's item gets
    the field's typed call, as guest fields do."""
    view = item_view(d.view, item, state, running)
    for f in declared_fields(fields, item):
        assert f.want is not None and f.have is not None
        path = f.path.format(i=pointer.rsplit("/", 1)[-1])
        if d.ignored(path) or not f.applies(item, d.facts):
            continue
        want, have = f.want(item, d.facts), f.have(state, None)
        live_have = f.have(running, None) if running is not None else None
        impact = f.impact_for(view)
        # A field that is live elsewhere but not on this host says why it waits for a boot.
        note = f"{d.host.caps.driver} cannot change it live" if f.live and impact != Impact.LIVE else ""
        waits = (note or f.next_boot_why) if impact != Impact.LIVE else ""
        shown_live = f.show(live_have) if running is not None else None
        if not f.same(want, have):
            ops = live_ops(f.live(view)) if running is not None and impact == Impact.LIVE and f.live else ()
            change = FieldChange(path, f.show(want), f.show(have), shown_live, impact, note,
                                 call=call_names(ops), waits=waits)
            d.changes.append(change)
            d.live_work.extend((change, op) for op in ops)
            continue
        if running is None or f.live is None or not f.compare_live or f.same(want, live_have):
            continue
        # The definition matches; the running item does not (changed live out of band).
        ops = live_ops(f.live(view)) if impact == Impact.LIVE else ()
        change = FieldChange(path, f.show(want), f.show(have), shown_live, impact, note,
                             call=call_names(ops), waits=waits)
        if ops:
            d.live_work.extend((change, op) for op in ops)
        else:
            d.pending.append((change, "definition differs from the running guest"))


def _disk_changes(d: _Diff) -> None:
    spec = d.spec
    have = dict(zip(disk_names(spec, list(d.persistent.disks), d.facts), d.persistent.disks, strict=True))
    running = dict(zip(disk_names(spec, list(d.live.disks), d.facts), d.live.disks, strict=True)) if d.live else {}
    for i, disk in enumerate(effective_disks(spec)):
        seed = disk.name == SEED_DISK and i >= len(spec.disks)
        pointer = "/spec/cloudInit" if seed else f"/spec/disks/{i}"
        if d.ignored(pointer):
            continue
        cur = have.get(disk.name)
        if cur is None:
            if seed:  # a CD-ROM on IDE/SATA is not hot-pluggable: the seed counts at next boot
                d.changes.append(FieldChange(pointer, "seed ISO attached", None, None, Impact.NEXT_BOOT,
                                             "attach cloud-init seed"))
            else:
                hot = d.live is not None and d.hotplug
                change = FieldChange(pointer, disk.name, None, None, d.add_impact, "attach disk",
                                     call="attachDeviceFlags" if hot else "")
                d.changes.append(change)
                if d.live is not None and d.hotplug:
                    d.live_work.append((change, disk.name))
            continue
        if seed:
            continue
        if d.live is not None and disk.name not in running:
            c = FieldChange(pointer, disk.name, disk.name, None, d.add_impact, "attach disk (live)",
                            call="attachDeviceFlags" if d.hotplug else "")
            if d.hotplug:
                d.live_work.append((c, disk.name))
            else:
                d.pending.append((c, "not attached to the running guest"))
        _source_change(d, disk, cur, pointer)
        _item_changes(d, DISK_FIELDS, disk, cur, running.get(disk.name), pointer)
    wanted = {x.name for x in effective_disks(spec)}
    for name in have:
        if name not in wanted and not d.ignored("/spec/disks"):
            live_disk = running.get(name)
            change = FieldChange("/spec/disks/-", None, name, name if live_disk else None,
                                 d.add_impact, "detach disk (volume kept)",
                                 call="detachDeviceFlags" if live_disk is not None and d.hotplug else "")
            if not d.may_remove:
                d.hold(change, name)
                continue
            d.removes.append(f"disk {name}")
            d.changes.append(change)
            if live_disk is not None and d.hotplug and d.add_impact == Impact.LIVE:
                d.live_work.append((change, DetachDisk(live_disk.target)))
    for name, live_disk in running.items():
        if name not in have and name not in wanted and d.hotplug:
            c = FieldChange("/spec/disks/-", None, None, name, Impact.LIVE, "detach disk (live)",
                            call="detachDeviceFlags")
            if not d.may_remove:
                d.hold(c, None)
                continue
            d.removes.append(f"disk {name}")
            d.live_work.append((c, DetachDisk(live_disk.target)))


def _source_change(d: _Diff, disk: Disk, cur: Any, pointer: str) -> None:
    """A disk whose file or volume the spec changes: the guest loses what it had, so this is
    destructive like a detach (held without --prune, counted by the mass-deletion guard); the old
    file or volume stays on the host."""
    want, have = disk_source(disk, d.facts), observed_source(cur, d.facts)
    if want is None or have is None or want == have:
        return  # a new pool (its directory not known yet), a block or network disk, an empty CD-ROM
    path = f"{pointer}/path" if disk.path else f"{pointer}/pool"
    change = FieldChange(path, want, have, None, Impact.NEXT_BOOT,
                         f"destructive: the guest loses {have} (kept on the host)")
    if not d.may_remove:
        d.hold(change, disk.name, "changing a disk's source is destructive (the guest loses what it had): "
               "apply --prune does it")
        return
    d.removes.append(f"disk {disk.name} from {have}")
    d.changes.append(change)


def _nic_changes(d: _Diff) -> None:
    spec = d.spec
    pairs, extra = match_nics(spec.interfaces, d.persistent.interfaces)
    running_macs = {n.mac: n for n in d.live.interfaces} if d.live else {}
    for i, (want, idx) in enumerate(pairs):
        pointer = f"/spec/interfaces/{i}"
        if d.ignored(pointer):
            continue
        if idx is None:
            change = FieldChange(pointer, f"{spec_nic_label(want)} {want.mac or ''}".strip(), None, None,
                                 d.add_impact, "attach NIC",
                                 call="attachDeviceFlags" if d.live is not None and d.add_impact == Impact.LIVE else "")
            d.changes.append(change)
            if d.live is not None and d.add_impact == Impact.LIVE:
                d.live_work.append((change, AttachNic(index=i)))
            continue
        cur = d.persistent.interfaces[idx]
        _item_changes(d, NIC_FIELDS, want, cur, running_macs.get(cur.mac), pointer)
        if d.live is not None and cur.mac not in running_macs:
            c = FieldChange(pointer, f"{spec_nic_label(want)} {cur.mac}", f"{nic_label(cur)} {cur.mac}", None,
                            Impact.LIVE, "attach NIC (live)", call="attachDeviceFlags" if d.hotplug else "")
            if d.hotplug:
                d.live_work.append((c, AttachNic(mac=cur.mac)))
            else:
                d.pending.append((c, "not attached to the running guest"))
    for idx in extra:
        cur = d.persistent.interfaces[idx]
        if d.ignored("/spec/interfaces"):
            continue
        live_nic = cur.mac in running_macs
        label = f"{nic_label(cur)} {cur.mac}"
        change = FieldChange("/spec/interfaces/-", None, label, label if live_nic else None, d.add_impact,
                             "detach NIC", call="detachDeviceFlags" if live_nic and d.add_impact == Impact.LIVE else "")
        if not d.may_remove:
            d.hold(change, cur.mac)
            continue
        d.removes.append(f"NIC {cur.mac}")
        d.changes.append(change)
        if live_nic and d.add_impact == Impact.LIVE:
            d.live_work.append((change, DetachNic(cur.mac)))
    persistent_macs = {n.mac for n in d.persistent.interfaces}
    for mac, nic in running_macs.items():
        if mac not in persistent_macs and d.hotplug and not d.ignored("/spec/interfaces"):
            c = FieldChange("/spec/interfaces/-", None, None, f"{nic_label(nic)} {mac}", Impact.LIVE,
                            "detach NIC (live)", call="detachDeviceFlags")
            if not d.may_remove:
                d.hold(c, None)
                continue
            d.removes.append(f"NIC {mac}")
            d.live_work.append((c, DetachNic(mac)))


# ---------------------------------------------------------------- power


def _power_change(spec: GuestSpec, obs: ObservedGuest, ignored: Any) -> FieldChange | None:
    if ignored("/spec/state"):
        return None
    want, have = spec.state, obs.state
    if have == "other" or want == have:
        return None
    return FieldChange("/spec/state", want, have, have, Impact.LIVE)


def _power_action(key: ResourceKey, spec: GuestSpec, obs: ObservedGuest, change: FieldChange) -> Action:
    want, have = spec.state, obs.state
    reason = f"state: {have} → {want}"
    if want == "running" and have == "paused":
        return Resume(key=key, reason=reason, changes=(change,))
    if want == "paused" and have == "running":
        return Suspend(key=key, reason=reason, changes=(change,))
    if want in ("running", "paused"):
        return Start(key=key, reason=reason, changes=(change,), paused=want == "paused")
    return Stop(key=key, reason=reason, changes=(change,), timeout=spec.shutdown_timeout)


# ---------------------------------------------------------------- faults

# A disk paused on a full pool resumes only with room for at least this much more.
MIN_HEADROOM = 1024**2


def _bytes(n: int) -> str:
    return f"{n} bytes ({n / 1024**2:.1f} MiB)"


@record
class _FaultPlan:
    change: FieldChange  # the state drift, its note naming libvirt's state reason
    action: Action | None  # Recover, a Resume once space is back, or nothing
    problem: Problem | None  # why nothing is done (yet)
    crashed: bool


def _fault_plan(key: ResourceKey, spec: GuestSpec, obs: ObservedGuest, host: HostState) -> _FaultPlan | None:
    """A guest the spec wants up that crashed, that QEMU paused for a reason libvirt does not know
    (an internal error, or a stop sent past libvirt), or that is paused on a disk I/O error
    (libvirt's state reason tells them apart from a user's pause). A crash is not resumed:
    crashPolicy restart destroys and starts it (an unknown pause is resumed if QEMU lets it,
    else the same), report shows it. An I/O-error pause is resumed only once space is back
    (see _room_for)."""
    if obs.fault is None or spec.state == "stopped":
        return None
    have = obs.state if obs.state != "other" else "crashed"
    change = FieldChange("/spec/state", spec.state, have, have, Impact.LIVE, obs.reason)
    if obs.fault == "unknown-pause" and spec.state == "paused":
        return _FaultPlan(change, None, None, True)  # paused either way
    if obs.fault in ("crashed", "unknown-pause"):
        if spec.crash_policy == "report":
            return _FaultPlan(change, None, Problem(key, f"guest is {obs.reason}: crashPolicy report leaves it "
                                                    "so (destroy and start it to recover)", "warning"), True)
        if obs.fault == "unknown-pause":
            # A stop sent past libvirt resumes; after an internal error QEMU refuses, and only
            # then is the guest destroyed and started.
            return _FaultPlan(change, Recover(key=key, reason=f"guest is {obs.reason}: resume it, else destroy "
                                              "and start it (crashPolicy: restart)", changes=(change,),
                                              fault=obs.reason, resume_first=True), None, True)
        return _FaultPlan(change, Recover(key=key, reason=f"guest is {obs.reason}: destroy and start it "
                                          "(crashPolicy: restart; a resume cannot help)", changes=(change,),
                                          fault=obs.reason, paused=spec.state == "paused"), None, True)
    room, why = _room_for(obs, host)
    if spec.state == "paused":
        return _FaultPlan(change, None, None, False)  # paused either way: nothing to do
    if not room:
        return _FaultPlan(change, None, Problem(key, f"guest is {obs.reason}: it stays paused: {why}",
                                                "warning"), False)
    return _FaultPlan(change, Resume(key=key, reason=f"guest was {obs.reason}: {why}", changes=(change,)),
                      None, False)


def _room_for(obs: ObservedGuest, host: HostState) -> tuple[bool, str]:
    """Whether a guest paused on a full disk may resume. The rule: every disk libvirt reports out
    of space is a volume of a pool virtsync observes, and each such pool's free bytes cover what
    its disks may still take (capacity − allocation, at least MIN_HEADROOM each): a resume then
    cannot run into the same full pool. Any other I/O error, or a disk outside the pools, is
    left to the operator (a resume would only pause it again)."""
    if not obs.disk_errors:
        return False, "libvirt names no disk with an error; resume it by hand once the cause is fixed"
    need: dict[str, int] = {}
    for target, path, kind in obs.disk_errors:
        if kind != "no-space":
            return False, f"disk {target} had an I/O error (not a full disk); resume it by hand once it is fixed"
        found = next(((p, v) for p in host.pools.values() for v in p.volumes.values() if v.path == path), None)
        if found is None:
            return False, f"disk {target} ({path}) is in no pool of the host: resume it by hand once it has room"
        pool, vol = found
        need[pool.name] = need.get(pool.name, 0) + max(vol.capacity - (vol.allocation or 0), MIN_HEADROOM)
    short = [f"pool {n} has {_bytes(host.pools[n].available or 0)} free, its full disks need up to "
             f"{_bytes(b)}" for n, b in sorted(need.items()) if (host.pools[n].available or 0) < b]
    if short:
        return False, "; ".join(short) + " (resumed once there is room)"
    return True, "space is back (" + "; ".join(
        f"pool {n}: {_bytes(host.pools[n].available or 0)} free for up to {_bytes(b)}"
        for n, b in sorted(need.items())) + "): resume"


# ---------------------------------------------------------------- volumes


def _volume_actions(key: ResourceKey, guest: Guest, host: HostState, out: GuestPlan) -> list[Action]:
    """Volumes to make or grow for the guest's pool disks, boot files to upload, the seed."""
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
            base_cap = source[1] if source else None
            if base_cap is not None and size and size < base_cap:
                out.problems.append(Problem(key, f"disk {disk.name}: size {format_size(size)} is smaller than "
                                            f"its image ({format_size(base_cap)}); disks are never shrunk"))
                continue
            change = FieldChange(f"/spec/disks/{i}", format_size(size) if size else disk.from_,
                                 None, None, Impact.CREATE, f"{disk.clone} clone of {disk.from_}" if disk.from_ else "")
            actions.append(CreateVolume(key=vkey, reason=f"disk {disk.name} of guest {name}", changes=(change,),
                                        pool=disk.pool, volume=vol_name, capacity=size, format=disk.format,
                                        source=source[0] if source else None, clone=disk.clone,
                                        guest=name, disk=disk.name))
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
            seen = host.guests.get(name)
            running = seen is not None and seen.state in ("running", "paused") and host.caps.block_resize
            change = FieldChange(pointer, format_size(disk.size), format_size(vol.capacity), None, Impact.LIVE,
                                 call="blockResize" if running else "storageVolResize")
            out.drift.append(change)
            actions.append(ResizeVolume(key=vkey, reason=f"grow disk {disk.name}", changes=(change,),
                                        pool=disk.pool, volume=vol_name, capacity=disk.size,
                                        guest=name, disk=disk.name))
    boot = guest.spec.boot
    if boot is not None and boot.pool is not None:
        boot_pool = host.pools.get(boot.pool)
        for local in (boot.kernel, boot.initrd):
            if not local:
                continue
            boot_vol = boot_volume(name, local)
            if boot_pool is None or boot_vol not in boot_pool.volumes:
                actions.append(UploadFile(
                    key=ResourceKey(host.host, "Volume", f"{boot.pool}/{boot_vol}"),
                    reason=f"boot file of guest {name}",
                    changes=(FieldChange("/spec/boot", local, None, None, Impact.CREATE, "upload"),),
                    pool=boot.pool, volume=boot_vol, path=local, guest=name))
    seed_pool_name = next((d.pool for d in guest.spec.disks if d.pool), None)
    if guest.spec.cloud_init is not None and seed_pool_name is not None:
        pool = host.pools.get(seed_pool_name)
        seed = seed_volume(name)
        want = applied_fields(guest.spec).get("cloudInit")
        obs = host.guests.get(name)
        had = obs.owner.applied.get("cloudInit") if obs is not None and obs.owner is not None else None
        if pool is None or seed not in pool.volumes or want != had:
            impact = Impact.CREATE if had is None else Impact.NEXT_BOOT
            change = FieldChange("/spec/cloudInit", want, had, None, impact, "NoCloud seed ISO")
            actions.append(WriteSeed(key=ResourceKey(host.host, "Volume", f"{seed_pool_name}/{seed}"),
                                     impact=impact, reason=f"cloud-init seed of guest {name}", changes=(change,),
                                     pool=seed_pool_name, volume=seed, guest=name))
    return actions


def _image_source(key: ResourceKey, disk: Disk, host: HostState, out: GuestPlan, actions: list[Action]
                  ) -> tuple[ImageSource, int | None] | Literal[False] | None:
    """Where a disk's `from` image comes from, with its capacity where known; None without one;
    False after a plan problem. A URL image missing from the pool is fetched first."""
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
                actions.append(FetchImage(key=vkey, reason=f"download {src}",
                                          changes=(FieldChange("/spec/disks/-/from", src, None, None, Impact.CREATE),),
                                          pool=disk.pool or "", volume=vol, url=src, sha256=disk.sha256 or ""))
            return ImageSource("volume", vol), None
        return ImageSource("volume", vol), have.capacity
    if src.startswith("/"):
        return ImageSource("path", src), None
    have = pool.volumes.get(src) if pool else None
    if have is None and pool is not None:
        out.problems.append(Problem(key, f"disk {disk.name}: image {src!r} is not a volume of pool {disk.pool}"))
        return False
    return ImageSource("volume", src), have.capacity if have else None


def owner_for(guest: Guest, instance: str, commit: str) -> dict[str, Any]:
    """The ownership record's content for a guest (see hypervisor/ownership.py)."""
    applied = applied_fields(guest.spec)
    vols = tuple(f"{d.pool}/{volume_name(guest.metadata.name, d.name, d.format)}"
                 for d in guest.spec.disks if d.pool)
    return {"instance": instance, "kind": "Guest", "name": guest.metadata.name,
            "digest": digest(applied), "commit": commit, "applied": applied, "volumes": vols}
