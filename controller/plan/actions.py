"""The typed plan: ordered actions with a reason and an impact class each.

Every action is a frozen dataclass of its own type (a tagged union on ``op``):
the planner builds them, the executor dispatches on the type, and the plan's
JSON, its schema, the text renderer and the ChangeSet's counts all derive from
the same classes. Live operations that ride on a guest update are typed too
(``LiveOp``), so nothing downstream parses notes or strings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from enum import IntEnum
from typing import Any, ClassVar

from controller.model.operations import (
    LIVE_OP_TYPES,
    AttachNic,
    DetachDisk,
    DetachNic,
    Impact,
    LiveOp,
    SetAutostart,
    SetBlockIoTune,
    SetInterfaceBandwidth,
    SetLinkState,
    SetMemory,
    SetVcpus,
    UpdateGraphics,
    fields_json,
)
from controller.model.records import record
from controller.model.state import ResourceKey

__all__ = ["LIVE_OP_TYPES", "AttachNic", "DetachDisk", "DetachNic", "Impact", "LiveOp", "SetAutostart",
           "SetBlockIoTune", "SetInterfaceBandwidth", "SetLinkState", "SetMemory", "SetVcpus", "UpdateGraphics"]


class Phase(IntEnum):
    """Creation order (pools → networks → guests → volumes → power); deletes run reversed."""

    SECRETS = 5  # what pools, volumes and guests reference by UUID
    POOLS = 10
    NETWORKS = 20
    IMAGES = 25  # base images fetched and verified before anything of their guests is defined
    GUESTS = 30
    VOLUMES = 40
    CLONES = 45  # copies of volumes the VOLUMES phase may have just made
    POWER = 50
    DELETE_GUESTS = 60
    DELETE_VOLUMES = 65
    DELETE_NETWORKS = 70
    DELETE_POOLS = 80
    DELETE_SECRETS = 90


@record
class FieldChange:
    """One field's values: what the spec says, what is defined, what runs."""

    path: str  # JSON Pointer into the spec: /spec/memory, /spec/disks/root/size
    desired: Any
    defined: Any
    live: Any = None
    impact: Impact = Impact.LIVE
    note: str = ""
    call: str = ""  # the libvirt call(s) that make it live: "pinVcpuFlags", "setMemoryFlags"
    waits: str = ""  # why it waits for the guest's next boot instead (from the field registry)

    def as_json(self) -> dict[str, Any]:
        out = {"path": self.path, "desired": self.desired, "defined": self.defined,
               "live": self.live, "impact": str(self.impact)}
        if self.note:
            out["note"] = self.note
        if self.call:
            out["call"] = self.call
        if self.waits:
            out["waits"] = self.waits
        return out


# ------------------------------------------------------------------ actions


@record(kw_only=True)
class Action:
    """One step of a plan. Subclasses name their ``op`` (the JSON tag), phase and outcome."""

    op: ClassVar[str]
    phase: ClassVar[Phase]
    outcome: ClassVar[str] = "updated"  # what a success counts as: created | updated | deleted

    key: ResourceKey
    reason: str = ""
    changes: tuple[FieldChange, ...] = ()
    impact: Impact = Impact.LIVE
    needs: tuple[str, ...] = ()  # "Kind/name" objects whose failure skips this action
    guest: str = ""  # the guest a volume or seed action serves (its failure skips the guest's start)

    @property
    def label(self) -> str:
        return f"{self.op} {self.key.kind} {self.key.name}"

    @property
    def serves(self) -> str | None:
        """The guest this action is for, if any (its own key, or the guest a volume serves)."""
        if self.key.kind == "Guest":
            return self.key.name
        return self.guest or None

    def args(self) -> dict[str, Any]:
        """The type's own parameters, as JSON."""
        return fields_json(self, skip=_BASE_FIELDS)

    def as_json(self) -> dict[str, Any]:
        return {
            "host": self.key.host,
            "kind": self.key.kind,
            "name": self.key.name,
            "op": self.op,
            "impact": str(self.impact),
            "reason": self.reason,
            "changes": [c.as_json() for c in self.changes],
            "args": self.args(),
        }


_BASE_FIELDS = frozenset(f.name for f in dataclasses.fields(Action))


# pools


