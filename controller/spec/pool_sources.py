"""The ``source`` of a storage pool, by pool type (``kind: StoragePool``, ``spec.source``).

One model holds every source field libvirt's pool types use; :data:`POOL_TYPES` says which
fields each type needs and takes, and :func:`check_pool` turns a field the type lacks or does
not know into an error at that field (file:line:column), so a ``dir:`` under a ``logical`` pool
is named there instead of being dropped or reaching libvirt.
"""


from typing import Any, Literal

from pydantic import Field

from controller.model.records import record
from controller.spec.base import SpecModel, empty_list
from controller.spec.types import FieldError, Name

PoolType = Literal["dir", "fs", "netfs", "logical", "iscsi", "iscsi-direct", "rbd", "disk", "zfs"]


class PoolAuth(SpecModel):
    """Credentials the host's libvirt presents to the storage: CHAP for iSCSI, cephx for RBD."""

    username: str = Field(min_length=1, description="The CHAP or Ceph user name.")
    secret_ref: Name = Field(description="A kind: Secret with libvirt: {usage: iscsi} (iSCSI CHAP) or "
                             "{usage: ceph} (RBD); defined as a libvirt secret on the pool's host and "
                             "referenced by its UUID.")


class CephMonitor(SpecModel):
    host: str = Field(min_length=1, description="A Ceph monitor's name or address.")
    port: int | None = Field(default=None, ge=1, le=65535, description="Default: Ceph's (6789).")


class PoolSource(SpecModel):
    """Where a pool's storage is. Which fields a type takes: see spec.type."""

    device: str | None = Field(default=None, min_length=1, description="fs: the block device holding the "
                               "filesystem; disk: the whole disk (/dev/sdb).")
    devices: list[str] = Field(default_factory=empty_list, description="logical: the physical volumes of the volume "
                               "group; zfs: the vdevs of the zpool (both used only by build).")
    format: str | None = Field(default=None, min_length=1, description="fs: the filesystem (ext4, xfs, "
                               "auto…); netfs: nfs, cifs or auto; disk: the partition table (gpt, dos…). "
                               "Default: libvirt's (auto; netfs: auto; disk: unknown).")
    host: str | None = Field(default=None, min_length=1, description="netfs: the NFS server; iscsi, "
                             "iscsi-direct: the iSCSI portal's host.")
    port: int | None = Field(default=None, ge=1, le=65535, description="iscsi, iscsi-direct: the portal's "
                             "port. Default: 3260.")
    dir: str | None = Field(default=None, min_length=1, description="netfs: the exported directory.")
    name: str | None = Field(default=None, min_length=1, description="logical: the volume group; rbd: the "
                             "Ceph pool; zfs: the zpool.")
    target: str | None = Field(default=None, min_length=1, description="iscsi, iscsi-direct: the target's IQN.")
    initiator: str | None = Field(default=None, min_length=1, description="iscsi-direct (required), iscsi "
                                  "(optional): the initiator IQN the host logs in as.")
    monitors: list[CephMonitor] = Field(default_factory=empty_list, description="rbd: the Ceph monitors.")
    auth: PoolAuth | None = Field(default=None, description="iscsi, iscsi-direct: CHAP; rbd: cephx.")


@record
class TypeRule:
    """What one pool type takes: source fields it needs and may have, whether it has a target path."""

    needs: tuple[str, ...]
    may: tuple[str, ...] = ()
    path: Literal["required", "optional", "none"] = "required"
    formats: tuple[str, ...] = ()  # the source formats libvirt knows for it
    auth: str | None = None  # the Secret usage its auth takes
    build: str = ""  # what buildPool does for it ("" : the type has no build step)
    driver: str = ""  # the Debian package of its libvirt storage backend, where not libvirt-daemon's own


_FS_FORMATS = ("auto", "ext2", "ext3", "ext4", "ufs", "iso9660", "udf", "gfs", "gfs2", "vfat", "hfs+", "xfs",
               "ocfs2", "vmfs")

