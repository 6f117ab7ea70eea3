"""Guest snapshots on libvirt: list with virtsync's record, take (internal, or external
disk-only when quiescing or when internal ones are refused), delete, revert.

virtsync records who made a snapshot in its <description>, as JSON:
{"virtsync": {"instance": …, "policy": …, "created": …, "quiesced": …}}. A snapshot
without that record is not virtsync's and is never deleted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import libvirt
from lxml import etree

from controller.errors import OperationFailed, UnsupportedError
from controller.hypervisor.connection import HostConnection
from controller.hypervisor.errors import libvirt_call
from controller.hypervisor.xmlutil import parse


@dataclass(frozen=True)
class SnapshotRecord:
    name: str
    created: datetime
    external: bool
    policy: str | None  # None: not made by virtsync (or by another instance)
    quiesced: bool | None
    state: str


def _record(xml: str, instance: str) -> SnapshotRecord:
    root = parse(xml)
    created = datetime.fromtimestamp(int(root.findtext("creationTime") or 0), UTC)
    external = any(d.get("snapshot") == "external" for d in root.findall("disks/disk"))
    policy = quiesced = None
    try:
        meta = json.loads(root.findtext("description") or "{}").get("virtsync") or {}
    except (ValueError, AttributeError):
        meta = {}
    if isinstance(meta, dict) and meta.get("instance") == instance and meta.get("policy"):
        policy = str(meta["policy"])
        quiesced = meta.get("quiesced")
        if meta.get("created"):
            created = datetime.fromisoformat(str(meta["created"]))
    return SnapshotRecord(root.findtext("name") or "", created, external, policy,
                          quiesced if isinstance(quiesced, bool) else None, root.findtext("state") or "")


class SnapshotOps:
    def __init__(self, conn: HostConnection, instance: str):
        self.conn = conn
        self.host = conn.host
        self.instance = instance

    def _dom(self, guest: str) -> libvirt.virDomain:
        with libvirt_call(self.host, f"look up guest {guest}"):
            return self.conn.get().lookupByName(guest)

    def list(self, guest: str) -> list[SnapshotRecord]:
        dom = self._dom(guest)
        with libvirt_call(self.host, f"list snapshots of {guest}"):
            return [_record(s.getXMLDesc(0), self.instance) for s in dom.listAllSnapshots(0)]

    def block_job_running(self, guest: str) -> bool:
        dom = self._dom(guest)
        if not dom.isActive():
            return False
        for disk in parse(dom.XMLDesc(0)).findall("devices/disk/target"):
            with libvirt_call(self.host, f"read block jobs of {guest}"):
                if dom.blockJobInfo(disk.get("dev"), 0):
                    return True
        return False

    def take(self, guest: str, name: str, policy: str, created: datetime, *, quiesce: str,
             memory: bool) -> tuple[bool, bool]:
        """Take a snapshot; (quiesced, external). quiesce: auto | required | off."""
        dom = self._dom(guest)
        running = bool(dom.isActive())
        uefi = "<nvram" in dom.XMLDesc(0) or "firmware='efi'" in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)

        def xml(quiesced: bool, external: bool) -> str:
            root = etree.Element("domainsnapshot")
            etree.SubElement(root, "name").text = name
            etree.SubElement(root, "description").text = json.dumps({"virtsync": {
                "instance": self.instance, "policy": policy, "created": created.isoformat(),
                "quiesced": quiesced, "kind": "external" if external else "internal"}})
            if external:
                etree.SubElement(root, "memory", snapshot="no")
            return etree.tostring(root, encoding="unicode")

        disk_only = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
        if quiesce != "off" and running:
            try:
                dom.snapshotCreateXML(xml(True, True), disk_only | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE)
                return True, True
            except libvirt.libvirtError as exc:
                if quiesce == "required":
                    raise OperationFailed(f"snapshot of {guest} needs a quiesced file system (quiesce: "
                                          f"required), and the guest agent could not freeze it: "
                                          f"{exc.get_error_message()}", host=self.host) from None
        with libvirt_call(self.host, f"snapshot {guest}"):
            if uefi:  # libvirt refuses internal snapshots of pflash guests: disk-only, external
                flags = disk_only if running else libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
                dom.snapshotCreateXML(xml(False, True), flags)
                return False, True
            dom.snapshotCreateXML(xml(False, False), 0)  # internal; a running guest's memory included
            return False, False

    def delete(self, guest: str, name: str) -> None:
        dom = self._dom(guest)
        with libvirt_call(self.host, f"delete snapshot {name} of {guest}"):
            snap = dom.snapshotLookupByName(name, 0)
            if "snapshot='external'" in snap.getXMLDesc(0):
                raise UnsupportedError(f"deleting the external snapshot {name} of {guest} needs a "
                                       "block commit, which virtsync does not do yet; left in place",
                                       host=self.host)
            snap.delete(0)

    def revert(self, guest: str, name: str) -> None:
        dom = self._dom(guest)
        with libvirt_call(self.host, f"revert {guest} to {name}"):
            snap = dom.snapshotLookupByName(name, 0)
            if "snapshot='external'" in snap.getXMLDesc(0):
                raise UnsupportedError(f"{name} is an external snapshot: libvirt 9.0 cannot revert to "
                                       "one, and virtsync does not do it by itself yet", host=self.host)
            dom.revertToSnapshot(snap, 0)