@record(kw_only=True)
class DefinePool(Action):
    """Define a storage pool of the specs that the host does not have."""

    op: ClassVar[str] = "define-pool"
    phase: ClassVar[Phase] = Phase.POOLS
    outcome: ClassVar[str] = "created"
    impact: Impact = Impact.CREATE


@record(kw_only=True)
class UpdatePool(Action):
    """Bring an existing pool to its spec: autostart, ownership marker, start, definition."""

    op: ClassVar[str] = "update-pool"
    phase: ClassVar[Phase] = Phase.POOLS
    autostart: bool | None = None  # set autostart to this; None: leave it
    adopt: bool = False  # write the ownership marker
    start: bool = False
    redefine: bool = False  # write the definition again (its xmlPatches)


@record(kw_only=True)
class DeletePool(Action):
    """Delete a managed pool gone from the specs (--prune)."""

    op: ClassVar[str] = "delete-pool"
    phase: ClassVar[Phase] = Phase.DELETE_POOLS
    outcome: ClassVar[str] = "deleted"
    impact: Impact = Impact.DELETE


# libvirt secrets


@record(kw_only=True)
class DefineSecret(Action):
    """Define (or give a new value to) the libvirt secret made from a kind: Secret. The value is
    not part of the action: the executor takes it from the loaded specs; plans show its digest."""

    op: ClassVar[str] = "define-secret"
    phase: ClassVar[Phase] = Phase.SECRETS
    uuid: str
    usage: str
    usage_id: str
    digest: str
    exists: bool = False


@record(kw_only=True)
class DeleteSecret(Action):
    """Undefine a managed libvirt secret gone from the specs (--prune)."""

    op: ClassVar[str] = "delete-secret"
    phase: ClassVar[Phase] = Phase.DELETE_SECRETS
    outcome: ClassVar[str] = "deleted"
    impact: Impact = Impact.DELETE
    uuid: str


# networks


@record
class LeaseUpdate:
    """One networkUpdate of a static DHCP lease, on the definition or the running network."""

    command: str  # add | modify | delete
    mac: str
    ip: str
    name: str | None
    target: str  # config | live

    def as_json(self) -> dict[str, Any]:
        return fields_json(self)


@record
class RangeUpdate:
    """The DHCP range of a network's first IPv4 address: the new one and the one it replaces."""

    start: str
    end: str
    old_start: str
    old_end: str

    def as_json(self) -> dict[str, Any]:
        return fields_json(self)


@record
class NetworkEdit:
    """One networkUpdate of an item of a network's keyed list (DNS host, port group…)."""

    command: str  # add | modify | delete
    section: str  # dns-host | dns-srv | dns-txt | portgroup | forward-interface (network_update.py)
    xml: str  # the item's element
    target: str  # config | live | both
    parent: int = -1  # DHCP sections: the <ip> (by position) the item is under; -1: the first IPv4 one

    def as_json(self) -> dict[str, Any]:
        return fields_json(self)


@record(kw_only=True)
class DefineNetwork(Action):
    """Define a network the host does not have."""

    op: ClassVar[str] = "define-network"
    phase: ClassVar[Phase] = Phase.NETWORKS
    outcome: ClassVar[str] = "created"
    impact: Impact = Impact.CREATE


@record(kw_only=True)
class UpdateNetwork(Action):
    """Change a defined network in place: its DHCP range, static leases, keyed items, autostart."""

    op: ClassVar[str] = "update-network"
    phase: ClassVar[Phase] = Phase.NETWORKS
    dhcp_range: RangeUpdate | None = None
    leases: tuple[LeaseUpdate, ...] = ()
    edits: tuple[NetworkEdit, ...] = ()  # networkUpdate of DNS records, port groups, pool devices
    autostart: bool | None = None


@record(kw_only=True)
class StartNetwork(Action):
    """Start a defined network that is not running."""

    op: ClassVar[str] = "start-network"
    phase: ClassVar[Phase] = Phase.NETWORKS


@record(kw_only=True)
class RecreateNetwork(Action):
    """Define a network again: fields changed that need a new definition."""

    op: ClassVar[str] = "recreate-network"
    phase: ClassVar[Phase] = Phase.NETWORKS
    impact: Impact = Impact.RECREATE


@record(kw_only=True)
class DeleteNetwork(Action):
    """Delete a managed network gone from the specs (--prune)."""

    op: ClassVar[str] = "delete-network"
    phase: ClassVar[Phase] = Phase.DELETE_NETWORKS
    outcome: ClassVar[str] = "deleted"
    impact: Impact = Impact.DELETE


