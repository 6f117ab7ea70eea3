"""kind: Volume — a pool volume of its own (besides those made for guests' disks), and the
checks that tie it to its pool, its Secret and the guests' disks that use it (``volume: NAME``).

Its libvirt name is its metadata.name; a guest disk naming it is resolved, when the specs load,
to the file in its pool (the pool's path joined with the name), so a guest's definition names
the same file whether virtsync made the volume or the guest came first.
"""


import posixpath
from collections.abc import Iterator
from typing import Any, Literal, Self

from pydantic import Field, model_validator

from controller.errors import Diagnostic
from controller.spec.base import SpecModel
from controller.spec.types import FieldError, Name, Size


class VolumeEncryption(SpecModel):
    """LUKS encryption made by libvirt when the volume is created (qcow2: encrypt.format luks
    inside the qcow2; raw: a LUKS container). The passphrase is a kind: Secret with libvirt:
    {usage: volume}; it is given to libvirt only, never shown."""

    secret_ref: Name = Field(description="The kind: Secret holding the passphrase (libvirt usage volume).")
    format: Literal["luks"] = Field(default="luks", description="Default: luks (the only format libvirt "
                                    "makes).")


class VolumeSource(SpecModel):
    """What a new volume is a copy of: a kind: Volume (``volume`` alone), or an existing volume of a
    pool (``pool`` and ``volume``), on this host or on ``host`` (streamed through virtsync)."""

    volume: Name = Field(description="A kind: Volume's name; with 'pool': a volume of that pool.")
    pool: Name | None = Field(default=None, description="A pool of the source host holding 'volume' (not "
                              "necessarily virtsync's: it is only read).")
    host: Name | None = Field(default=None, description="The kind: Host the source volume is on (with "
                              "'pool'). Default: this volume's host.")


class VolumeSpec(SpecModel):
    host: Name
    pool: Name = Field(description="The kind: StoragePool holding the volume (same host).")
    format: Literal["qcow2", "raw"] = Field(default="qcow2", description="Set when the volume is made. "
                                            "Default: qcow2.")
    size: Size | None = Field(default=None, description="Capacity; grown (live with blockResize while a "
                              "running guest has it attached), never shrunk. Default: the source's, with "
                              "'from'.")
    from_: VolumeSource | None = Field(default=None, alias="from", description="Make the volume as a full "
                                       "copy of another one (across pools on one host; streamed from another "
                                       "host). Only when it is made.")
    encryption: VolumeEncryption | None = Field(default=None, description="LUKS, set when the volume is made.")
    delete_policy: Literal["keep", "delete"] = Field(
        default="keep", description="When the Volume leaves the specs: keep it (virtsync lets go of it), or "
        "delete it with --prune (counted by the mass-deletion guard). Default: keep.")
    adopt: bool = Field(default=False, description="Take over an existing volume of this name in the pool "
                        "(its ownership marker is written; it is never re-made).")

    @model_validator(mode="before")
    @classmethod
    def _from_shorthand(cls, data: Any) -> Any:
        # from: NAME is from: {volume: NAME} (a kind: Volume)
        if isinstance(data, dict) and isinstance(data.get("from"), str):
            data = {**data, "from": {"volume": data["from"]}}
        return data

    @model_validator(mode="after")
    def _has_content(self) -> Self:
        if self.size is None and self.from_ is None and not self.adopt:
            raise FieldError("size", "a Volume needs a 'size' or a 'from' volume to copy")
        if self.from_ is not None and self.encryption is not None:
            raise FieldError("encryption", "a copy carries its source's bytes as they are: a Volume made "
                             "'from' another cannot be encrypted on the way (make it empty with encryption)")
        if self.from_ is not None and self.from_.host is not None and self.from_.pool is None:
            raise FieldError("from", "from.host names the host of a pool volume: give from.pool too (a "
                             "kind: Volume source is found on its own host)")
        return self


def encryption_secrets(obj: object) -> set[str]:
    """The Secret a Volume's LUKS passphrase comes from (a libvirt secret on its host)."""
    from controller.spec.models import Volume

    if isinstance(obj, Volume) and obj.spec.encryption is not None:
        return {obj.spec.encryption.secret_ref}
    return set()


# ----------------------------------------------------------- whole-set checks


def _diag(item: Any, path: tuple[str | int, ...], message: str) -> Diagnostic:
    line, col = item.where(*path)
    return Diagnostic(item.file, line, col, message)


