"""The fields of kind: Volume, and the ownership marker that says a volume is virtsync's.

Volumes have no <metadata> (libvirt 9.0): virtsync records that it made (or adopted) one with an
empty marker volume beside it in the same pool, named after the instance, the deletePolicy and
the volume. A volume without this instance's marker is never resized, re-made or deleted.
"""

from __future__ import annotations

from collections.abc import Iterable

from controller.fields.base import Field
from controller.model.operations import Impact
from controller.spec.volume import VolumeSpec

MARKER_PREFIX = ".virtsync-vol-"  # + instance + "-" + keep|delete + "--" + volume name


def volume_marker(instance: str, name: str, delete_policy: str) -> str:
    return f"{MARKER_PREFIX}{instance}-{delete_policy}--{name}"


def owned_volumes(instance: str, pool_volumes: Iterable[str]) -> dict[str, str]:
    """The volumes of one pool this instance owns: volume name → its deletePolicy (keep | delete),
    read from the marker names among ``pool_volumes`` (names, or a mapping keyed by name)."""
    out: dict[str, str] = {}
    head = f"{MARKER_PREFIX}{instance}-"
    for name in pool_volumes:
        if not name.startswith(head):
            continue
        policy, sep, vol = name[len(head):].partition("--")
        if sep and vol and policy in ("keep", "delete"):
            out[vol] = policy
    return out


def foreign_owner(instance: str, name: str, pool_volumes: Iterable[str]) -> str | None:
    """Another instance whose marker of ``name`` is in the pool, if any."""
    for marker in pool_volumes:
        if not marker.startswith(MARKER_PREFIX) or not marker.endswith("--" + name):
            continue
        rest = marker[len(MARKER_PREFIX):-len("--" + name)]
        other, _, policy = rest.rpartition("-")
        if policy in ("keep", "delete") and other and other != instance:
            return other
    return None


VOLUME_OBJECT_FIELDS: tuple[Field[VolumeSpec], ...] = (
    Field("size", "grown: blockResize on the running guest that has it attached (live), else "
          "storageVolResize; never shrunk (a smaller size is refused naming both sizes)", Impact.LIVE,
          want=lambda s, _f: s.size, have=lambda v, _o: v.capacity, samples=("64MiB",)),
    Field("format", "set when the volume is made (storageVolCreateXML); not compared after (a volume is "
          "never re-made)", Impact.CREATE, xpaths=("/volume/target/format/@type",), planned_by="creation"),
    Field("from", "set when the volume is made: storageVolCreateXMLFrom from a volume of this host (any "
          "pool), or a download/upload stream from another host; never re-copied", Impact.CREATE,
          planned_by="creation"),
    Field("encryption", "set when the volume is made: LUKS with the Secret's libvirt secret "
          "(<encryption format='luks'>); a guest disk on it gets the same secret", Impact.CREATE,
          xpaths=("/volume/target/encryption",), planned_by="creation"),
    Field("deletePolicy", "recorded in the volume's ownership marker (renamed when it changes): delete "
          "lets --prune delete the volume once it leaves the specs", Impact.LIVE, planned_by="marker"),
    Field("pool", "where the volume is: a volume is never moved between pools (make a copy with "
          "'from')", Impact.CREATE, planned_by="creation"),
)

CONTROL: dict[str, str] = {
    "host": "the host the volume is on",
    "adopt": "take over an existing volume of this name in the pool (its marker is written)",
}
