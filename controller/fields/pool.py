"""The fields of kind: StoragePool and of the volumes virtsync makes for guests' disks."""

from __future__ import annotations

from controller.fields.base import Field
from controller.fields.patches import write_patches
from controller.model.operations import Impact
from controller.spec.models import StoragePoolSpec

POOL_FIELDS: tuple[Field[StoragePoolSpec], ...] = (
    Field("path", "refused: moving a pool would leave its volumes behind", Impact.RECREATE,
          xpaths=("/pool/target/path",), want=lambda s, _f: s.path, have=lambda p, _o: p.path, planned_by="refused"),
    Field("autostart", "setAutostart", Impact.LIVE,
          want=lambda s, _f: s.autostart, have=lambda p, _o: p.autostart, samples=(True, False)),
    Field("type", "set when the pool is made (dir)", Impact.CREATE, xpaths=("/pool/@type",), planned_by="creation"),
    Field("shared", "read by live migration (no disk copy); nothing on the host", Impact.LIVE,
          planned_by="migration"),
    Field("xmlPatches", "refused at validation for now: a pool's definition is written only when it is "
          "made, and not observed after (hypervisor/pool_xml.py applies them once both are)",
          Impact.NEXT_BOOT, write=write_patches, when=lambda s, _f: bool(s.xml_patches), planned_by="refused"),
    Field("active", "the pool is started", Impact.LIVE, pointer="/status/active", planned_by="status"),
)

# A volume is planned with the disk that declares it (/spec/disks/N of its guest).
VOLUME_FIELDS: tuple[Field[object], ...] = (
    Field("size", "grown (blockResize while the guest runs, else the volume); never shrunk", Impact.LIVE,
          pointer="/spec/disks/{i}/size", planned_by="guest disks"),
    Field("format", "set when the volume is made (qcow2 or raw)", Impact.CREATE,
          pointer="/spec/disks/{i}/format", planned_by="creation"),
    Field("from", "set when the volume is made: a linked (qcow2 overlay) or full clone of the image; never "
          "re-cloned", Impact.CREATE, pointer="/spec/disks/{i}/from", planned_by="creation"),
)

CONTROL: dict[str, str] = {
    "host": "the host the pool is defined on (pools are per host)",
    "adopt": "take over an existing pool of this name (its marker volume is written)",
}
