"""Impact classes and the typed live operations: the vocabulary the field registry declares
and the planner, the executor and the renderers share (pure data)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar


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


@dataclass(frozen=True)
class LiveOp:
    """A call that brings a change to the object beyond writing its definition: to the running
    guest (hot-plug, balloon) or through an API of its own (autostart)."""

    op: ClassVar[str]

    def as_json(self) -> dict[str, Any]:
        return {"op": self.op, **fields_json(self)}


@dataclass(frozen=True)
class SetMemory(LiveOp):
    op: ClassVar[str] = "setmem"
    bytes: int


@dataclass(frozen=True)
class SetVcpus(LiveOp):
    op: ClassVar[str] = "setvcpus"
    count: int


@dataclass(frozen=True)
class SetAutostart(LiveOp):
    op: ClassVar[str] = "autostart"
    on: bool


@dataclass(frozen=True)
class DetachDisk(LiveOp):
    op: ClassVar[str] = "detach-disk"
    target: str  # the running guest's target dev (vdb)


@dataclass(frozen=True)
class AttachNic(LiveOp):
    """Attach the NIC of the new definition that pairs with the spec's interface ``index``
    (a NIC without a MAC in the spec gets its MAC from libvirt at define), or the one with ``mac``."""

    op: ClassVar[str] = "attach-nic"
    index: int | None = None
    mac: str | None = None


@dataclass(frozen=True)
class DetachNic(LiveOp):
    op: ClassVar[str] = "detach-nic"
    mac: str


LIVE_OP_TYPES: tuple[type[LiveOp], ...] = (SetMemory, SetVcpus, SetAutostart, DetachDisk, AttachNic, DetachNic)
