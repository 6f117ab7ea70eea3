"""Guest backups on libvirt: checkpoints and push-mode backup jobs, stores, verify, restore.

A running guest is backed up by ``backupBegin`` in push mode, with a checkpoint created in the
same call (its dirty bitmaps mark the point the next incremental starts from). virtsync makes
every target file itself, as a storage volume: a full backup's is an empty qcow2 v3, an
incremental's a qcow2 whose backing file is the previous backup's file of that disk, and the
job is begun with VIR_DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL, so QEMU writes only the changed
clusters into it and every backup file *is* the disk at its point in time (read through its
backing chain). A stopped guest's disks are copied whole (libvirt's volume clone, qemu-img
convert). Every file is a volume of a dir pool (the target's, or a transient one virtsync makes
for a ``{path: DIR}`` target), so all of it goes through libvirt: the manifest is uploaded with a
libvirt stream, digests are taken from a stream download, and ``copyTo`` streams the files to
where virtsync runs.

virtsync records who made a checkpoint in its <description>, as JSON
{"virtsync": {"instance": …, "policy": …}}; checkpoints without it are never deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import libvirt
from lxml import etree

from controller.backups.manifest import MANIFEST_SUFFIX, DiskEntry, Manifest, ManifestError, disk_file_name
from controller.backups.model import Backup, Kind
from controller.errors import GuardRefusal, ObjectNotFound, OperationFailed, UnsupportedError, VirtsyncError
from controller.fields.xmlutil import parse
from controller.hypervisor.connection import HostConnection
from controller.hypervisor.errors import is_not_found, libvirt_call
from controller.hypervisor.ownership import NAMESPACE as OWNER_NS
from controller.model.records import record
from controller.spec.models import BackupTarget

CHUNK = 1 << 20
ZST = ".zst"
Progress = Callable[[str, int, int], None]  # (what, bytes done, bytes total)


@record
class GuestDisk:
    target: str
    source: str
    format: str
    capacity: int
    pool: str | None
    bitmaps: bool  # can carry dirty bitmaps (qcow2 v3): incrementals possible
    reason: str  # why not, when not


# ------------------------------------------------------------------------------ stores


class Store(Protocol):
    """Where backup files are: a directory on the guest's host (a pool) or where virtsync runs."""

    where: str

    def names(self) -> list[str]: ...
    def read(self, name: str, sink: Callable[[bytes], object]) -> None: ...
    def write(self, name: str, data: bytes) -> None: ...
    def delete(self, name: str) -> None: ...


class PoolStore:
    """Files as the volumes of a dir pool, read and written with libvirt streams."""

    def __init__(self, conn: libvirt.virConnect, pool: libvirt.virStoragePool, host: str):
        self.conn, self.pool, self.host = conn, pool, host
        self.path = parse(pool.XMLDesc(0)).findtext("target/path") or ""
        self.where = f"{host}:{self.path} (pool {pool.name()})"

    def file(self, name: str) -> str:
        return f"{self.path.rstrip('/')}/{name}"

    def names(self) -> list[str]:
        with libvirt_call(self.host, f"list {self.where}"):
            self.pool.refresh(0)
            return sorted(v.name() for v in self.pool.listAllVolumes(0))

    def volume(self, name: str) -> libvirt.virStorageVol:
        with libvirt_call(self.host, f"look up {name} in {self.where}"):
            return self.pool.storageVolLookupByName(name)

    def read(self, name: str, sink: Callable[[bytes], object]) -> None:
        vol = self.volume(name)
        with libvirt_call(self.host, f"download {name} from {self.where}"):
            stream = self.conn.newStream(0)
            vol.download(stream, 0, 0, 0)
            try:
                stream.recvAll(lambda _s, data, _o: sink(data), None)
                stream.finish()
            except BaseException:
                with contextlib.suppress(libvirt.libvirtError):
                    stream.abort()
                raise

    def write(self, name: str, data: bytes) -> None:
        xml = (f"<volume><name>{name}</name><capacity>{len(data)}</capacity>"
               "<target><format type='raw'/></target></volume>")
        with libvirt_call(self.host, f"write {name} into {self.where}"):
            vol = self.pool.createXML(xml, 0)
            stream = self.conn.newStream(0)
            vol.upload(stream, 0, len(data), 0)
            view = memoryview(data)
            offset = 0
            while offset < len(data):
                offset += stream.send(bytes(view[offset:offset + CHUNK]))
            stream.finish()

    def upload_file(self, name: str, path: Path, fmt: str) -> str:
        """A local file as a new volume (its bytes as they are); the volume's path."""
        size = path.stat().st_size
        xml = (f"<volume><name>{name}</name><capacity>{size}</capacity>"
               f"<target><format type='{fmt}'/></target></volume>")
        with libvirt_call(self.host, f"upload {name} into {self.where}"), path.open("rb") as src:
            vol = self.pool.createXML(xml, 0)
            stream = self.conn.newStream(0)
            vol.upload(stream, 0, size, 0)
            stream.sendAll(lambda _s, n, f: f.read(n), src)
            stream.finish()
            return str(vol.path())

    def delete(self, name: str) -> None:
        try:
            vol = self.pool.storageVolLookupByName(name)
        except libvirt.libvirtError as exc:
            if is_not_found(exc):
                return
            raise
        with libvirt_call(self.host, f"delete {name} from {self.where}"):
            vol.delete(0)


