"""The fields of kind: StoragePool and of the volumes virtsync makes for guests' disks."""

from __future__ import annotations

from typing import Any

from controller.fields.base import Field
from controller.fields.patches import write_patches
from controller.model.operations import Impact
from controller.model.state import HostCapabilities
from controller.spec.models import StoragePoolSpec
from controller.spec.pool_sources import POOL_TYPES
from controller.spec.secrets import libvirt_secret_uuid

# Source fields: (key, what it is in libvirt's XML, the XML it owns). Written when the pool is made.
_SOURCE = (
    ("device", "fs, disk: <source><device path>", "/pool/source/device"),
    ("devices", "logical, zfs: a <source><device path> each (the devices build uses)", "/pool/source/device"),
    ("format", "fs, netfs, disk, logical: <source><format type>", "/pool/source/format"),
    ("host", "netfs, iscsi, iscsi-direct: <source><host name>", "/pool/source/host"),
    ("port", "iscsi, iscsi-direct: <source><host port>", "/pool/source/host/@port"),
    ("dir", "netfs: <source><dir path>", "/pool/source/dir"),
    ("name", "logical, rbd, zfs: <source><name>", "/pool/source/name"),
    ("target", "iscsi, iscsi-direct: <source><device path> (the target IQN)", "/pool/source/device"),
    ("initiator", "iscsi-direct, iscsi: <source><initiator><iqn name>", "/pool/source/initiator"),
    ("monitors", "rbd: a <source><host name port> each", "/pool/source/host"),
    ("auth", "iscsi*, rbd: <source><auth type username><secret uuid> (the Secret's libvirt UUID)",
     "/pool/source/auth"),
)


def source_want(spec: StoragePoolSpec, key: str) -> Any:
    """The spec's value of source KEY as read_source spells it (None: not declared)."""
    src = spec.source
    if src is None:
        return None
    if key == "auth":
        return None if src.auth is None else {"username": src.auth.username,
                                              "secretUuid": libvirt_secret_uuid(src.auth.secret_ref)}
    if key == "monitors":
        return [m.model_dump(exclude_none=True) for m in src.monitors] or None
    value = getattr(src, key)
    return value or None


def _source_field(key: str, how: str, xpath: str) -> Field[StoragePoolSpec]:
    return Field(key, f"{how}; set when the pool is made: a change is refused (the pool's volumes would be "
                 "left behind): define a new pool", Impact.RECREATE, pointer=f"/spec/source/{key}",
                 xpaths=(xpath,), want=lambda s, _f: source_want(s, key),
                 have=lambda p, _o: p.source.get(key), planned_by="refused")


def type_refusal(pool_type: str, caps: HostCapabilities, host: str) -> str | None:
    """Why ``host`` cannot make a pool of ``pool_type`` (None: it can, or its driver does not say)."""
    if caps.pool_types is None or pool_type in caps.pool_types:
        return None
    package = POOL_TYPES[pool_type].driver or "libvirt-daemon"
    return (f"host {host} cannot make a {pool_type!r} pool: libvirt there has no {pool_type} storage driver "
            f"({package})")


POOL_FIELDS: tuple[Field[StoragePoolSpec], ...] = (
    Field("path", "refused: moving a pool would leave its volumes behind", Impact.RECREATE,
          xpaths=("/pool/target/path",), want=lambda s, _f: s.path, have=lambda p, _o: p.path, planned_by="refused"),
    Field("autostart", "setAutostart", Impact.LIVE, calls=("setAutostart",),
          want=lambda s, _f: s.autostart, have=lambda p, _o: p.autostart, samples=(True, False)),
    Field("type", "set when the pool is made; refused at plan time on a host whose libvirt has no storage "
          "backend of the type (getStoragePoolCapabilities)", Impact.CREATE, xpaths=("/pool/@type",),
          refuse=lambda s, caps, host: type_refusal(s.type, caps, host), planned_by="creation"),
    Field("shared", "read by live migration (no disk copy); nothing on the host", Impact.LIVE,
          planned_by="migration"),
    Field("xmlPatches", "refused at validation for now: a pool's definition is written only when it is "
          "made, and not observed after (hypervisor/pool_xml.py applies them once both are)",
          Impact.NEXT_BOOT, write=write_patches, when=lambda s, _f: bool(s.xml_patches), planned_by="refused"),
    Field("active", "the pool is started", Impact.LIVE, pointer="/status/active", planned_by="status",
          calls=("create",)),
    *(_source_field(key, how, xpath) for key, how, xpath in _SOURCE),
)

# A volume is planned with the disk that declares it (/spec/disks/N of its guest).
VOLUME_FIELDS: tuple[Field[object], ...] = (
    Field("size", "grown (blockResize while the guest runs, else the volume); never shrunk", Impact.LIVE,
          pointer="/spec/disks/{i}/size", planned_by="guest disks", calls=("blockResize", "storageVolResize")),
    Field("format", "set when the volume is made (qcow2 or raw)", Impact.CREATE,
          pointer="/spec/disks/{i}/format", planned_by="creation"),
    Field("from", "set when the volume is made: a linked (qcow2 overlay) or full clone of the image; never "
          "re-cloned", Impact.CREATE, pointer="/spec/disks/{i}/from", planned_by="creation"),
)

CONTROL: dict[str, str] = {
    "source": "where the pool's storage is, by type: its fields are the /spec/source/… entries",
    "build": "build the pool when it is defined (buildPool with NO_OVERWRITE: never over data on the device)",
    "host": "the host the pool is defined on (pools are per host)",
    "adopt": "take over an existing pool of this name (its marker volume is written)",
}