def check_volumes(specs: Any) -> Iterator[Diagnostic]:
    """Pools, Secrets and sources the Volumes name; the guests' disks that name Volumes."""
    from controller.spec.models import Guest, Host, Secret, StoragePool, Volume

    hosts = {i.obj.metadata.name for i in specs.of_kind(Host)}
    pools = {(i.obj.spec.host, i.obj.metadata.name) for i in specs.of_kind(StoragePool)}
    pool_paths = {(i.obj.spec.host, i.obj.metadata.name): i.obj.spec.path for i in specs.of_kind(StoragePool)}
    secrets = {i.obj.metadata.name: i.obj for i in specs.of_kind(Secret)}
    volumes = {i.obj.metadata.name: i for i in specs.of_kind(Volume)}
    seen: dict[tuple[str, str, str], Any] = {}
    for item in specs.of_kind(Volume):
        v = item.obj
        spec: VolumeSpec = v.spec
        if spec.host not in hosts:
            yield _diag(item, ("spec", "host"), f"unknown host {spec.host!r} (hosts: "
                        f"{', '.join(sorted(hosts)) or 'none defined'})")
            continue
        if (spec.host, spec.pool) not in pools:
            yield _diag(item, ("spec", "pool"), f"unknown storage pool {spec.pool!r} on host {spec.host!r} "
                        "(declare it as kind: StoragePool)")
        where = (spec.host, spec.pool, v.metadata.name)
        if where in seen:
            prev = seen[where]
            yield _diag(item, ("metadata", "name"), f"duplicate Volume {v.metadata.name!r} in pool "
                        f"{spec.pool!r} on host {spec.host!r} (also defined at {prev.file}:"
                        f"{prev.where('metadata', 'name')[0]})")
        seen[where] = item
        if spec.encryption is not None:
            ref = spec.encryption.secret_ref
            secret = secrets.get(ref)
            if secret is None:
                yield _diag(item, ("spec", "encryption", "secretRef"), f"no kind: Secret named {ref!r} in the specs")
            elif secret.spec.libvirt is None or secret.spec.libvirt.usage != "volume":
                yield _diag(item, ("spec", "encryption", "secretRef"), f"Secret {ref!r} is a volume's LUKS "
                            "passphrase: it needs libvirt: {usage: volume}")
        src = spec.from_
        if src is None:
            continue
        if src.pool is None:
            other = volumes.get(src.volume)
            if other is None:
                yield _diag(item, ("spec", "from", "volume"), f"no kind: Volume named {src.volume!r} in the specs "
                            "(a volume of a pool not declared as a Volume: give from.pool)")
            elif other.obj is v:
                yield _diag(item, ("spec", "from", "volume"), "a Volume cannot be a copy of itself")
            elif other.obj.spec.encryption is not None:
                yield _diag(item, ("spec", "from", "volume"), f"Volume {src.volume!r} is encrypted: a copy "
                            "would be unreadable without its Secret (not supported)")
        else:
            src_host = src.host or spec.host
            if src_host not in hosts:
                yield _diag(item, ("spec", "from", "host"), f"unknown host {src_host!r}")
            elif src.host is None and (src_host, src.pool) not in pools:
                # another host's pools need not be declared; this host's are checked like 'pool'
                yield _diag(item, ("spec", "from", "pool"), f"unknown storage pool {src.pool!r} on host "
                            f"{src_host!r} (declare it as kind: StoragePool)")
    for item in specs.of_kind(Guest):
        g = item.obj
        for i, disk in enumerate(g.spec.disks):
            vref: str | None = getattr(disk, "volume", None)
            if vref is None:
                continue
            found = volumes.get(vref)
            if found is None:
                yield _diag(item, ("spec", "disks", i, "volume"), f"no kind: Volume named {vref!r} in the specs")
            elif not pool_paths.get((found.obj.spec.host, found.obj.spec.pool), True):
                yield _diag(item, ("spec", "disks", i, "volume"), f"Volume {vref!r} is in pool "
                            f"{found.obj.spec.pool!r}, which has no path: a guest's disk uses volumes of "
                            "pools with files (dir, fs, netfs)")
            elif found.obj.spec.host != g.spec.host:
                yield _diag(item, ("spec", "disks", i, "volume"), f"Volume {vref!r} is on host "
                            f"{found.obj.spec.host!r}, not on the guest's host {g.spec.host!r}")


# ------------------------------------------------------ guests' disks resolved


def volume_path(pool_path: str, name: str) -> str:
    """A dir (or fs) pool's volume file: the pool's directory joined with the volume's name."""
    return posixpath.join(pool_path.rstrip("/") or "/", name)


def resolve_volume_disks(items: list[Any]) -> list[Any]:
    """Guests whose disks name a Volume, with those disks given the Volume's file and format (and
    the libvirt secret of its LUKS passphrase). Unknown names are left for check_volumes."""
    from controller.spec.models import Guest, StoragePool, Volume
    from controller.spec.secrets import libvirt_secret_uuid
    from controller.spec.specset import Located

    pools = {(i.obj.spec.host, i.obj.metadata.name): i.obj for i in items if isinstance(i.obj, StoragePool)}
    volumes = {i.obj.metadata.name: i.obj for i in items if isinstance(i.obj, Volume)}
    out = []
    for item in items:
        g = item.obj
        if not isinstance(g, Guest) or not any(getattr(d, "volume", None) for d in g.spec.disks):
            out.append(item)
            continue
        disks = []
        for disk in g.spec.disks:
            vol = volumes.get(disk.volume) if disk.volume else None
            pool = pools.get((vol.spec.host, vol.spec.pool)) if vol is not None else None
            if vol is None or pool is None or not pool.spec.path or vol.spec.host != g.spec.host:
                disks.append(disk)
                continue
            enc = vol.spec.encryption
            resolved = disk.model_copy(update={"path": volume_path(pool.spec.path, vol.metadata.name),
                                               "format": vol.spec.format})
            resolved._luks_secret = libvirt_secret_uuid(enc.secret_ref) if enc else None
            disks.append(resolved)
        spec = g.spec.model_copy(update={"disks": disks})
        out.append(Located(g.model_copy(update={"spec": spec}), item.file, item.doc))
    return out