class LocalStore:
    """Files in a directory where virtsync runs (a policy's copyTo). With ``compress`` the disk
    files are kept as FILE.zst (zstd) and read back through ``zstd -d``; manifests stay plain."""

    def __init__(self, path: Path, compress: bool = False):
        self.path = path
        self.compress = compress
        self.where = str(path)

    def names(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.name.removesuffix(ZST) for p in self.path.iterdir() if p.is_file()
                      and not p.name.startswith("."))

    def read(self, name: str, sink: Callable[[bytes], object]) -> None:
        packed = self.path / f"{name}{ZST}"
        if not packed.exists():
            with (self.path / name).open("rb") as f:
                while chunk := f.read(CHUNK):
                    sink(chunk)
            return
        proc = subprocess.Popen(["zstd", "-q", "-d", "-c", str(packed)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdout is not None
        while chunk := proc.stdout.read(CHUNK):
            sink(chunk)
        err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
        if proc.wait() != 0:
            raise OperationFailed(f"{packed}: zstd cannot decompress it: {err or f'exit {proc.returncode}'}")

    def write(self, name: str, data: bytes) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f".{name}.part"
        tmp.write_bytes(data)
        tmp.replace(self.path / name)

    def put(self, name: str, plain: Path) -> None:
        """A finished file moved in (compressed first when the store compresses)."""
        if not self.compress:
            plain.replace(self.path / name)
            return
        part = self.path / f".{name}{ZST}.part"
        done = subprocess.run(["zstd", "-q", "-f", "-T0", "-o", str(part), str(plain)], capture_output=True,
                              text=True, timeout=3600)
        plain.unlink()
        if done.returncode != 0:
            part.unlink(missing_ok=True)
            raise OperationFailed(f"zstd {name}: {done.stderr.strip()}")
        part.replace(self.path / f"{name}{ZST}")

    def plain_file(self, name: str, scratch: Path) -> Path:
        """The file as a plain one: itself, or decompressed into ``scratch``."""
        if not (self.path / f"{name}{ZST}").exists():
            return self.path / name
        out = scratch / name
        download(self, name, out)
        return out

    def delete(self, name: str) -> None:
        for p in (self.path / name, self.path / f"{name}{ZST}"):
            p.unlink(missing_ok=True)


def read_manifests(store: Store, guest: str | None = None) -> tuple[list[Manifest], list[str]]:
    """The manifests in a store (of one guest, or all), and the problems of unreadable ones."""
    found, problems = [], []
    for name in store.names():
        if not name.endswith(MANIFEST_SUFFIX) or (guest is not None and not name.startswith(f"{guest}.")):
            continue
        chunks: list[bytes] = []
        store.read(name, chunks.append)
        try:
            m = Manifest.from_json(b"".join(chunks).decode(errors="replace"), f"{store.where}/{name}")
        except ManifestError as exc:
            problems.append(str(exc))
            continue
        if guest is None or m.guest == guest:
            found.append(m)
    return sorted(found, key=lambda m: (m.guest, m.created, m.id)), problems


def download(store: Store, name: str, dest: Path) -> str:
    """Stream one file of a store into ``dest``; its sha256."""
    h = hashlib.sha256()
    with dest.open("wb") as out:
        def sink(data: bytes) -> None:
            h.update(data)
            out.write(data)
        store.read(name, sink)
    return h.hexdigest()


def digest(store: Store, name: str) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0

    def sink(data: bytes) -> None:
        nonlocal size
        h.update(data)
        size += len(data)

    store.read(name, sink)
    return h.hexdigest(), size


# --------------------------------------------------------------------- verify (local)


def qemu_img_check(path: Path) -> str | None:
    """``qemu-img check`` of one qcow2 file alone (its backing file is not opened): None when clean."""
    spec = json.dumps({"driver": "qcow2", "backing": None, "file": {"driver": "file", "filename": str(path)}})
    try:
        done = subprocess.run(["qemu-img", "check", "-U", f"json:{spec}"], capture_output=True, text=True,
                              timeout=600)
    except FileNotFoundError:
        return "qemu-img is not installed where virtsync runs"
    if done.returncode == 0:
        return None
    return (done.stdout + done.stderr).strip().splitlines()[-1] if (done.stdout + done.stderr).strip() else \
        f"qemu-img check exit {done.returncode}"


def chain_spec(files: list[Path]) -> str:
    """A json: filename opening ``files`` (full first) as one qcow2 chain, whatever their headers say."""
    node: dict[str, object] | None = None
    for f in files:
        node = {"driver": "qcow2", "file": {"driver": "file", "filename": str(f)}, "backing": node}
    return "json:" + json.dumps(node)


def verify_backup(store: Store, m: Manifest, by_id: dict[str, Manifest]) -> list[str]:
    """Problems of one backup: its chain, its files' presence and digests, ``qemu-img check``."""
    problems = []
    missing = [i for i in m.chain if i not in by_id]
    if missing:
        problems.append(f"chain incomplete: no manifest of {', '.join(missing)}")
    names = set(store.names())
    with tempfile.TemporaryDirectory(prefix="virtsync-verify-") as tmp:
        for d in m.disks:
            if d.file not in names:
                problems.append(f"{d.target}: {d.file} is missing")
                continue
            local = Path(tmp) / d.file
            try:
                sha = download(store, d.file, local)
            except VirtsyncError as exc:
                problems.append(f"{d.target}: {d.file}: {exc}")
                continue
            if sha != d.sha256:
                problems.append(f"{d.target}: {d.file} sha256 {sha} differs from the manifest's {d.sha256}")
            if d.format == "qcow2" and (why := qemu_img_check(local)):
                problems.append(f"{d.target}: qemu-img check {d.file}: {why}")
            local.unlink()
            parent = by_id.get(m.parent or "")
            if d.backing and parent is not None and d.backing not in {p.file for p in parent.disks}:
                problems.append(f"{d.target}: built on {d.backing}, which {parent.id} does not hold")
    return problems


# ------------------------------------------------------------------------ the adapter


class BackupOps:
    def __init__(self, conn: HostConnection, instance: str):
        self.conn = conn
        self.host = conn.host
        self.instance = instance

    # ---- what the host can do

    def unsupported(self) -> str | None:
        """Why this host cannot back up guests (None: it can)."""
        c = self.conn.get()
        with libvirt_call(self.host, "read the driver"):
            driver = c.getType()
        if driver != "QEMU":
            return (f"libvirt's {driver} driver on {self.host} has no backup API (virDomainBackupBegin, "
                    "checkpoints): no backups are taken there")
        return None

    # ---- targets

    @contextlib.contextmanager
    def store(self, target: BackupTarget) -> Iterator[PoolStore]:
        """The target's pool; for ``{path: DIR}`` an active pool on DIR, else a transient dir pool
        virtsync makes for the while and destroys after (DIR is created if missing)."""
        c = self.conn.get()
        if target.pool is not None:
            try:
                pool = c.storagePoolLookupByName(target.pool)
            except libvirt.libvirtError as exc:
                if is_not_found(exc):
                    raise ObjectNotFound(f"backup target pool {target.pool} does not exist", host=self.host) from None
                raise
            with libvirt_call(self.host, f"read pool {target.pool}"):
                xml = parse(pool.XMLDesc(0))
                if xml.get("type") != "dir":
                    raise UnsupportedError(f"backup target pool {target.pool} is a {xml.get('type')} pool; "
                                           "backups go to dir pools", host=self.host)
                if not pool.isActive():
                    raise OperationFailed(f"backup target pool {target.pool} is not active", host=self.host)
            yield PoolStore(c, pool, self.host)
            return
        path = str(target.path).rstrip("/") or "/"
        with libvirt_call(self.host, "list pools"):
            for pool in c.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
                x = parse(pool.XMLDesc(0))
                if x.get("type") == "dir" and (x.findtext("target/path") or "").rstrip("/") == path:
                    yield PoolStore(c, pool, self.host)
                    return
        name = "virtsync-backup-" + hashlib.sha256(path.encode()).hexdigest()[:12]
        pool_xml = f"<pool type='dir'><name>{name}</name><target><path>{path}</path></target></pool>"
        with libvirt_call(self.host, f"open backup directory {path}"):
            pool = c.storagePoolCreateXML(pool_xml, libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD)
        try:
            yield PoolStore(c, pool, self.host)
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                pool.destroy()  # transient: gone, the files stay

    # ---- guests

    def _dom(self, guest: str) -> libvirt.virDomain:
        with libvirt_call(self.host, f"look up guest {guest}"):
            return self.conn.get().lookupByName(guest)

    def running(self, guest: str) -> bool:
        return bool(self._dom(guest).isActive())

    def checkpoints(self, guest: str) -> dict[str, str]:
        """This instance's checkpoints on the guest: name → policy."""
        dom = self._dom(guest)
        out = {}
        with libvirt_call(self.host, f"list checkpoints of {guest}"):
            for cp in dom.listAllCheckpoints(0):
                root = parse(cp.getXMLDesc(libvirt.VIR_DOMAIN_CHECKPOINT_XML_NO_DOMAIN))
                try:
                    meta = json.loads(root.findtext("description") or "{}").get("virtsync") or {}
                except (ValueError, AttributeError):
                    continue
                if isinstance(meta, dict) and meta.get("instance") == self.instance and meta.get("policy"):
                    out[root.findtext("name") or ""] = str(meta["policy"])
        return out

    def delete_checkpoint(self, guest: str, name: str) -> None:
        if name not in self.checkpoints(guest):
            raise OperationFailed(f"checkpoint {name} of {guest} was not made by virtsync instance "
                                  f"{self.instance}: left alone", host=self.host)
        dom = self._dom(guest)
        with libvirt_call(self.host, f"delete checkpoint {name} of {guest}"):
            dom.checkpointLookupByName(name, 0).delete(0)

    def disks(self, guest: str) -> list[GuestDisk]:
        """The guest's file-backed disks (CD-ROMs and floppies are not backed up)."""
        dom = self._dom(guest)
        c = self.conn.get()
        out = []
        with libvirt_call(self.host, f"read the disks of {guest}"):
            xml = parse(dom.XMLDesc(0))
        for disk in xml.findall("devices/disk[@device='disk']"):
            source = disk.find("source")
            target = disk.find("target")
            if disk.get("type") != "file" or source is None or target is None or not source.get("file"):
                continue
            path, dev = str(source.get("file")), str(target.get("dev"))
            driver = disk.find("driver")
            fmt = (driver.get("type") if driver is not None else None) or "raw"
            with libvirt_call(self.host, f"read disk {dev} of {guest}"):
                capacity = int(dom.blockInfo(dev, 0)[0])
            pool, compat = None, None
            try:
                vol = c.storageVolLookupByPath(path)
                pool = vol.storagePoolLookupByVolume().name()
                compat = parse(vol.XMLDesc(0)).findtext("target/compat")
            except libvirt.libvirtError:
                pass  # a file outside pools says no compat: it is taken for qcow2 v3 (libvirt refuses v2)
            if fmt != "qcow2":
                bitmaps, why = False, f"{fmt} disk: no dirty bitmaps (only qcow2 v3 carries them), backed up whole"
            elif compat == "0.10":
                bitmaps, why = False, "qcow2 v2 (compat 0.10) disk: no dirty bitmaps, backed up whole"
            else:
                bitmaps, why = True, ""
            out.append(GuestDisk(dev, path, fmt, capacity, pool, bitmaps, why))
        return out

    # ---- taking

    def take(self, guest: str, backup: Backup, parent: Manifest | None, store: PoolStore, *, quiesce: str,
             why: str = "", progress: Progress | None = None) -> Manifest:
        """Take one backup into ``store`` and write its manifest (last: a backup without one
        is no backup); on any failure, what was made is removed again."""
        dom = self._dom(guest)
        running = bool(dom.isActive())
        disks = self.disks(guest)
        if not disks:
            raise UnsupportedError(f"{guest} has no file-backed disk to back up", host=self.host)
        with libvirt_call(self.host, f"read {guest}'s definition"):
            definition = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            uuid = dom.UUIDString()
        made: list[str] = []
        checkpoint: str | None = None
        try:
            if running:
                entries, checkpoint, quiesced = self._push(dom, guest, backup, parent, disks, store, made,
                                                           quiesce, progress)
                method = "push"
            else:
                entries, quiesced, method = self._copy(guest, backup, disks, store, made, progress), False, "copy"
            entries = [replace(e, sha256=sha, size=size) for e in entries for sha, size in [digest(store, e.file)]]
            kind: Kind = "incremental" if any(e.mode == "incremental" for e in entries) else "full"
            chain = (*parent.chain, backup.id) if kind == "incremental" and parent else (backup.id,)
            cps = (*parent.checkpoints,) if kind == "incremental" and parent else ()
            if kind == "full" and backup.kind == "incremental":
                why = "full: " + "; ".join(e.reason for e in entries if e.reason)
            m = Manifest(id=backup.id, guest=guest, uuid=uuid, host=self.host, instance=self.instance,
                         policy=backup.policy, created=backup.created, kind=kind, method=method,
                         parent=parent.id if kind == "incremental" and parent else None, chain=chain,
                         checkpoint=checkpoint, checkpoints=(*cps, checkpoint) if checkpoint else cps,
                         quiesced=quiesced, disks=tuple(entries), definition=definition, why=why)
            store.write(m.file_name, m.to_json().encode())
            return m
        except BaseException:
            for name in reversed(made):
                with contextlib.suppress(Exception):
                    store.delete(name)
            if checkpoint is not None:
                with contextlib.suppress(Exception):
                    dom.checkpointLookupByName(checkpoint, 0).delete(0)
            raise

    def _push(self, dom: libvirt.virDomain, guest: str, backup: Backup, parent: Manifest | None,
              disks: list[GuestDisk], store: PoolStore, made: list[str], quiesce: str,
              progress: Progress | None) -> tuple[list[DiskEntry], str | None, bool]:
        frozen = False
        if quiesce != "never":
            try:
                dom.fsFreeze(None, 0)
                frozen = True
            except libvirt.libvirtError as exc:
                if quiesce == "required":
                    raise OperationFailed(f"backup of {guest} needs its file systems frozen (quiesce: required), "
                                          f"and the guest agent could not freeze them: {exc.get_error_message()}; "
                                          "no backup was made", host=self.host) from None
        try:
            before = {d.target: d for d in (parent.disks if parent else ())}
            root = etree.Element("domainbackup", mode="push")
            xdisks = etree.SubElement(root, "disks")
            entries = []
            cp_disks = []
            for d in disks:
                name = disk_file_name(guest, backup.id, d.target)
                prev = before.get(d.target)
                inc = (backup.kind == "incremental" and d.bitmaps and prev is not None and parent is not None
                       and parent.checkpoint is not None)
                reason = "" if inc else d.reason or ("" if backup.kind == "full" else
                                                     f"not in {parent.id if parent else 'the parent'}, backed up whole")
                backing = store.file(prev.file) if inc and prev is not None else None
                self._new_volume(store, name, d.capacity, backing)
                made.append(name)
                el = etree.SubElement(xdisks, "disk", name=d.target, backup="yes", type="file")
                if inc and parent is not None and parent.checkpoint is not None:
                    el.set("backupmode", "incremental")
                    el.set("incremental", parent.checkpoint)
                else:
                    el.set("backupmode", "full")
                etree.SubElement(el, "target", file=store.file(name))
                etree.SubElement(el, "driver", type="qcow2")
                cp_disks.append((d.target, "bitmap" if d.bitmaps else "no"))
                entries.append(DiskEntry(d.target, name, "qcow2", "incremental" if inc else "full", d.capacity,
                                         backing=prev.file if inc and prev is not None else None, source=d.source,
                                         source_format=d.format, pool=d.pool, reason=reason))
            checkpoint = backup.checkpoint if any(k == "bitmap" for _, k in cp_disks) else None
            cp_xml = None
            if checkpoint is not None:
                cp = etree.Element("domaincheckpoint")
                etree.SubElement(cp, "name").text = checkpoint
                etree.SubElement(cp, "description").text = json.dumps(
                    {"virtsync": {"instance": self.instance, "policy": backup.policy, "backup": backup.id}})
                cdisks = etree.SubElement(cp, "disks")
                for target, kind in cp_disks:
                    etree.SubElement(cdisks, "disk", name=target, checkpoint=kind)
                cp_xml = etree.tostring(cp, encoding="unicode")
            with libvirt_call(self.host, f"begin the backup of {guest}"):
                dom.backupBegin(etree.tostring(root, encoding="unicode"), cp_xml,
                                libvirt.VIR_DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL)
        finally:
            if frozen:  # the backup's point in time is fixed once the job has begun
                with contextlib.suppress(libvirt.libvirtError):
                    dom.fsThaw(None, 0)
        try:
            self._wait(dom, guest, progress)
        except BaseException:
            if checkpoint is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    dom.checkpointLookupByName(checkpoint, 0).delete(0)
            raise
        return entries, checkpoint, frozen

    def _wait(self, dom: libvirt.virDomain, guest: str, progress: Progress | None) -> None:
        last = -1.0
        while True:
            with libvirt_call(self.host, f"read the backup job of {guest}"):
                stats = dom.jobStats(0)
            if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
                break
            now = time.monotonic()
            if progress is not None and now - last >= 1.0:
                progress(guest, int(stats.get("disk_processed", 0)), int(stats.get("disk_total", 0)))
                last = now
            time.sleep(0.1)
        with libvirt_call(self.host, f"read the finished backup job of {guest}"):
            done = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        if not done.get("success", done.get("type") == libvirt.VIR_DOMAIN_JOB_COMPLETED):
            raise OperationFailed(f"the backup job of {guest} failed: {done.get('errmsg', 'no reason given')}",
                                  host=self.host)
        if progress is not None:
            total = int(done.get("disk_total", 0))
            progress(guest, int(done.get("disk_processed", total)), total)

    def _copy(self, guest: str, backup: Backup, disks: list[GuestDisk], store: PoolStore, made: list[str],
              progress: Progress | None) -> list[DiskEntry]:
        """A stopped guest: each disk copied whole by libvirt (qemu-img convert into a qcow2 v3)."""
        c = self.conn.get()
        entries = []
        for d in disks:
            name = disk_file_name(guest, backup.id, d.target)
            with libvirt_call(self.host, f"copy disk {d.target} of {guest}"):
                try:
                    src = c.storageVolLookupByPath(d.source)
                except libvirt.libvirtError:
                    raise UnsupportedError(f"{guest} is stopped and its disk {d.target} ({d.source}) is in no "
                                           "storage pool: virtsync copies stopped guests' disks as volumes",
                                           host=self.host) from None
                store.pool.createXMLFrom(_volume_xml(name, d.capacity), src, 0)
            made.append(name)
            if progress is not None:
                progress(guest, d.capacity, d.capacity)
            entries.append(DiskEntry(d.target, name, "qcow2", "full", d.capacity, source=d.source,
                                     source_format=d.format, pool=d.pool))
        return entries

    def _new_volume(self, store: PoolStore, name: str, capacity: int, backing: str | None) -> None:
        with libvirt_call(self.host, f"create {name} in {store.where}"):
            store.pool.createXML(_volume_xml(name, capacity, backing), 0)

    # ---- pruning

    def delete_backup(self, store: Store, m: Manifest) -> None:
        """The manifest first: a half-deleted backup is then a stray file, never a backup with a hole."""
        store.delete(m.file_name)
        for d in m.disks:
            store.delete(d.file)

    # ---- restoring

    def restore(self, store: Store, chain: list[Manifest], *, new_name: str | None = None,
                progress: Progress | None = None) -> tuple[str, list[str]]:
        """Rebuild the disks of ``chain[-1]`` (``chain``: its backups, full first) into the guest's
        pools and define the guest: its own name and UUID, or ``new_name`` with a new UUID and
        new MAC addresses. Refuses to touch a running guest. (name, the new disk files)."""
        m = chain[-1]
        c = self.conn.get()
        name = new_name or m.guest
        existing = None
        try:
            existing = c.lookupByName(name)
        except libvirt.libvirtError as exc:
            if not is_not_found(exc):
                raise
        if existing is not None and existing.isActive():
            raise GuardRefusal(f"{name} is running on {self.host}: stop it first; a restore never overwrites "
                               "a running guest's disks")
        if existing is not None and new_name:
            raise GuardRefusal(f"a guest named {new_name} already exists on {self.host}: choose another --as")
        by_id = {x.id: x for x in chain}
        root = parse(m.definition)
        files = []
        for d in m.disks:
            layers = _layers(d, m, by_id)
            pool_name = d.pool or _pool_of_target(root, d.target)
            if pool_name is None:
                raise UnsupportedError(f"disk {d.target} of {m.guest} was in no storage pool: name one to restore "
                                       "into (not supported yet)", host=self.host)
            with libvirt_call(self.host, f"open pool {pool_name}"):
                pool = c.storagePoolLookupByName(pool_name)
            dest = PoolStore(c, pool, self.host)
            if progress is not None:
                progress(f"{name}/{d.target}", 0, d.capacity)
            if new_name:
                path = self._rebuild(store, dest, layers, f"{new_name}-{d.target}.qcow2", d.capacity)
                fmt = "qcow2"
            else:
                path, fmt = self._rebuild_in_place(store, dest, layers, d)
            files.append(path)
            _set_disk_source(root, d.target, path, fmt)
            if progress is not None:
                progress(f"{name}/{d.target}", d.capacity, d.capacity)
        if new_name:
            _rename(root, new_name)
        with libvirt_call(self.host, f"define the restored {name}"):
            c.defineXML(etree.tostring(root, encoding="unicode"))
        return name, files

    def _rebuild_in_place(self, store: Store, dest: PoolStore, layers: list[DiskEntry],
                          d: DiskEntry) -> tuple[str, str]:
        """The guest's own disk, rebuilt under its own name and format (the guest is stopped or gone):
        first beside it, and only once that copy is whole is the old disk replaced by it."""
        vol_name = os.path.basename(d.source)
        fmt = d.source_format if d.source_format in ("raw", "qcow2") else "qcow2"
        if vol_name not in dest.names():
            return self._rebuild(store, dest, layers, vol_name, d.capacity, fmt), fmt
        scratch = f".{vol_name}.restoring"
        dest.delete(scratch)  # a leftover of an interrupted restore
        self._rebuild(store, dest, layers, scratch, d.capacity, fmt)
        with libvirt_call(self.host, f"replace {vol_name} by its restored copy"):
            dest.delete(vol_name)
            vol = dest.pool.createXMLFrom(_volume_xml(vol_name, d.capacity, fmt=fmt), dest.volume(scratch), 0)
            dest.delete(scratch)
            return str(vol.path()), fmt

    def _rebuild(self, store: Store, dest: PoolStore, layers: list[DiskEntry], vol_name: str, capacity: int,
                 fmt: str = "qcow2") -> str:
        if isinstance(store, PoolStore):
            # libvirt's clone is qemu-img convert: it reads the top file through its backing chain
            # (the previous backups' files beside it) and writes one flat qcow2 v3
            with libvirt_call(self.host, f"rebuild {vol_name} from {layers[-1].file}"):
                vol = dest.pool.createXMLFrom(_volume_xml(vol_name, capacity, fmt=fmt), store.volume(layers[-1].file),
                                              0)
                return str(vol.path())
        assert isinstance(store, LocalStore)
        with tempfile.TemporaryDirectory(prefix="virtsync-restore-") as tmp:
            flat = Path(tmp) / vol_name
            files = [store.plain_file(layer.file, Path(tmp)) for layer in layers]
            options = ["-o", "compat=1.1"] if fmt == "qcow2" else []
            done = subprocess.run(["qemu-img", "convert", "-O", fmt, *options, chain_spec(files), str(flat)],
                                  capture_output=True, text=True, timeout=3600)
            if done.returncode != 0:
                raise OperationFailed(f"qemu-img convert of {layers[-1].file}: {done.stderr.strip()}", host=self.host)
            return dest.upload_file(vol_name, flat, fmt)


# ---------------------------------------------------------------------------- helpers


def _volume_xml(name: str, capacity: int, backing: str | None = None, fmt: str = "qcow2") -> str:
    # compat 1.1 (qcow2 v3): libvirt's default for new qcow2 volumes is 0.10 here, which cannot
    # hold dirty bitmaps or be written by a push backup with bitmaps.
    bs = f"<backingStore><path>{backing}</path><format type='qcow2'/></backingStore>" if backing else ""
    compat = "<compat>1.1</compat>" if fmt == "qcow2" else ""
    return (f"<volume><name>{name}</name><capacity>{capacity}</capacity>"
            f"<target><format type='{fmt}'/>{compat}</target>{bs}</volume>")


def _layers(d: DiskEntry, m: Manifest, by_id: dict[str, Manifest]) -> list[DiskEntry]:
    """A disk's files of a backup, full first, following each file's ``backing``."""
    layers = [d]
    current = m
    while layers[-1].backing is not None:
        parent = by_id.get(current.parent or "")
        if parent is None:
            raise ObjectNotFound(f"backup {current.parent} (the parent of {current.id}) is missing", host=m.host)
        entry = next((x for x in parent.disks if x.file == layers[-1].backing), None)
        if entry is None:
            raise ObjectNotFound(f"{layers[-1].backing} is not in backup {parent.id}", host=m.host)
        layers.append(entry)
        current = parent
    return layers[::-1]


def _pool_of_target(root: etree._Element, target: str) -> str | None:
    for disk in root.findall("devices/disk"):
        t, src = disk.find("target"), disk.find("source")
        if t is not None and t.get("dev") == target and src is not None and src.get("pool"):
            return str(src.get("pool"))
    return None


def _set_disk_source(root: etree._Element, target: str, path: str, fmt: str = "qcow2") -> None:
    for disk in root.findall("devices/disk"):
        t = disk.find("target")
        if t is None or t.get("dev") != target:
            continue
        disk.set("type", "file")
        for old in disk.findall("source") + disk.findall("backingStore"):
            disk.remove(old)
        src = etree.Element("source", file=path)
        disk.insert(list(disk).index(t), src)
        driver = disk.find("driver")
        if driver is None:
            driver = etree.SubElement(disk, "driver", name="qemu")
        driver.set("type", fmt)


def _rename(root: etree._Element, name: str) -> None:
    """A copy beside the original: new name, a UUID and MACs libvirt chooses, no ownership record
    (virtsync does not own a guest no spec describes)."""
    root.find("name").text = name  # type: ignore[union-attr]
    for el in root.findall("uuid") + root.findall("devices/interface/mac"):
        el.getparent().remove(el)  # type: ignore[union-attr]
    meta = root.find("metadata")
    if meta is not None:
        for el in list(meta):
            if isinstance(el.tag, str) and el.tag.startswith(f"{{{OWNER_NS}}}"):
                meta.remove(el)
    for el in root.findall("os/nvram"):
        el.getparent().remove(el)  # type: ignore[union-attr]  # libvirt makes the copy its own from the template
    for el in root.findall("devices/graphics"):
        if "port" in el.attrib:
            del el.attrib["port"]  # a fixed port would clash with the original's


def copy_files(src: Store, dest: LocalStore, m: Manifest) -> None:
    """Stream a backup's files, then its manifest, to where virtsync runs (manifest last: a
    copy without one is incomplete)."""
    dest.path.mkdir(parents=True, exist_ok=True)
    for d in m.disks:
        part = dest.path / f".{d.file}.part"
        sha = download(src, d.file, part)
        if sha != d.sha256:
            part.unlink()
            raise OperationFailed(f"copy of {d.file}: sha256 {sha} differs from the manifest's {d.sha256}")
        dest.put(d.file, part)
    dest.write(m.file_name, m.to_json().encode())

