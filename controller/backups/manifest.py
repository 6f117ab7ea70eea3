"""The manifest of one backup: JSON written next to its data, the only record of it.

Everything a restore or a verify needs is in it, so a backup directory copied anywhere (copyTo)
stands alone: the guest (name, UUID, its persistent definition at that time), the host, the
policy and instance, when, full or incremental and how it was taken, its parent and the whole
chain (backup ids and their checkpoints, full first), whether the guest's file systems were
frozen, and per disk the file, its format, the file it is built on, its size and sha256.
"""

from __future__ import annotations

import json
from dataclasses import asdict, field
from datetime import datetime
from typing import Any

from controller.backups.model import Backup, Kind
from controller.model.records import record

MANIFEST_VERSION = 1
MANIFEST_SUFFIX = ".manifest.json"


class ManifestError(ValueError):
    """A file that is not a manifest this virtsync can read."""


@record
class DiskEntry:
    target: str  # the guest's device name (vda, vdb…)
    file: str  # the backup file's name, in the same directory as the manifest
    format: str  # of the backup file: qcow2
    mode: Kind  # incremental: only the changed clusters, on top of ``backing``
    capacity: int  # the disk's virtual size in bytes
    size: int = 0  # of the file, bytes
    sha256: str = ""
    backing: str | None = None  # the parent backup's file of this disk (a name in the same directory)
    source: str = ""  # the disk's file on the host at backup time
    source_format: str = ""
    pool: str | None = None  # the storage pool holding the disk (where a restore rebuilds it)
    reason: str = ""  # why full when the backup is incremental (a raw disk has no dirty bitmaps)


@record
class Manifest:
    id: str
    guest: str
    uuid: str
    host: str
    instance: str
    policy: str
    created: datetime
    kind: Kind
    method: str  # push: libvirt's backup job of a running guest; copy: a stopped guest's disks copied
    parent: str | None
    chain: tuple[str, ...]  # backup ids, full first, this one last
    checkpoint: str | None
    checkpoints: tuple[str, ...]  # the chain's checkpoints, full first
    quiesced: bool
    disks: tuple[DiskEntry, ...]
    definition: str  # the guest's persistent XML when backed up
    why: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(d.size for d in self.disks)

    @property
    def file_name(self) -> str:
        return manifest_name(self.guest, self.id)

    def backup(self) -> Backup:
        return Backup(self.id, self.created, self.policy, self.kind, self.parent, self.checkpoint)

    def to_json(self) -> str:
        doc = asdict(self)
        doc.pop("extra")
        doc.update(self.extra)
        doc["created"] = self.created.isoformat()
        doc["size"] = self.size
        doc["virtsync"] = {"manifestVersion": MANIFEST_VERSION}
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = "manifest") -> Manifest:
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ManifestError(f"{where}: not JSON: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("virtsync"), dict):
            raise ManifestError(f"{where}: not a virtsync backup manifest")
        version = doc["virtsync"].get("manifestVersion")
        if version != MANIFEST_VERSION:
            raise ManifestError(f"{where}: manifest version {version!r}, this virtsync reads {MANIFEST_VERSION}")
        try:
            disks = tuple(DiskEntry(**d) for d in doc["disks"])
            return cls(
                id=str(doc["id"]), guest=str(doc["guest"]), uuid=str(doc["uuid"]), host=str(doc["host"]),
                instance=str(doc["instance"]), policy=str(doc["policy"]),
                created=datetime.fromisoformat(doc["created"]), kind=doc["kind"], method=str(doc["method"]),
                parent=doc["parent"], chain=tuple(doc["chain"]), checkpoint=doc["checkpoint"],
                checkpoints=tuple(doc["checkpoints"]), quiesced=bool(doc["quiesced"]), disks=disks,
                definition=str(doc["definition"]), why=str(doc.get("why", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"{where}: incomplete manifest ({type(exc).__name__}: {exc})") from None


def manifest_name(guest: str, backup_id: str) -> str:
    return f"{guest}.{backup_id}{MANIFEST_SUFFIX}"


def disk_file_name(guest: str, backup_id: str, target: str) -> str:
    """A backup file's name: the guest first, so a target shared by many guests stays readable."""
    return f"{guest}.{backup_id}.{target}.qcow2"
