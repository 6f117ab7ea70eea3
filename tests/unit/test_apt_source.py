"""The build scripts take the machine's own apt archive: no mirror host lives in the repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "apt-source.sh"


def _run(etc: Path, which: str = "main") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), which], env={"APT_ETC": str(etc), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=10, check=False)


def test_apt_source_reads_deb822_stanzas_main_and_security(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "# comment\nTypes: deb deb-src\nURIs: http://archive.test/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://security.test/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n")
    assert _run(tmp_path).stdout.strip() == "http://archive.test/debian"
    assert _run(tmp_path, "security").stdout.strip() == "http://security.test/debian-security"


def test_apt_source_skips_disabled_stanzas_and_falls_back_to_one_line_lists(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "off.sources").write_text(
        "Types: deb\nURIs: http://off.test/debian\nSuites: bookworm\nEnabled: no\n")
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.test/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://list.test/debian bookworm main\n"
        "deb http://list.test/security bookworm-security main\n")
    assert _run(tmp_path).stdout.strip() == "http://list.test/debian"
    assert _run(tmp_path, "security").stdout.strip() == "http://list.test/security"


def test_apt_source_without_any_source_fails_with_the_reason(tmp_path: Path) -> None:
    proc = _run(tmp_path)
    assert proc.returncode == 1
    assert "has no main archive" in proc.stderr


def test_apt_source_refuses_an_unknown_archive_kind(tmp_path: Path) -> None:
    assert _run(tmp_path, "backports").returncode == 64


MIRROR_HOSTS = ("deb.debian.org", "ftp.debian.org", "security.debian.org", "archive.ubuntu.com",
                "security.ubuntu.com", "snapshot.debian.org", "pypi.org", "registry.npmjs.org")


@pytest.mark.parametrize("host", MIRROR_HOSTS)
def test_no_mirror_or_registry_host_is_written_in_the_repository(host: str) -> None:
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True,
                             check=True).stdout.split()
    hits = [f for f in tracked if f != "tests/unit/test_apt_source.py" and (ROOT / f).is_file()
            and host in (ROOT / f).read_text(errors="replace")]
    assert not hits, f"{host} is named in {hits}"
