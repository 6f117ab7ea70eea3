"""Guest snapshots on libvirt: list with virtsync's record, take (internal, or external
disk-only when quiescing or when internal ones are refused; with memory: internal, or an
external memory file beside the disk where internal snapshots are refused), delete, revert.

virtsync records who made a snapshot in its <description>, as JSON:
{"virtsync": {"instance": …, "policy": …, "created": …, "quiesced": …}}. A snapshot
without that record is not virtsync's and is never deleted.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import time
from datetime import UTC, datetime

import libvirt
from lxml import etree

from controller.errors import OperationFailed, UnsupportedError
from controller.fields.xmlutil import parse
from controller.hypervisor.connection import HostConnection
from controller.hypervisor.errors import libvirt_call
from controller.model.records import record


@record
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
    external = any(d.get("snapshot") == "external" for d in root.findall("disks/disk")) or any(
        m.get("snapshot") == "external" for m in root.findall("memory"))
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


def _chain(live_xml: str, target: str) -> list[str]:
    """A disk's files from the active layer down to the base."""
    for disk in parse(live_xml).findall("devices/disk"):
        t = disk.find("target")
        if t is None or t.get("dev") != target:
            continue
        files: list[str] = []
        node: etree._Element | None = disk
        while node is not None:
            src = node.find("source")
            if src is not None and src.get("file"):
                files.append(str(src.get("file")))
            node = node.find("backingStore")
        return files
    return []


def _memory_file(live_xml: str, guest: str, snapshot: str, host: str) -> str:
    """Where an external snapshot keeps a guest's memory: beside its first disk file (in its pool)."""
    for disk in parse(live_xml).findall("devices/disk[@device='disk']"):
        src = disk.find("source")
        if src is not None and src.get("file"):
            return posixpath.join(posixpath.dirname(str(src.get("file"))), f"{guest}.{snapshot}.mem")
    raise UnsupportedError(f"a snapshot of {guest} with its memory (memory: true) needs a disk file to keep "
                           "the memory beside; the guest has none", host=host)


