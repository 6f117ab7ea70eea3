"""The disks a guest really has: its declared disks plus the cloud-init seed CD-ROM."""

from __future__ import annotations

from typing import Literal

from controller.spec.models import Disk, GuestSpec

SEED_DISK = "cidata"  # the seed's disk name (and ua- alias); reserved


def seed_volume(guest_name: str) -> str:
    return f"{guest_name}-cidata.iso"


def seed_pool(spec: GuestSpec) -> str | None:
    return next((d.pool for d in spec.disks if d.pool), None)


def effective_disks(spec: GuestSpec) -> list[Disk]:
    disks = list(spec.disks)
    pool = seed_pool(spec)
    if spec.cloud_init is not None and pool is not None:
        bus: Literal["sata", "ide"] = "sata" if "q35" in (spec.machine or "") else "ide"
        # Built, not parsed: the seed is virtsync's own disk, its fields are known good.
        disks.append(Disk.model_construct(name=SEED_DISK, pool=pool, path=None, format="raw", device="cdrom",
                                          bus=bus, size=None, from_=None, sha256=None, clone="full",
                                          delete_policy="delete"))
    return disks


def boot_volume(guest_name: str, local_path: str) -> str:
    """The pool volume an uploaded kernel or initrd lives in."""
    return f"boot-{guest_name}-{local_path.rsplit('/', 1)[-1]}"


def boot_files(guest_name: str, spec: GuestSpec, pool_paths: dict[str, str]) -> tuple[str | None, str | None]:
    """(kernel, initrd) as the host sees them: the spec's paths, or the uploaded volumes' paths."""
    boot = spec.boot
    if boot is None:
        return None, None
    if boot.pool is None:
        return boot.kernel, boot.initrd
    base = pool_paths.get(boot.pool, "").rstrip("/")
    return tuple(f"{base}/{boot_volume(guest_name, p)}" if p else None  # type: ignore[return-value]
                 for p in (boot.kernel, boot.initrd))


def image_volume(sha256: str, url: str) -> str:
    """Downloaded images live in the pool under their digest: fetched once, shared."""
    digest = sha256.removeprefix("sha256:").lower()
    name = url.rsplit("/", 1)[-1].split("?", 1)[0]
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ".img"
    return f"image-{digest[:16]}{suffix}"
