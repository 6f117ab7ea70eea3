"""The cloud-init NoCloud seed ISO: content round trip, 'cidata' label, byte-identical rebuilds."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.images.errors import SeedImageError
from controller.images.seed import build_seed_iso, read_seed_iso, seed_digest

pytestmark = pytest.mark.timeout(30)

SECTOR = 2048
USER = "#cloud-config\nhostname: web-1\nusers:\n  - name: ops\n"
META = "instance-id: web-1\nlocal-hostname: web-1\n"
NET = "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n"


def volume_ids(iso: bytes) -> dict[int, str]:
    """Volume identifier per descriptor type (1 primary, 2 supplementary/Joliet), read per ECMA-119."""
    ids: dict[int, str] = {}
    sector = 16
    while True:
        vd = iso[sector * SECTOR:(sector + 1) * SECTOR]
        assert vd[1:6] == b"CD001"
        if vd[0] == 255:
            return ids
        raw = vd[40:72]
        ids[vd[0]] = (raw.decode("utf-16-be") if vd[0] == 2 else raw.decode("ascii")).rstrip()
        sector += 1


def test_round_trip_with_network_config() -> None:
    iso = build_seed_iso(USER, META, NET)
    assert read_seed_iso(iso) == {"user-data": USER, "meta-data": META, "network-config": NET}


def test_round_trip_non_ascii_and_large_user_data() -> None:
    line = "# héllo wörld — 日本語 ✓ 🚀\r\n"
    user = "#cloud-config\n" + line * (200_000 // len(line.encode()) + 1)
    assert len(user.encode()) > 200_000
    meta = "instance-id: ünïcode\n"
    assert read_seed_iso(build_seed_iso(user, meta)) == {"user-data": user, "meta-data": meta}


def test_no_network_config_file_when_none() -> None:
    assert set(read_seed_iso(build_seed_iso(USER, META))) == {"user-data", "meta-data"}
    # an empty network-config is still a file: it is not the same seed as none
    assert read_seed_iso(build_seed_iso(USER, META, ""))["network-config"] == ""


def test_volume_id_is_cidata_in_primary_and_joliet_descriptors() -> None:
    iso = build_seed_iso(USER, META, NET)
    assert iso[32769:32774] == b"CD001"  # what file(1) and blkid look for
    assert len(iso) % SECTOR == 0
    assert volume_ids(iso) == {1: "cidata", 2: "cidata"}  # blkid reports the Joliet label when present


def test_rebuild_is_byte_identical() -> None:
    assert build_seed_iso(USER, META, NET) == build_seed_iso(USER, META, NET)
    assert build_seed_iso(USER, META, NET) != build_seed_iso(USER + "\n", META, NET)


def test_bytes_do_not_depend_on_clock_or_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    first = build_seed_iso(USER, META, NET)
    time.sleep(1.1)  # directory dates have 1 s resolution
    for tz in ("Asia/Kolkata", "America/St_Johns", "UTC"):
        monkeypatch.setenv("TZ", tz)
        time.tzset()
        assert build_seed_iso(USER, META, NET) == first, tz
    monkeypatch.undo()
    time.tzset()


def test_clock_patch_is_undone() -> None:
    build_seed_iso(USER, META)
    for name in ("pycdlib.pycdlib", "pycdlib.headervd", "pycdlib.dates", "pycdlib.utils"):
        assert sys.modules[name].time is time, name


@settings(max_examples=25, deadline=None)
@given(st.text(), st.text(), st.none() | st.text())
def test_round_trip_property(user: str, meta: str, net: str | None) -> None:
    expected = {"user-data": user, "meta-data": meta}
    if net is not None:
        expected["network-config"] = net
    assert read_seed_iso(build_seed_iso(user, meta, net)) == expected


def test_read_rejects_what_is_not_an_iso() -> None:
    for junk in (b"", b"\0" * 40_000, build_seed_iso(USER, META)[:34_000]):
        with pytest.raises(SeedImageError):
            read_seed_iso(junk)


def test_seed_digest() -> None:
    d = seed_digest(USER, META, NET)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", d)
    assert d == seed_digest(USER, META, NET)
    assert seed_digest(USER, META) == seed_digest(USER, META, None)
    others = {
        seed_digest(USER, META),
        seed_digest(USER, META, ""),
        seed_digest(USER + META, ""),
        seed_digest(USER, META + "x", NET),
        seed_digest(META, USER, NET),
        d,
    }
    assert len(others) == 6


# What cloud-init's host sees: optional checks with the tools that happen to be installed

def _tool_output(tool: str, args: list[str], tmp_path: Path) -> str:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed")
    path = tmp_path / "seed.iso"
    path.write_bytes(build_seed_iso(USER, META, NET))
    return subprocess.run([tool, *args, str(path)], check=True, capture_output=True, text=True).stdout


def test_blkid_sees_iso9660_labelled_cidata(tmp_path: Path) -> None:
    out = _tool_output("blkid", ["-p", "-o", "export"], tmp_path)
    assert "TYPE=iso9660" in out.splitlines()
    assert "LABEL=cidata" in out.splitlines()


def test_file_sees_iso9660(tmp_path: Path) -> None:
    assert "ISO 9660" in _tool_output("file", ["-b"], tmp_path)


@pytest.mark.parametrize("tool,args", [("isoinfo", ["-R", "-f", "-i"]), ("isoinfo", ["-J", "-f", "-i"]),
                                       ("bsdtar", ["-tf"]), ("7z", ["l", "-ba"])])
def test_file_names_as_other_readers_see_them(tool: str, args: list[str], tmp_path: Path) -> None:
    out = _tool_output(tool, args, tmp_path)
    names = {line.split()[-1].lstrip("/") for line in out.splitlines() if line.strip()}
    assert {"user-data", "meta-data", "network-config"} <= names