def _wait_job(dom: libvirt.virDomain, target: str, *, ready: bool, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = dom.blockJobInfo(target, 0)
        if not info:
            return
        if ready and info.get("end", 0) and info.get("cur") == info.get("end"):
            return
        time.sleep(0.1)
    raise OperationFailed(f"block job on {target} did not finish in {timeout:g}s")


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
        """Take a snapshot; (quiesced, external). quiesce: auto | required | off.

        ``memory``: a running guest's snapshot holds its memory too (a checkpoint it resumes
        from): internal where libvirt allows, else external, with the memory in a file beside
        the guest's first disk. Such a snapshot is never quiesced (quiesce needs disk-only)."""
        dom = self._dom(guest)
        running = bool(dom.isActive())
        live_xml = dom.XMLDesc(0)
        uefi = "<nvram" in live_xml or "firmware='efi'" in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        # libvirt refuses internal snapshots of pflash (UEFI) guests and of disks that are not qcow2.
        # Nor are they taken once the guest has an external snapshot: an internal snapshot would live in
        # that snapshot's overlay file, and be lost when pruning merges the overlay into its backing file.
        internal_ok = (not uefi and all(d.get("type") == "qcow2" for d in
                                        parse(live_xml).findall("devices/disk[@device='disk']/driver"))
                       and not any(r.external for r in self.list(guest)))
        with_memory = memory and running

        def xml(quiesced: bool, external: bool, memory_file: str | None = None) -> str:
            root = etree.Element("domainsnapshot")
            etree.SubElement(root, "name").text = name
            etree.SubElement(root, "description").text = json.dumps({"virtsync": {
                "instance": self.instance, "policy": policy, "created": created.isoformat(),
                "quiesced": quiesced, "kind": "external" if external else "internal",
                "memory": with_memory}})
            if memory_file:
                etree.SubElement(root, "memory", snapshot="external", file=memory_file)
            elif external:
                etree.SubElement(root, "memory", snapshot="no")
            return etree.tostring(root, encoding="unicode")

        disk_only = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
        if with_memory:
            with libvirt_call(self.host, f"snapshot {guest} with its memory"):
                if internal_ok:
                    dom.snapshotCreateXML(xml(False, False), 0)  # internal: a running guest's memory included
                    return False, False
                dom.snapshotCreateXML(xml(False, True, _memory_file(live_xml, guest, name, self.host)),
                                      libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
                return False, True
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
            if not internal_ok:  # pflash (UEFI) guests, raw disks, overlays: disk-only, external
                flags = disk_only if running else libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
                dom.snapshotCreateXML(xml(False, True), flags)
                return False, True
            dom.snapshotCreateXML(xml(False, False), 0)  # internal; a running guest's memory included
            return False, False

    def delete(self, guest: str, name: str) -> None:
        dom = self._dom(guest)
        with libvirt_call(self.host, f"delete snapshot {name} of {guest}"):
            snap = dom.snapshotLookupByName(name, 0)
            xml = snap.getXMLDesc(0)
            if "snapshot='external'" not in xml:
                snap.delete(0)
                return
            if not dom.isActive():
                raise UnsupportedError(f"the external snapshot {name} of {guest} is merged with a block commit, "
                                       "which needs the guest running; left in place", host=self.host)
            root = parse(xml)
            for disk in root.findall("disks/disk"):
                source = disk.find("source")
                if disk.get("snapshot") == "external" and source is not None and source.get("file"):
                    self._merge_overlay(dom, guest, str(disk.get("name")), str(source.get("file")))
            # the overlays are merged: only libvirt's record of the snapshot is left to remove
            snap.delete(libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)
            for mem in root.findall("memory[@snapshot='external']"):
                if mem.get("file"):  # the saved memory belongs to that point in time only
                    self._remove_file(str(mem.get("file")))

    def _merge_overlay(self, dom: libvirt.virDomain, guest: str, target: str, overlay: str) -> None:
        """Commit the overlay a snapshot created into its backing file: the snapshot's point in
        time is no longer kept apart. Active layer: commit and pivot; deeper: plain commit."""
        chain = _chain(dom.XMLDesc(0), target)
        if overlay not in chain or chain.index(overlay) == len(chain) - 1:
            return  # already merged (an earlier, interrupted prune)
        at = chain.index(overlay)
        if at == 0:
            dom.blockCommit(target, None, None, 0, libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE)
            _wait_job(dom, target, ready=True)
            dom.blockJobAbort(target, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
        else:
            dom.blockCommit(target, chain[at + 1], overlay, 0, 0)
        _wait_job(dom, target, ready=False)
        self._remove_file(overlay)

    def _remove_file(self, path: str) -> None:
        """Delete a file libvirt made (an overlay, a memory file) through the pool holding it; the
        pool learns of such files only when refreshed. A file outside pools stays (it holds no data
        a guest uses)."""
        conn = self.conn.get()
        with contextlib.suppress(libvirt.libvirtError):
            conn.storageVolLookupByPath(path).delete(0)
            return
        with contextlib.suppress(libvirt.libvirtError):
            for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
                target = parse(pool.XMLDesc(0)).findtext("target/path") or ""
                if target and posixpath.dirname(path) == target.rstrip("/"):
                    pool.refresh(0)
                    conn.storageVolLookupByPath(path).delete(0)
                    return

    def revert(self, guest: str, name: str) -> None:
        dom = self._dom(guest)
        with libvirt_call(self.host, f"revert {guest} to {name}"):
            snap = dom.snapshotLookupByName(name, 0)
            if "snapshot='external'" in snap.getXMLDesc(0):
                raise UnsupportedError(f"{name} is an external snapshot: libvirt 9.0 cannot revert to "
                                       "one, and virtsync does not do it by itself yet", host=self.host)
            dom.revertToSnapshot(snap, 0)
