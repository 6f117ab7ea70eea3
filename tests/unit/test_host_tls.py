"""A Host's tls (qemu+tls:// client certificates): spec checks, path resolution, and the
pkipath URI and directory libvirt is given."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from controller.hypervisor.connection import PKI_NAMES, TlsPaths, make_pkipath, pki_base, with_pkipath
from controller.spec.loader import load_specs
from controller.spec.models import Host

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(("uri", "expected"), [
    ("qemu+tls://kvm1/system", "qemu+tls://kvm1/system?pkipath=/run/p/kvm1-x"),
    ("qemu+tls://kvm1:16514/system?no_verify=0", "qemu+tls://kvm1:16514/system?no_verify=0&pkipath=/run/p/kvm1-x"),
    ("xen+tls://root@10.0.0.2/system?pkipath=/old&keepalive_interval=5",
     "xen+tls://root@10.0.0.2/system?keepalive_interval=5&pkipath=/run/p/kvm1-x"),
])
def test_pkipath_is_appended_and_other_parameters_are_kept(uri: str, expected: str) -> None:
    assert with_pkipath(uri, "/run/p/kvm1-x") == expected


def test_pkipath_is_quoted() -> None:
    assert with_pkipath("qemu+tls://h/system", "/tmp/a b&c") == "qemu+tls://h/system?pkipath=/tmp/a%20b%26c"


def test_pki_base_prefers_the_runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert pki_base() == tmp_path / "virtsync" / "pki"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "absent"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert pki_base() == tmp_path / "cache" / "virtsync" / "pki"


def test_pkipath_directory_is_private_and_links_the_files_by_libvirts_names(tmp_path: Path) -> None:
    files = {attr: tmp_path / f"{attr}.pem" for attr in PKI_NAMES}
    for f in files.values():
        f.write_text("x")
    certs = TlsPaths(*(str(files[a]) for a in ("ca_file", "cert_file", "key_file")))
    path = make_pkipath("kvm/1", certs, base=tmp_path / "pki")
    assert path.parent == tmp_path / "pki" and path.name.startswith("kvm_1-")
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert sorted(p.name for p in path.iterdir()) == ["cacert.pem", "clientcert.pem", "clientkey.pem"]
    for attr, name in PKI_NAMES.items():
        assert os.readlink(path / name) == str(files[attr])


def _host(tmp: Path, uri: str, tls: str) -> Path:
    (tmp / "h.yaml").write_text(f"apiVersion: virtsync/v1\nkind: Host\nmetadata: {{name: h1}}\n"
                                f"spec:\n  uri: {uri}\n  tls: {tls}\n")
    return tmp


def test_tls_paths_resolve_relative_to_the_spec_file(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    for n in ("ca.pem", "c.pem", "k.pem"):
        (tmp_path / "pki" / n).write_text("x")
    result = load_specs([_host(tmp_path, "qemu+tls://h/system",
                               f"{{caFile: pki/ca.pem, certFile: pki/c.pem, keyFile: {tmp_path}/pki/k.pem}}")])
    assert not result.errors, result.errors
    tls = next(h for h in result.specs.hosts if isinstance(h, Host)).spec.tls
    assert tls is not None
    assert (tls.ca_file, tls.cert_file, tls.key_file) == tuple(
        str(tmp_path / "pki" / n) for n in ("ca.pem", "c.pem", "k.pem"))


def test_a_missing_tls_file_is_an_error_at_its_field(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    (tmp_path / "c.pem").write_text("x")
    result = load_specs([_host(tmp_path, "qemu+tls://h/system",
                               "\n    caFile: ca.pem\n    certFile: c.pem\n    keyFile: nokey.pem")])
    [err] = result.errors
    assert (err.line, err.message) == (9, "host h1: tls keyFile nokey.pem: no such file")


def test_tls_needs_a_tls_uri_and_all_three_files(tmp_path: Path) -> None:
    result = load_specs([_host(tmp_path, "qemu+ssh://h/system", "{caFile: a, certFile: b, keyFile: c}")])
    assert any("needs a +tls URI" in e.message and e.line == 6 for e in result.errors), result.errors
    result = load_specs([_host(tmp_path, "qemu+tls://h/system", "{caFile: a, certFile: b}")])
    assert any("keyFile" in e.message for e in result.errors), result.errors
