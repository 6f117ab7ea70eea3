"""cloud-init NoCloud seed: an ISO 9660 volume labelled ``cidata`` holding user-data, meta-data, network-config.

The ISO is byte-for-byte reproducible: pycdlib stamps the wall clock (in local time) into
every directory record, Rock Ridge TF entry and volume descriptor, so builds run under a
frozen UTC clock. The planner still compares ``seed_digest`` (of the inputs, not the ISO),
which stays stable across pycdlib versions.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from time import gmtime, struct_time
from types import ModuleType
from typing import Any

from pycdlib import PyCdlib
from pycdlib.pycdlibexception import PyCdlibException

from controller.images.errors import SeedImageError

VOLUME_ID = "cidata"  # NoCloud finds its seed by this label
USER_DATA = "user-data"
META_DATA = "meta-data"
NETWORK_CONFIG = "network-config"

# 1980-01-01T00:00:00Z: the DOS epoch, the customary "no real date" of reproducible images.
# Not 0: pycdlib writes an all-zero (unspecified) volume date for exactly 0.0.
SOURCE_DATE = 315532800.0
FILE_MODE = 0o100444  # regular file, read-only: what genisoimage -r gives

_DIGEST_FORMAT = b"virtsync-seed-v1"

# The pycdlib modules that read the clock; each refers to `time` as a module global.
_CLOCK_MODULES = ("pycdlib.pycdlib", "pycdlib.headervd", "pycdlib.dates", "pycdlib.utils")
_clock_lock = threading.Lock()

# pycdlib's parser lets internal errors escape on corrupt input (seen by fuzzing a seed ISO)
_CORRUPT_ISO = (PyCdlibException, struct.error, LookupError, AttributeError, TypeError, ValueError)


class _FrozenTime:
    """Stands in for the `time` module inside pycdlib: a fixed "now", and UTC instead of local time."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def time() -> float:
        return SOURCE_DATE

    @staticmethod
    def localtime(secs: float | None = None) -> struct_time:
        # UTC, so the date fields and GMT offset do not depend on the host's TZ
        return gmtime(SOURCE_DATE if secs is None else secs)


@contextmanager
def _frozen_clock() -> Iterator[None]:
    # Patches module globals of pycdlib only (not time.time itself), so other threads' clocks
    # are untouched; the lock keeps two concurrent builds from restoring each other's patch early.
    with _clock_lock:
        modules: list[ModuleType] = [importlib.import_module(name) for name in _CLOCK_MODULES]
        saved = [(m, m.time) for m in modules if getattr(m, "time", None) is time]
        frozen = _FrozenTime()
        for module, _ in saved:
            module.time = frozen  # type: ignore[attr-defined]
        try:
            yield
        finally:
            for module, original in saved:
                module.time = original  # type: ignore[attr-defined]


def seed_files(user_data: str, meta_data: str, network_config: str | None = None) -> dict[str, bytes]:
    """The seed's files in the order they are written; no network-config file when it is None."""
    files = {USER_DATA: user_data.encode(), META_DATA: meta_data.encode()}
    if network_config is not None:
        files[NETWORK_CONFIG] = network_config.encode()
    return files


def _iso9660_name(name: str) -> str:
    # Plain ISO 9660 allows only A-Z 0-9 _; readers use the Rock Ridge or Joliet name instead.
    return "/" + name.upper().replace("-", "_") + ".;1"


def build_seed_iso(user_data: str, meta_data: str, network_config: str | None = None) -> bytes:
    """The NoCloud seed ISO (Joliet and Rock Ridge names), identical bytes for identical inputs."""
    iso = PyCdlib()
    buffers: list[io.BytesIO] = []  # pycdlib reads them only at write time
    out = io.BytesIO()
    with _frozen_clock():
        iso.new(interchange_level=3, vol_ident=VOLUME_ID, sys_ident="LINUX", joliet=3, rock_ridge="1.09")
        for name, content in seed_files(user_data, meta_data, network_config).items():
            buffers.append(io.BytesIO(content))
            iso.add_fp(buffers[-1], len(content), iso_path=_iso9660_name(name), rr_name=name,
                       joliet_path="/" + name, file_mode=FILE_MODE)
        iso.write_fp(out)
        iso.close()
    return out.getvalue()


def _root_names(iso: PyCdlib) -> tuple[str, list[str]]:
    """The kind of path to read the ISO by, and the root's file names in that kind."""
    if iso.has_rock_ridge():
        kind = "rr_path"
    elif iso.has_joliet():
        kind = "joliet_path"
    else:
        kind = "iso_path"
    _, _, files = next(iso.walk(**{kind: "/"}))
    return kind, sorted(files)


def _plain_name(kind: str, name: str) -> str:
    # Only a bare ISO 9660 volume has "NAME.;1" names; give them back without version and dot
    return name.split(";", 1)[0].rstrip(".") if kind == "iso_path" else name


def read_seed_iso(data: bytes) -> dict[str, str]:
    """The files in the root of a seed ISO, name → text (Rock Ridge names, else Joliet, else ISO 9660)."""
    iso = PyCdlib()
    try:
        iso.open_fp(io.BytesIO(data))
        try:
            kind, names = _root_names(iso)
            files: dict[str, str] = {}
            for name in names:
                out = io.BytesIO()
                iso.get_file_from_iso_fp(out, **{kind: "/" + name})
                files[_plain_name(kind, name)] = out.getvalue().decode()
            return files
        finally:
            iso.close()
    except UnicodeDecodeError as e:
        raise SeedImageError(f"seed file is not UTF-8 text: {e}") from e
    except _CORRUPT_ISO as e:
        raise SeedImageError(f"not a readable ISO 9660 seed: {type(e).__name__}: {e}") from e


def seed_digest(user_data: str, meta_data: str, network_config: str | None = None) -> str:
    """"sha256:<hex>" of the seed's content, for change detection without building the ISO.

    Each file is framed by name and length, so no two different inputs (say, text moved from
    user-data to meta-data, or an empty network-config versus none) give the same digest.
    """
    h = hashlib.sha256(_DIGEST_FORMAT)
    for name, content in seed_files(user_data, meta_data, network_config).items():
        h.update(b"\0%s\0%d\0" % (name.encode(), len(content)))
        h.update(content)
    return "sha256:" + h.hexdigest()
