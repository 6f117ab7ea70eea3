"""Impact classes and the typed live operations: the vocabulary the field registry declares
and the planner, the executor and the renderers share (pure data)."""

from __future__ import annotations

import dataclasses
from enum import StrEnum
from typing import Any, ClassVar

from controller.model.records import record


class Impact(StrEnum):
    CREATE = "create"
    LIVE = "live"  # applied to the running object and its definition, no restart
    NEXT_BOOT = "next-boot"  # written to the definition; takes effect at the next start
    RECREATE = "recreate"  # undefine + define under the same UUID; needs the guest stopped
    DELETE = "delete"


def fields_json(obj: Any, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A dataclass's fields as JSON (nested typed values through their own ``as_json``)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if f.name in skip:
            continue
        value = getattr(obj, f.name)
        if isinstance(value, tuple):
            value = [v.as_json() if hasattr(v, "as_json") else v for v in value]
        elif hasattr(value, "as_json"):
            value = value.as_json()
        out[f.name] = value
    return out


@record
class LiveOp:
    """A call that brings a change to the object beyond writing its definition: to the running
    guest (hot-plug, balloon) or through an API of its own (autostart)."""

    op: ClassVar[str]
    call: ClassVar[str]  # the libvirt-python method that makes it (plans name it per change)

    def as_json(self) -> dict[str, Any]:
        return {"op": self.op, **fields_json(self)}


@record
class SetMemory(LiveOp):
    op: ClassVar[str] = "setmem"
    call: ClassVar[str] = "setMemoryFlags"
    bytes: int


@record
class SetVcpus(LiveOp):
    op: ClassVar[str] = "setvcpus"
    call: ClassVar[str] = "setVcpusFlags"
    count: int


@record
class SetAutostart(LiveOp):
    op: ClassVar[str] = "autostart"
    call: ClassVar[str] = "setAutostart"
    on: bool


@record
class DetachDisk(LiveOp):
    op: ClassVar[str] = "detach-disk"
    call: ClassVar[str] = "detachDeviceFlags"
    target: str  # the running guest's target dev (vdb)


@record
class AttachNic(LiveOp):
    """Attach the NIC of the new definition that pairs with the spec's interface ``index``
    (a NIC without a MAC in the spec gets its MAC from libvirt at define), or the one with ``mac``."""

    op: ClassVar[str] = "attach-nic"
    call: ClassVar[str] = "attachDeviceFlags"
    index: int | None = None
    mac: str | None = None


@record
class DetachNic(LiveOp):
    op: ClassVar[str] = "detach-nic"
    call: ClassVar[str] = "detachDeviceFlags"
    mac: str


@record
class SetBlockIoTune(LiveOp):
    """A running disk's I/O limits (virDomain.setBlockIoTune): every modelled limit is sent, 0 for
    none, so limits the spec no longer gives are lifted too."""

    op: ClassVar[str] = "blkiotune"
    call: ClassVar[str] = "setBlockIoTune"
    target: str  # the running guest's target dev (vdb)
    total_bytes_sec: int = 0
    read_bytes_sec: int = 0
    write_bytes_sec: int = 0
    total_iops_sec: int = 0
    read_iops_sec: int = 0
    write_iops_sec: int = 0

    def params(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "target"}


@record
class SetInterfaceBandwidth(LiveOp):
    """A running NIC's traffic shaping (virDomain.setInterfaceParameters); 0 is none (an average of 0
    removes that direction's limit)."""

    op: ClassVar[str] = "domiftune"
    call: ClassVar[str] = "setInterfaceParameters"
    mac: str
    inbound_average: int = 0
    inbound_peak: int = 0
    inbound_burst: int = 0
    outbound_average: int = 0
    outbound_peak: int = 0
    outbound_burst: int = 0

    def params(self) -> dict[str, int]:
        """libvirt's typed parameter names: inbound.average …"""
        return {f.name.replace("_", ".", 1): getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "mac"}


@record
class SetLinkState(LiveOp):
    """A running NIC's link (updateDeviceFlags with its live XML's <link state> changed)."""

    op: ClassVar[str] = "link-state"
    call: ClassVar[str] = "updateDeviceFlags"
    mac: str
    state: str  # up | down


@record
class UpdateGraphics(LiveOp):
    """The running guest's graphics console takes the new definition's (its password): no argument,
    so no plan carries the password; the executor reads it from the definition it just wrote."""

    op: ClassVar[str] = "update-graphics"
    call: ClassVar[str] = "updateDeviceFlags"


@record
class PinVcpu(LiveOp):
    """A running vCPU's host CPUs (virDomain.pinVcpuFlags); an empty set: every host CPU (unpinned)."""

    op: ClassVar[str] = "vcpupin"
    call: ClassVar[str] = "pinVcpuFlags"
    vcpu: int
    cpuset: str = ""


@record
class PinEmulator(LiveOp):
    """The host CPUs of a running guest's emulator threads (virDomain.pinEmulator); empty: every one."""

    op: ClassVar[str] = "emulatorpin"
    call: ClassVar[str] = "pinEmulator"
    cpuset: str = ""


@record
class PinIOThread(LiveOp):
    """A running I/O thread's host CPUs (virDomain.pinIOThread); empty: every host CPU."""

    op: ClassVar[str] = "iothreadpin"
    call: ClassVar[str] = "pinIOThread"
    iothread: int
    cpuset: str = ""


@record
class SetSchedulerParameters(LiveOp):
    """The running guest's CPU shares and bandwidth (virDomain.setSchedulerParametersFlags); a value
    the spec no longer gives goes back to the host's default (1024 shares, 100000 µs, no quota)."""

    op: ClassVar[str] = "schedinfo"
    call: ClassVar[str] = "setSchedulerParametersFlags"
    cpu_shares: int = 1024
    vcpu_period: int = 100000
    vcpu_quota: int = -1

    def params(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


TUNING_OP_TYPES: tuple[type[LiveOp], ...] = (PinVcpu, PinEmulator, PinIOThread, SetSchedulerParameters)
LIVE_OP_TYPES: tuple[type[LiveOp], ...] = (SetMemory, SetVcpus, SetAutostart, DetachDisk, AttachNic, DetachNic,
                                           SetBlockIoTune, SetInterfaceBandwidth, SetLinkState, UpdateGraphics,
                                           *TUNING_OP_TYPES)