# guests


@record(kw_only=True)
class DefineGuest(Action):
    """Define a guest the host does not have."""

    op: ClassVar[str] = "define"
    phase: ClassVar[Phase] = Phase.GUESTS
    outcome: ClassVar[str] = "created"
    impact: Impact = Impact.CREATE


@record(kw_only=True)
class UpdateGuest(Action):
    """Write changed spec fields into a guest's definition, then make what can go live live."""

    op: ClassVar[str] = "update"
    phase: ClassVar[Phase] = Phase.GUESTS
    fields: tuple[str, ...] = ()  # spec fields written into the definition
    keep: tuple[str, ...] = ()  # disk names and NIC MACs whose removal waits for --prune
    removes: tuple[str, ...] = ()  # devices detached ("disk data", "NIC 52:54:…"): the guard counts them
    live: tuple[LiveOp, ...] = ()  # calls on the running guest after the definition is written
    snapshot_first: bool = False  # beforeRestart: snapshot before the definition changes


@record(kw_only=True)
class RecreateGuest(Action):
    """Define a guest again under the same UUID (a change its definition cannot take in place)."""

    op: ClassVar[str] = "recreate"
    phase: ClassVar[Phase] = Phase.GUESTS
    impact: Impact = Impact.RECREATE
    fields: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    removes: tuple[str, ...] = ()
    restart: bool = False  # it ran: start it again afterwards


@record(kw_only=True)
class AttachDisks(Action):
    """Attach disks to a guest once their volumes exist."""

    op: ClassVar[str] = "attach-disks"
    phase: ClassVar[Phase] = Phase.POWER  # after their volumes exist
    disks: tuple[str, ...] = ()


@record(kw_only=True)
class Migrate(Action):
    """Migrate a guest here from ``source`` (disks not on shared storage copied live)."""

    op: ClassVar[str] = "migrate"
    phase: ClassVar[Phase] = Phase.GUESTS
    source: str


@record(kw_only=True)
class Move(Action):
    """Cold move from ``source``: stopped there, its volumes copied, defined here (same UUID)."""

    op: ClassVar[str] = "move"
    phase: ClassVar[Phase] = Phase.GUESTS
    impact: Impact = Impact.RECREATE
    source: str


@record(kw_only=True)
class Start(Action):
    """Start a defined guest (paused when its spec says so)."""

    op: ClassVar[str] = "start"
    phase: ClassVar[Phase] = Phase.POWER
    paused: bool = False


@record(kw_only=True)
class Stop(Action):
    """Shut a guest down (``timeout``: seconds to wait for it)."""

    op: ClassVar[str] = "stop"
    phase: ClassVar[Phase] = Phase.POWER
    timeout: float = 120.0


@record(kw_only=True)
class Restart(Action):
    """Restart a guest so that its definition's next-boot changes take effect."""

    op: ClassVar[str] = "restart"
    phase: ClassVar[Phase] = Phase.POWER
    impact: Impact = Impact.NEXT_BOOT
    timeout: float = 120.0
    paused: bool = False  # state: paused comes back paused
    snapshot_taken: bool = False  # the update before it took the beforeRestart snapshot


@record(kw_only=True)
class Recover(Action):
    """A crashed guest (or one QEMU stopped on an internal error): destroy, then start. A resume
    cannot help it; a graceful shutdown would wait for a guest that no longer runs."""

    op: ClassVar[str] = "recover"
    phase: ClassVar[Phase] = Phase.POWER
    fault: str = ""  # libvirt's state reason, as observed
    paused: bool = False  # state: paused comes back paused
    resume_first: bool = False  # paused for a reason libvirt does not know: destroy only if a resume fails


@record(kw_only=True)
class Suspend(Action):
    """Pause a running guest (state: paused)."""

    op: ClassVar[str] = "suspend"
    phase: ClassVar[Phase] = Phase.POWER


@record(kw_only=True)
class Resume(Action):
    """Resume a paused guest (state: running)."""

    op: ClassVar[str] = "resume"
    phase: ClassVar[Phase] = Phase.POWER