POOL_TYPES: dict[str, TypeRule] = {
    "dir": TypeRule((), build="makes the directory (an existing one is kept as it is)"),
    "fs": TypeRule(("device",), ("format",), formats=_FS_FORMATS,
                   build="makes the filesystem on the device (mkfs) unless it holds one already"),
    "netfs": TypeRule(("host", "dir"), ("format",), formats=("auto", "nfs", "glusterfs", "cifs"),
                      build="makes the mount point directory"),
    "logical": TypeRule(("name",), ("devices", "format"), path="optional", formats=("lvm2",),
                        build="makes the volume group on the devices (vgcreate) unless one holds data"),
    "iscsi": TypeRule(("host", "target"), ("port", "initiator", "auth"), path="optional", auth="iscsi"),
    "iscsi-direct": TypeRule(("host", "target", "initiator"), ("port", "auth"), path="none", auth="iscsi",
                             driver="libvirt-daemon-driver-storage-iscsi-direct"),
    "rbd": TypeRule(("name", "monitors"), ("auth",), path="none", auth="ceph",
                    driver="libvirt-daemon-driver-storage-rbd"),
    "disk": TypeRule(("device",), ("format",), path="optional",
                     formats=("unknown", "dos", "dvh", "gpt", "mac", "bsd", "pc98", "sun", "lvm2"),
                     build="writes a new partition table unless the disk holds one"),
    "zfs": TypeRule(("name",), ("devices",), path="optional", build="makes the zpool on the devices (zpool "
                    "create, which refuses devices in use)", driver="libvirt-daemon-driver-storage-zfs"),
}

def _given(source: PoolSource | None) -> list[str]:
    """The source fields the spec sets, in YAML spelling."""
    if source is None:
        return []
    out = []
    for name in PoolSource.model_fields:
        value = getattr(source, name)
        if value is not None and value != []:
            out.append(name)
    return out


def check_pool(pool_type: str, path: str | None, source: PoolSource | None) -> None:
    """Raise FieldError at the first field ``pool_type`` lacks or does not take."""
    rule = POOL_TYPES[pool_type]
    given = _given(source)
    takes = rule.needs + rule.may
    for name in given:
        if name not in takes:
            where = [t for t, r in POOL_TYPES.items() if name in r.needs + r.may]
            known = ", ".join(takes) if takes else "nothing: a dir pool has no source"
            raise FieldError(("source", name), f"a {pool_type} pool's source has no {name!r} (it is for "
                             f"{', '.join(where)} pools); a {pool_type} pool's source takes {known}")
    for name in rule.needs:
        if name not in given:
            raise FieldError("source" if source is not None else "type",
                             f"a {pool_type} pool needs source.{name}")
    if rule.path == "required" and not path:
        raise FieldError("type", f"a {pool_type} pool needs a path (where it is mounted or kept on the host)")
    if rule.path == "none" and path:
        raise FieldError("path", f"a {pool_type} pool has no path on the host: its volumes are reached "
                         "over the network")
    assert source is not None or not rule.needs
    if source is not None and source.format is not None and source.format not in rule.formats:
        raise FieldError(("source", "format"), f"{source.format!r} is not a {pool_type} pool format: use one of "
                         f"{', '.join(rule.formats)}")
    if source is not None and pool_type == "netfs" and source.dir and not source.dir.startswith("/"):
        raise FieldError(("source", "dir"), f"{source.dir!r}: the exported directory is an absolute path")
    if source is not None and pool_type in ("fs", "disk") and source.device and not source.device.startswith("/"):
        raise FieldError(("source", "device"), f"{source.device!r}: the device is an absolute path (/dev/…)")
    for i, dev in enumerate(source.devices if source is not None else []):
        if not dev.startswith("/"):
            raise FieldError(("source", "devices", i), f"{dev!r}: a device is an absolute path (/dev/…)")


# Pools whose volumes are files under their path: guests' disks are made there.
FILE_POOL_TYPES = ("dir", "fs", "netfs")


def default_build(pool_type: str) -> bool:
    """dir pools make their directory by default (it overwrites nothing); every other type is built
    only when the spec says build: true."""
    return pool_type == "dir"


def schema_rules(schema: dict[str, Any]) -> None:
    """The JSON Schema's per-type rules (if type is T, then…), so editors flag a source field a
    type lacks or does not take, as validate does."""
    rules: list[dict[str, Any]] = []
    for pool_type, rule in POOL_TYPES.items():
        takes = list(rule.needs + rule.may)
        source: dict[str, Any] = {"propertyNames": {"enum": takes}} if takes else {"type": "null"}
        if rule.needs:
            source["required"] = list(rule.needs)
        then: dict[str, Any] = {"properties": {"source": source}}
        required = (["source"] if rule.needs else []) + (["path"] if rule.path == "required" else [])
        if required:
            then["required"] = required
        if rule.path == "none":
            then["not"] = {"required": ["path"]}
        # dir is also the type of a pool that names none
        when: dict[str, Any] = {"properties": {"type": {"const": pool_type}}}
        if pool_type != "dir":
            when["required"] = ["type"]
        rules.append({"if": when, "then": then})
    schema["allOf"] = rules
