"""The libvirt calls the executor makes, each mapped to typed errors.

Every method takes names, XML and numbers (never libvirt objects), so the
executor above stays free of libvirt.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt

from controller.errors import ConflictError, OperationFailed, UnsupportedError
from controller.fields.xmlutil import parse, tostring
from controller.hypervisor import network_update, ownership, secrets, tuning_ops
from controller.hypervisor.connection import HostConnection
from controller.hypervisor.errors import is_not_found, libvirt_call
from controller.hypervisor.ownership import marker_volume
from controller.hypervisor.pool_xml import pool_definition, pool_xml, volume_format, volume_xml
from controller.model.operations import LiveOp
from controller.model.state import HostCapabilities, pool_uuid
from controller.spec.models import StoragePoolSpec
from controller.spec.pool_sources import FILE_POOL_TYPES, POOL_TYPES

_LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
_CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG


# Definitions are read with their console passwords: an edit written back keeps them.
_INACTIVE_SECURE = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE

@contextlib.contextmanager
def _job_progress(dom: libvirt.virDomain, progress: Callable[[int, int | None], None] | None,
                  interval: float = 0.5) -> Iterator[None]:
    """While the block runs (a migration's blocking call), poll the domain's job statistics from
    another thread (libvirt connections take concurrent calls; virsh migrate --verbose does the
    same) and report done = total - remaining; the last total once more when it succeeds."""
    if progress is None:
        yield
        return
    stop = threading.Event()
    seen: list[int] = []

    def watch() -> None:
        while not stop.wait(interval):
            try:
                stats = dom.jobStats()
            except libvirt.libvirtError:
                continue  # no job yet, or it just ended
            total, remaining = stats.get("data_total"), stats.get("data_remaining")
            if total and remaining is not None:
                seen[:] = [int(total)]
                progress(max(0, int(total) - int(remaining)), int(total))

    thread = threading.Thread(target=watch, name="job-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    if seen:
        progress(seen[0], seen[0])


# Full copies and uploads into one pool take turns: each checks the room left and then fills
# it, so two at once cannot both pass the check and both run out of space midway.
_FILL_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_FILL_LOCKS_LOCK = threading.Lock()


def _filling(host: str, pool: str) -> threading.Lock:
    with _FILL_LOCKS_LOCK:
        return _FILL_LOCKS.setdefault((host, pool), threading.Lock())


def pump(down: libvirt.virStream, up: libvirt.virStream, progress: Callable[[int, int | None], None] | None,
         total: int | None) -> int:
    """Copy a volume's download stream into an upload stream, 1 MiB at a time; the bytes copied."""
    copied = 0
    while True:
        chunk = down.recv(1 << 20)
        if chunk in (b"", -2) or chunk is None:
            break
        up.send(chunk)
        copied += len(chunk)
        if progress is not None:
            progress(copied, total)
    down.finish()
    up.finish()
    return copied


class HostOps:
    def __init__(self, conn: HostConnection, caps: HostCapabilities):
        self.conn = conn
        self.host = conn.host
        self.caps = caps
        # Lanes count from the lane of the thread that makes these ops (the one carrying out the
        # plan): serve's workers reconcile a host's guests at once, each over a lane of its own.
        self._base = conn.lane_here()

    def _c(self) -> libvirt.virConnect:
        return self.conn.get()

    def lane(self, k: int) -> contextlib.AbstractContextManager[None]:
        """This thread's operations go over the host's connection number ``k`` (counted from the
        maker's lane) inside (work on several objects at once: a connection's calls take turns)."""
        return self.conn.lane(self._base + k)

    def _dom(self, name: str) -> libvirt.virDomain:
        with libvirt_call(self.host, f"look up guest {name}"):
            return self._c().lookupByName(name)

    # ------------------------------------------------------------ guests

    def guest_xml(self, name: str) -> str | None:
        try:
            return str(self._c().lookupByName(name).XMLDesc(_INACTIVE_SECURE))
        except libvirt.libvirtError as exc:
            if is_not_found(exc):
                return None
            with libvirt_call(self.host, f"read guest {name}"):
                raise

    def check_unchanged(self, name: str, observed_xml: str | None) -> None:
        """Refuse to write over a change made since the plan's observation."""
        now = self.guest_xml(name)
        if now != observed_xml:
            what = "appeared" if observed_xml is None else "vanished" if now is None else "changed"
            raise ConflictError(f"guest {name} {what} since it was observed (another writer?)",
                                host=self.host)

    def define_guest(self, xml: str) -> None:
        """Define, and make sure the ownership record survived: a driver that drops <metadata>
        gets it in <description> instead (read back, rewritten, defined again)."""
        wanted = ownership.find_owner(parse(xml))
        with libvirt_call(self.host, "define guest"):
            dom = self._c().defineXML(xml)
            if wanted is None:
                return
            kept = parse(dom.XMLDesc(_INACTIVE_SECURE))  # with passwords: they are defined again
            if ownership.find_owner(kept) is not None:
                return
            ownership.owner_into_description(kept, wanted)
            dom = self._c().defineXML(tostring(kept))
            if ownership.find_owner(parse(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))) is None:
                raise UnsupportedError(f"{self.host} keeps neither <metadata> nor <description> of guests: "
                                       "virtsync cannot record that it owns them", host=self.host)

    def undefine_guest(self, name: str, keep_nvram: bool = True) -> None:
        # A recreate keeps the firmware's variables and the vTPM's state (keys sealed to it, BitLocker):
        # the guest defined again under the same UUID finds them where they were.
        flags = libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | (
            libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM | getattr(libvirt, "VIR_DOMAIN_UNDEFINE_KEEP_TPM", 0)
            if keep_nvram else libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        dom = self._dom(name)
        with libvirt_call(self.host, f"undefine guest {name}"):
            try:
                dom.undefineFlags(flags)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT,
                                                libvirt.VIR_ERR_INVALID_ARG):
                    raise
                dom.undefine()  # drivers without undefineFlags (test, some libxl)

    def snapshot_xmls(self, name: str) -> list[str]:
        dom = self._dom(name)
        with libvirt_call(self.host, f"list snapshots of {name}"):
            try:
                snaps = dom.listAllSnapshots(0)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
                    return []
                raise
            return [s.getXMLDesc(libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE) for s in snaps]

    def redefine_snapshots(self, name: str, xmls: list[str]) -> None:
        dom = self._dom(name)
        with libvirt_call(self.host, f"re-register snapshots of {name}"):
            for xml in xmls:
                dom.snapshotCreateXML(xml, libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE)

    def start(self, name: str, paused: bool = False) -> None:
        dom = self._dom(name)
        with libvirt_call(self.host, f"start guest {name}"):
            try:
                dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED if paused else 0)
            except libvirt.libvirtError as exc:
                # Drivers without START_PAUSED (the test driver): start, then pause at once.
                unsupported = (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT)
                if not paused or exc.get_error_code() not in unsupported:
                    raise
                dom.create()
                dom.suspend()

    def suspend(self, name: str) -> None:
        with libvirt_call(self.host, f"pause guest {name}"):
            self._dom(name).suspend()

    def resume(self, name: str) -> None:
        with libvirt_call(self.host, f"resume guest {name}"):
            self._dom(name).resume()

    def stop(self, name: str, timeout: float) -> str:
        """Graceful shutdown for up to ``timeout`` seconds, then destroy. Says which it was."""
        dom = self._dom(name)
        with libvirt_call(self.host, f"stop guest {name}"):
            if not dom.isActive():
                return "already stopped"
            if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                dom.resume()  # a paused guest cannot act on the shutdown request
            try:
                dom.shutdown()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                    raise
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if not dom.isActive():
                    return "shut down"
                time.sleep(0.2)
            if dom.isActive():
                dom.destroy()
                return f"destroyed after {timeout:g}s without shutting down"
            return "shut down"

    def destroy(self, name: str) -> None:
        dom = self._dom(name)
        with libvirt_call(self.host, f"destroy guest {name}"):
            if dom.isActive():
                dom.destroy()

    def set_memory_live(self, name: str, size: int) -> None:
        with libvirt_call(self.host, f"set memory of {name}"):
            self._dom(name).setMemoryFlags(size // 1024, _LIVE)

    def set_vcpus_live(self, name: str, count: int) -> None:
        with libvirt_call(self.host, f"set vCPUs of {name}"):
            self._dom(name).setVcpusFlags(count, _LIVE)

    def attach_live(self, name: str, device_xml: str) -> None:
        with libvirt_call(self.host, f"attach device to {name}"):
            self._dom(name).attachDeviceFlags(device_xml, _LIVE)

    def detach_live(self, name: str, device_xml: str) -> None:
        with libvirt_call(self.host, f"detach device from {name}"):
            self._dom(name).detachDeviceFlags(device_xml, _LIVE)

    def update_live(self, name: str, device_xml: str) -> None:
        with libvirt_call(self.host, f"update device of {name}"):
            self._dom(name).updateDeviceFlags(device_xml, _LIVE)

    def migrate(self, name: str, dest_uri: str, address: str | None, copy_storage: bool,
                progress: Callable[[int, int | None], None] | None = None) -> None:
        """Live, peer-to-peer migration to ``dest_uri``; persistent there, undefined here.
        ``progress`` hears the bytes transferred of the total (memory, and disks when copied),
        from the job's statistics, about twice a second while the migration runs."""
        flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
                 | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
        if copy_storage:
            flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
        params: dict[str, str] = {}
        if address:
            params[libvirt.VIR_MIGRATE_PARAM_URI] = f"tcp://{address}"
        with libvirt_call(self.host, f"migrate {name} to {dest_uri}"):
            dom = self._dom(name)
            with _job_progress(dom, progress):
                dom.migrateToURI3(dest_uri, params, flags)

    def set_guest_autostart(self, name: str, on: bool) -> None:
        with libvirt_call(self.host, f"set autostart of {name}"):
            self._dom(name).setAutostart(int(on))

    def block_resize(self, name: str, target: str, size: int) -> None:
        with libvirt_call(self.host, f"grow disk {target} of {name}"):
            self._dom(name).blockResize(target, size, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)

    def live_xml(self, name: str) -> str:
        with libvirt_call(self.host, f"read guest {name}"):
            return str(self._dom(name).XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE))

    # ----------------------------------------------------------- secrets

    def define_secret(self, xml: str, value: str) -> None:
        secrets.define_secret(self._c(), self.host, xml, value)

    def delete_secret(self, uuid: str) -> None:
        secrets.delete_secret(self._c(), self.host, uuid)

    # ----------------------------------------------------------- networks

    def _net(self, name: str) -> libvirt.virNetwork:
        with libvirt_call(self.host, f"look up network {name}"):
            return self._c().networkLookupByName(name)

    def network_xml(self, name: str) -> str | None:
        try:
            net = self._c().networkLookupByName(name)
        except libvirt.libvirtError as exc:
            if is_not_found(exc):
                return None
            raise
        with libvirt_call(self.host, f"read network {name}"):
            try:
                return str(net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE))
            except libvirt.libvirtError:
                return str(net.XMLDesc(0))

    def define_network(self, xml: str, autostart: bool, start: bool = True) -> None:
        with libvirt_call(self.host, "define network"):
            net = self._c().networkDefineXML(xml)
            if start and not net.isActive():
                net.create()
            net.setAutostart(int(autostart))

    def start_network(self, name: str) -> None:
        with libvirt_call(self.host, f"start network {name}"):
            net = self._net(name)
            if not net.isActive():
                net.create()

    def set_network_autostart(self, name: str, on: bool) -> None:
        with libvirt_call(self.host, f"set autostart of network {name}"):
            self._net(name).setAutostart(int(on))

    def delete_network(self, name: str) -> None:
        net = self._net(name)
        with libvirt_call(self.host, f"delete network {name}"):
            if net.isActive():
                net.destroy()
            if net.isPersistent():
                net.undefine()

    def network_update(self, name: str, command: str, section: str, xml: str, target: str,
                       parent: int = -1) -> None:
        network_update.update(self._net(name), self.host, command, section, xml, target, parent)

    def network_active(self, name: str) -> bool:
        with libvirt_call(self.host, f"read network {name}"):
            return bool(self._net(name).isActive())

    # -------------------------------------------------------------- pools

    def _pool(self, name: str) -> libvirt.virStoragePool:
        with libvirt_call(self.host, f"look up pool {name}"):
            return self._c().storagePoolLookupByName(name)

    def define_pool(self, name: str, spec: StoragePoolSpec, instance: str) -> str:
        """Define, build (only if the spec says so, never over data), start and mark a pool; what
        was done, for the outcome."""
        with libvirt_call(self.host, f"define pool {name}"):
            pool = self._c().storagePoolDefineXML(pool_xml(name, spec, uuid=pool_uuid(instance, name)))
        try:
            built = self._build_pool(pool, name, spec) if spec.builds else ""
            with libvirt_call(self.host, f"start pool {name}"):
                pool.create()
            if spec.type in FILE_POOL_TYPES:  # the others' record is their UUID (no marker volume)
                self.mark_pool(name, instance)
            with libvirt_call(self.host, f"set autostart of pool {name}"):
                pool.setAutostart(int(spec.autostart))
        except Exception:
            # Leave nothing unowned behind: an unmarked pool would block the next run.
            try:
                if pool.isActive():
                    pool.destroy()
                pool.undefine()
            except libvirt.libvirtError:
                pass
            raise
        return built

    def _build_pool(self, pool: libvirt.virStoragePool, name: str, spec: StoragePoolSpec) -> str:
        """buildPool with NO_OVERWRITE: libvirt probes the device first and refuses one that holds
        a filesystem, partition table or volume group. zfs (and the test driver) take no flags;
        zpool create refuses devices in use by itself. A dir or netfs pool has no device: the flag
        would ask libvirt to format one ("No source device specified"), and its build only makes
        the directory, which overwrites nothing."""
        flags = 0 if spec.type in ("dir", "netfs") else libvirt.VIR_STORAGE_POOL_BUILD_NO_OVERWRITE
        try:
            pool.build(flags)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_STORAGE_POOL_BUILT:
                raise OperationFailed(
                    f"pool {name}: build: true found data on its storage and wrote nothing (libvirt: "
                    f"{exc.get_error_message()}); to use what is there as it is, set build: false",
                    host=self.host) from exc
            if exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG or (
                    spec.type != "zfs" and self._c().getType().upper() != "TEST"):
                with libvirt_call(self.host, f"build pool {name}"):
                    raise
            with libvirt_call(self.host, f"build pool {name}"):
                pool.build(0)
        return f"built ({POOL_TYPES[spec.type].build})"

    def mark_pool(self, name: str, instance: str) -> None:
        """Record ownership: pools have no <metadata>, so an empty marker volume does (once: a
        run killed after making it leaves it there)."""
        pool = self._pool(name)
        with libvirt_call(self.host, f"mark pool {name}"):
            if marker_volume(instance) not in pool.listVolumes():
                pool.createXML(volume_xml(marker_volume(instance), 0, None), 0)

    def redefine_pool(self, name: str, spec: StoragePoolSpec) -> None:
        """The pool's persistent definition written again from itself, the spec's patches applied
        (an active pool takes it at its next start)."""
        with libvirt_call(self.host, f"redefine pool {name}"):
            base = pool_definition(self._pool(name))
            self._c().storagePoolDefineXML(pool_xml(name, spec, base=base))

    def start_pool(self, name: str) -> None:
        """Start a stopped pool. A dir pool whose directory went missing (a run killed before it
        built it) gets it made again; nothing else is built here."""
        with libvirt_call(self.host, f"start pool {name}"):
            pool = self._pool(name)
            if not pool.isActive():
                if parse(pool.XMLDesc(0)).get("type") == "dir":
                    pool.build(0)
                pool.create()

    def set_pool_autostart(self, name: str, on: bool) -> None:
        with libvirt_call(self.host, f"set autostart of pool {name}"):
            self._pool(name).setAutostart(int(on))

    def delete_pool(self, name: str, instance: str) -> None:
        pool = self._pool(name)
        with libvirt_call(self.host, f"delete pool {name}"):
            if pool.isActive():
                pool.refresh(0)
                names = [v.name() for v in pool.listAllVolumes(0)]
                others = [n for n in names if n != marker_volume(instance)]
                # an iSCSI pool's volumes are the target's LUNs: undefining the pool leaves them be
                if others and parse(pool.XMLDesc(0)).get("type") not in ("iscsi", "iscsi-direct"):
                    raise OperationFailed(f"pool {name} still holds volumes: {', '.join(others)}",
                                          host=self.host)
                if marker_volume(instance) in names:
                    pool.storageVolLookupByName(marker_volume(instance)).delete(0)
                pool.destroy()
            pool.undefine()

    def pool_path(self, name: str) -> str | None:
        from controller.hypervisor.pool_xml import read_pool

        with libvirt_call(self.host, f"read pool {name}"):
            return read_pool(self._pool(name).XMLDesc(0))[3]

    # ------------------------------------------------------------ volumes

    def create_volume(self, pool: str, name: str, capacity: int, fmt: str,
                      backing: tuple[str, str] | None = None) -> str:
        p = self._pool(pool)
        with libvirt_call(self.host, f"create volume {pool}/{name}"):
            vol = p.createXML(volume_xml(name, capacity, fmt, backing), 0)
            return str(vol.path())

    def volume_info(self, pool: str, name: str) -> tuple[str, str, int] | None:
        """(path, format, capacity) of a volume, after a refresh so files copied in by hand count."""
        p = self._pool(pool)
        with libvirt_call(self.host, f"read volume {pool}/{name}"):
            with contextlib.suppress(libvirt.libvirtError):
                p.refresh(0)
            try:
                vol = p.storageVolLookupByName(name)
            except libvirt.libvirtError as exc:
                if is_not_found(exc):
                    return None
                raise
            return str(vol.path()), volume_format(vol.XMLDesc(0)) or "raw", int(vol.info()[1])

    @staticmethod
    def file_format(path: str) -> str:
        # Only a guess for files named directly: libvirt's probe does the same by header.
        return "qcow2" if path.endswith((".qcow2", ".qcow")) else "raw"

    def _room(self, p: libvirt.virStoragePool, pool: str, need: int, what: str) -> None:
        """Refuse a write the pool has no room for, before anything is made (a pool that fills up
        midway would leave a half-written volume, and libvirt's ENOSPC names neither)."""
        with contextlib.suppress(libvirt.libvirtError):
            p.refresh(0)
        _, capacity, _, free = (int(x) for x in p.info())
        if capacity and need > free:  # a pool that reports no capacity cannot be judged: let it try
            raise OperationFailed(f"pool {pool} is full: {what} needs {need} bytes, it has {free} bytes free",
                                  host=self.host, retryable=True, delay=30.0)

    def _out_of_space(self, exc: libvirt.libvirtError, p: libvirt.virStoragePool, pool: str, need: int,
                      what: str) -> None:
        """A write that ran out of space anyway (another writer took the room meanwhile)."""
        if "No space left" not in str(exc):
            return
        free = "?"
        with contextlib.suppress(libvirt.libvirtError):
            p.refresh(0)
            free = str(int(p.info()[3]))
        raise OperationFailed(f"pool {pool} is full: {what} needs {need} bytes, it has {free} bytes free "
                              f"(filled up during the write: {exc})", host=self.host, retryable=True,
                              delay=30.0) from exc

    def clone_volume(self, pool: str, source: str, name: str, fmt: str) -> str:
        p = self._pool(pool)
        with libvirt_call(self.host, f"clone volume {pool}/{source} → {name}"):
            src = p.storageVolLookupByName(source)
            info = src.info()
            cap, need = int(info[1]), int(info[2])  # a copy writes what the image holds
            what = f"a full copy of {source} as {name}"
            with _filling(self.host, pool):
                self._room(p, pool, need, what)
                try:
                    vol = p.createXMLFrom(volume_xml(name, cap, fmt), src, 0)
                except libvirt.libvirtError as exc:
                    self._out_of_space(exc, p, pool, need, what)  # libvirt deletes what it half made
                    raise
            return str(vol.path())

    def write_volume(self, pool: str, name: str, data: bytes) -> None:
        """Replace a volume's whole content (a seed ISO): delete, create, upload."""
        p = self._pool(pool)
        with libvirt_call(self.host, f"write volume {pool}/{name}"):
            with contextlib.suppress(libvirt.libvirtError):
                p.storageVolLookupByName(name).delete(0)
            vol = p.createXML(volume_xml(name, len(data), "raw"), 0)
            stream = self._c().newStream(0)
            vol.upload(stream, 0, len(data), 0)
            view = memoryview(data)
            for off in range(0, len(data), 1 << 20):
                stream.send(bytes(view[off:off + (1 << 20)]))
            stream.finish()

    def upload_volume(self, pool: str, name: str, path: Path,
                      progress: Callable[[int, int | None], None] | None = None) -> None:
        """Upload a local file into a new volume (works over remote connections too); ``progress``
        hears the bytes sent after each chunk."""
        size = path.stat().st_size
        sent = 0
        p = self._pool(pool)
        with libvirt_call(self.host, f"upload {path.name} to {pool}/{name}"), _filling(self.host, pool):
            self._room(p, pool, size, f"uploading {path.name} as {name}")
            vol = p.createXML(volume_xml(name, size, "raw"), 0)
            try:
                stream = self._c().newStream(0)
                vol.upload(stream, 0, size, 0)
                with path.open("rb") as fh:
                    while chunk := fh.read(1 << 20):
                        stream.send(chunk)
                        sent += len(chunk)
                        if progress is not None:
                            progress(sent, size)
                stream.finish()
                p.refresh(0)  # libvirt re-probes the format (qcow2 header) of the new content
            except libvirt.libvirtError as exc:
                with contextlib.suppress(libvirt.libvirtError):
                    vol.delete(0)
                self._out_of_space(exc, p, pool, size, f"uploading {path.name} as {name}")
                raise

    def copy_volume_to(self, pool: str, name: str, dest: HostOps,
                       progress: Callable[[int, int | None], None] | None = None) -> int:
        """Copy a volume to the same-named pool of another host through this process (streams:
        works between any two libvirt hosts virtsync reaches). Returns the bytes copied;
        ``progress`` hears them after each chunk (the total is not known: a stream of the file)."""
        src_pool = self._pool(pool)
        with libvirt_call(self.host, f"read volume {pool}/{name}"):
            vol = src_pool.storageVolLookupByName(name)
            fmt = volume_format(vol.XMLDesc(0)) or "raw"
            capacity = int(vol.info()[1])
            down = self._c().newStream(0)
            vol.download(down, 0, 0, 0)
        dest_pool = dest._pool(pool)
        with libvirt_call(dest.host, f"write volume {pool}/{name}"):
            new = dest_pool.createXML(volume_xml(name, capacity, fmt), 0)
            up = dest._c().newStream(0)
            new.upload(up, 0, 0, 0)
            return pump(down, up, progress, None)

    def volume_path(self, pool: str, name: str) -> str | None:
        try:
            return str(self._pool(pool).storageVolLookupByName(name).path())
        except libvirt.libvirtError as exc:
            if is_not_found(exc):
                return None
            raise

    def resize_volume(self, pool: str, name: str, capacity: int) -> None:
        with libvirt_call(self.host, f"grow volume {pool}/{name}"):
            self._pool(pool).storageVolLookupByName(name).resize(capacity, 0)

    def delete_volume(self, pool: str, name: str) -> None:
        with libvirt_call(self.host, f"delete volume {pool}/{name}"):
            self._pool(pool).storageVolLookupByName(name).delete(0)

    # ------------------------------------------------- running devices' tuning

    def tune_live(self, name: str, op: LiveOp) -> str:
        """Pinning and scheduler parameters of a running guest (hypervisor/tuning_ops.py)."""
        return tuning_ops.run(self.host, self._c(), self._dom(name), op)

    def set_block_iotune(self, name: str, target: str, params: dict[str, int]) -> None:
        """A running disk's I/O limits (0: none), as virsh blkdeviotune --live does."""
        with libvirt_call(self.host, f"set I/O limits of {target} of {name}"):
            self._dom(name).setBlockIoTune(target, params, _LIVE)

    def set_interface_bandwidth(self, name: str, mac: str, params: dict[str, int]) -> None:
        """A running NIC's traffic shaping (an average of 0 lifts that direction's limit)."""
        with libvirt_call(self.host, f"set bandwidth of NIC {mac} of {name}"):
            self._dom(name).setInterfaceParameters(mac, params, _LIVE)

    def set_link_state(self, name: str, mac: str, state: str) -> bool:
        """Set a running NIC's link: its live XML with <link state> changed, updated in place.
        False when the guest has no such NIC running."""
        from controller.fields.devices import set_link

        root = parse(self.live_xml(name))
        nic = next((el for el in root.findall("devices/interface")
                    if el.find("mac") is not None and (el.find("mac").get("address") or "").lower() == mac),  # type: ignore[union-attr]
                   None)
        if nic is None:
            return False
        set_link(nic, state)
        self.update_live(name, tostring(nic))
        return True