@record(kw_only=True)
class DeleteGuest(Action):
    """Delete a managed guest gone from the specs (--prune), with its volumes when its deletePolicy says so."""

    op: ClassVar[str] = "delete"
    phase: ClassVar[Phase] = Phase.DELETE_GUESTS
    outcome: ClassVar[str] = "deleted"
    impact: Impact = Impact.DELETE
    volumes: tuple[str, ...] = ()  # "pool/volume" deleted with it (deletePolicy: delete)
    running: bool = False
    moved: bool = False  # the old host's copy of a guest whose move was interrupted: no loss


@record(kw_only=True)
class Adopt(Action):
    """Write this instance's ownership record into an existing object that already matches its
    spec (`virtsync adopt`): nothing else of it changes."""

    op: ClassVar[str] = "adopt"
    phase: ClassVar[Phase] = Phase.NETWORKS


# volumes


@record
class ImageSource:
    """Where a new volume's content comes from: a volume of the same pool, or a file."""

    kind: str  # volume | path
    ref: str

    def as_json(self) -> dict[str, Any]:
        return fields_json(self)


@record(kw_only=True)
class CreateVolume(Action):
    """Create a guest disk's volume in a pool: empty, or from an image (a linked or full clone)."""

    op: ClassVar[str] = "create-volume"
    phase: ClassVar[Phase] = Phase.VOLUMES
    outcome: ClassVar[str] = "created"
    impact: Impact = Impact.CREATE
    pool: str
    volume: str
    capacity: int = 0
    format: str = "qcow2"
    source: ImageSource | None = None
    clone: str = "linked"  # linked | full
    disk: str = ""


@record(kw_only=True)
class FetchImage(Action):
    """Download a base image into a pool, checked against its sha256."""

    op: ClassVar[str] = "fetch-image"
    phase: ClassVar[Phase] = Phase.IMAGES
    outcome: ClassVar[str] = "created"
    impact: Impact = Impact.CREATE
    pool: str
    volume: str
    url: str
    sha256: str


@record(kw_only=True)
class UploadFile(Action):
    """Upload a local file (a guest's boot file) into a pool as a volume."""

    op: ClassVar[str] = "upload-file"
    phase: ClassVar[Phase] = Phase.IMAGES
    outcome: ClassVar[str] = "created"
    impact: Impact = Impact.CREATE
    pool: str
    volume: str
    path: str


@record(kw_only=True)
class WriteSeed(Action):
    """Write a guest's cloud-init seed volume."""

    op: ClassVar[str] = "write-seed"
    phase: ClassVar[Phase] = Phase.VOLUMES
    pool: str
    volume: str


@record(kw_only=True)
class ResizeVolume(Action):
    """Grow a volume to ``capacity`` bytes."""

    op: ClassVar[str] = "resize-volume"
    phase: ClassVar[Phase] = Phase.VOLUMES
    pool: str
    volume: str
    capacity: int
    disk: str = ""


@record(kw_only=True)
class DeleteVolume(Action):
    """Delete a managed volume (and its ownership marker, if any)."""

    op: ClassVar[str] = "delete-volume"
    phase: ClassVar[Phase] = Phase.DELETE_VOLUMES
    outcome: ClassVar[str] = "deleted"
    impact: Impact = Impact.DELETE
    pool: str
    volume: str
    marker: str = ""  # a kind: Volume's ownership marker, deleted after it


# kind: Volume (the volume's ownership is a marker volume beside it: fields/volume.py)


@record(kw_only=True)
class DefineVolume(Action):
    """Make an empty volume (storageVolCreateXML), LUKS-encrypted with the libvirt secret
    ``secret_uuid`` when given, then its marker."""

    op: ClassVar[str] = "define-volume"
    phase: ClassVar[Phase] = Phase.VOLUMES
    outcome: ClassVar[str] = "created"
    impact: Impact = Impact.CREATE
    pool: str
    volume: str
    capacity: int
    format: str = "qcow2"
    secret_uuid: str = ""
    marker: str


@record(kw_only=True)
class CloneVolume(Action):
    """Make a volume as a full copy of another: storageVolCreateXMLFrom on this host (any pool),
    or, from another host, a download stream there and an upload stream here; grown to
    ``capacity`` after when it is larger than the source."""

    op: ClassVar[str] = "clone-volume"
    phase: ClassVar[Phase] = Phase.CLONES
    outcome: ClassVar[str] = "created"
    impact: Impact = Impact.CREATE
    pool: str
    volume: str
    from_host: str  # only read there (not a host the action changes)
    from_pool: str
    from_volume: str
    capacity: int = 0
    format: str = "qcow2"
    marker: str


@record(kw_only=True)
class MarkVolume(Action):
    """Write this instance's ownership marker of an existing volume (adopt: true), or rename it
    when the deletePolicy changed (``old_marker`` removed)."""

    op: ClassVar[str] = "mark-volume"
    phase: ClassVar[Phase] = Phase.VOLUMES
    pool: str
    volume: str
    marker: str
    old_marker: str = ""


ACTION_TYPES: tuple[type[Action], ...] = (
    DefinePool, UpdatePool, DefineNetwork, UpdateNetwork, StartNetwork, RecreateNetwork,
    DefineGuest, UpdateGuest, RecreateGuest, AttachDisks, CreateVolume, FetchImage, WriteSeed,
    Migrate, UploadFile, Move, ResizeVolume, Start, Stop, Restart, Recover, Suspend, Resume, DeleteGuest,
    DeleteVolume, DeleteNetwork, DeletePool, Adopt, DefineSecret, DeleteSecret,
    DefineVolume, CloneVolume, MarkVolume,
)
OPS: tuple[str, ...] = tuple(t.op for t in ACTION_TYPES)
CREATES = tuple(t for t in ACTION_TYPES if t.outcome == "created")
DELETES = tuple(t for t in ACTION_TYPES if t.outcome == "deleted")


def outcome_of(op: str) -> str:
    """created | updated | deleted: what a successful action of this op counts as."""

    return next((t.outcome for t in ACTION_TYPES if t.op == op), "updated")


# ------------------------------------------------------------------ plan


@record
class Pending:
    """A change that is defined but waits for a restart: a status, not an action."""

    key: ResourceKey
    reason: str
    changes: tuple[FieldChange, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"host": self.key.host, "kind": self.key.kind, "name": self.key.name,
                "reason": self.reason, "changes": [c.as_json() for c in self.changes]}


@record
class Problem:
    """Something that stops part of the plan (a name clash, a shrink, a missing capability)."""

    key: ResourceKey
    message: str
    severity: str = "error"  # error | warning

    def as_json(self) -> dict[str, Any]:
        return {"host": self.key.host, "kind": self.key.kind, "name": self.key.name,
                "severity": self.severity, "message": self.message}


def touched_hosts(host: str, action: Action) -> tuple[str, ...]:
    """The hosts an action on ``host`` changes: that host, and the source a move or migration
    empties (what writers lock and fence)."""
    source = getattr(action, "source", None)
    return (host, source) if isinstance(source, str) and source and source != host else (host,)


@record
class HostPlan:
    """One host's part of a plan: its actions, pending restarts, problems, drift and unmanaged objects."""

    host: str
    uri: str
    fingerprint: str
    actions: tuple[Action, ...] = ()
    pending: tuple[Pending, ...] = ()
    problems: tuple[Problem, ...] = ()
    unmanaged: tuple[ResourceKey, ...] = ()
    notes: tuple[str, ...] = ()
    error: str = ""  # the host could not be observed
    drift: tuple[ObjectDrift, ...] = ()

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


@record
class Plan:
    """The actions of every host, made for one virtsync instance from specs of one digest."""

    hosts: tuple[HostPlan, ...]
    instance: str
    spec_digest: str
    prune: bool = False

    @property
    def actions(self) -> list[Action]:
        return [a for h in self.hosts for a in h.actions]

    @property
    def has_changes(self) -> bool:
        return any(h.actions for h in self.hosts)

    @property
    def has_errors(self) -> bool:
        return any(h.errors or h.error for h in self.hosts)


@record
class ObjectDrift:
    """One object's standing for the drift report: desired vs defined vs live."""

    key: ResourceKey
    status: str  # in-sync | drift | missing | pending-restart | extra | unmanaged | error
    changes: tuple[FieldChange, ...] = ()
    reconcile: str = "enforce"
    message: str = ""
    info: dict[str, Any] = field(default_factory=dict)  # state, IPs, live memory …

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"host": self.key.host, "kind": self.key.kind, "name": self.key.name,
                               "status": self.status, "reconcile": self.reconcile,
                               "changes": [c.as_json() for c in self.changes]}
        if self.message:
            out["message"] = self.message
        if self.info:
            out["info"] = self.info
        return out
