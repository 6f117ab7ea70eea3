"""libvirt over TLS (issue 15, part 6): a Host `uri: qemu+tls://ADDRESS/system` with
`tls: {caFile, certFile, keyFile}`. A hermetic libvirtd listens with TLS and verifies clients
against a test CA (certificates made here with openssl); the test process reaches it over a
veth pair. plan and apply define and start a firmware-only guest; a client certificate of
another CA fails with an error naming the host; no key content is in any output."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.engine_helpers import ok, virtsync
from tests.hosts.hermetic import HermeticHost, HostFactory, ServerTls

pytestmark = [pytest.mark.e2e, pytest.mark.trust, pytest.mark.timeout(120)]

# A private /30 nothing else uses (the fleet tests use 10.97-10.99), varied per process.
SUBNET = f"10.215.{os.getpid() % 256}"
TEST_ADDR, HOST_ADDR = f"{SUBNET}.1", f"{SUBNET}.2"


def _openssl(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True)
    assert done.returncode == 0, f"openssl {' '.join(args)}:\n{done.stderr}"


def _ca(d: Path, name: str) -> tuple[Path, Path]:
    cert, key = d / f"{name}.pem", d / f"{name}-key.pem"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return cert, key


def _leaf(d: Path, name: str, ca: tuple[Path, Path], usage: str, san: str | None = None) -> tuple[Path, Path]:
    cert, key, csr, ext = (d / f"{name}.pem", d / f"{name}-key.pem", d / f"{name}.csr", d / f"{name}.ext")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(csr), "-subj", f"/O=virtsync tests/CN={name}")
    ext.write_text("basicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n"
                   f"extendedKeyUsage={usage}\n" + (f"subjectAltName={san}\n" if san else ""))
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
             "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert))
    return cert, key


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command (scripts/install-system-deps.sh test)")
    d = tmp_path / "pki"
    d.mkdir()
    ca = _ca(d, "test-ca")
    server = _leaf(d, "server", ca, "serverAuth", f"IP:{HOST_ADDR}")
    client = _leaf(d, "client", ca, "clientAuth")
    other = _ca(d, "other-ca")
    stranger = _leaf(d, "stranger", other, "clientAuth")
    return {"ca": ca[0], "server": server[0], "server_key": server[1], "client": client[0],
            "client_key": client[1], "stranger": stranger[0], "stranger_key": stranger[1], "other_ca": other[0]}


@pytest.fixture
def tls_host(hermetic_host_factory: HostFactory, pki: dict[str, Path]) -> Iterator[HermeticHost]:
    host = hermetic_host_factory("tls", tls=ServerTls(pki["ca"], pki["server"], pki["server_key"]))
    # One end of a veth pair stays here (the test's namespace), the other goes to the host's.
    here, there = f"vst{os.getpid() % 100000}a", f"vst{os.getpid() % 100000}b"
    subprocess.run(["ip", "link", "del", here], capture_output=True)  # a leftover of a killed run
    subprocess.run(["ip", "link", "add", here, "type", "veth", "peer", "name", there], check=True)
    try:
        subprocess.run(["ip", "link", "set", there, "netns", str(host.netns_pid)], check=True)
        subprocess.run(["ip", "addr", "add", f"{TEST_ADDR}/30", "dev", here], check=True)
        subprocess.run(["ip", "link", "set", here, "up"], check=True)
        for argv in (["ip", "addr", "add", f"{HOST_ADDR}/30", "dev", there], ["ip", "link", "set", there, "up"]):
            done = host.run_in_netns(argv)
            assert done.returncode == 0, done.stderr
        yield host
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True)


def _specs(d: Path, pki: dict[str, Path], cert: str, key: str) -> Path:
    d.mkdir(exist_ok=True)
    # caFile relative to the spec file, the others absolute: both forms resolve.
    shutil.copyfile(pki["ca"], d / "ca.pem")
    (d / "lab.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: tlshost}}
spec:
  uri: qemu+tls://{HOST_ADDR}/system
  connectTimeout: 5s
  tls: {{caFile: ca.pem, certFile: {pki[cert]}, keyFile: {pki[key]}}}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: fw}}
spec:
  host: tlshost
  memory: 64MiB
""")
    return d


def _key_lines(*keys: Path) -> list[str]:
    return [line for k in keys for line in k.read_text().splitlines() if line and "-----" not in line]


def test_plan_and_apply_over_tls_with_client_certificates(
    tls_host: HermeticHost, pki: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    specs = _specs(tmp_path / "specs", pki, "client", "client_key")
    outputs = []

    plan = virtsync("plan", str(specs))
    outputs.append(plan)
    out = ok(plan, 2)
    print(out)
    assert f"qemu+tls://{HOST_ADDR}/system" in out and "pkipath" not in out
    assert "+ define Guest fw" in out, out

    apply = virtsync("apply", str(specs), "--yes")
    outputs.append(apply)
    ok(apply)
    assert tls_host.virsh("domstate", "fw").strip() == "running"

    again = virtsync("plan", str(specs), "--format", "json")
    outputs.append(again)
    ok(again)
    # The per-connection pkipath directories are gone once libvirt has read the files.
    assert not any((runtime / "virtsync" / "pki").iterdir())

    # A client certificate of another CA: refused, and the error names the host.
    bad = _specs(tmp_path / "bad", pki, "stranger", "stranger_key")
    refused = virtsync("plan", str(bad))
    outputs.append(refused)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    text = refused.stdout + refused.stderr
    print(f"a client certificate of another CA:\n{text}")
    assert "tlshost" in text and "Traceback" not in text
    assert "certificate" in text.lower() and str(pki["stranger"]) in text, text
    # The same, past the client's own check (its CA file also holds the other CA): the
    # host's libvirtd verifies the client certificate and refuses it.
    both = tmp_path / "both.pem"
    both.write_text(pki["ca"].read_text() + pki["other_ca"].read_text())
    shutil.copyfile(both, bad / "ca.pem")
    refused = virtsync("plan", str(bad))
    outputs.append(refused)
    text = refused.stdout + refused.stderr
    print(f"refused by the host:\n{text}")
    assert refused.returncode == 1 and "tlshost" in text and "refused this client certificate" in text, text
    assert tls_host.virsh("domstate", "fw").strip() == "running"

    secrets = _key_lines(pki["client_key"], pki["stranger_key"], pki["server_key"])
    for proc in outputs:
        for line in secrets:
            assert line not in proc.stdout and line not in proc.stderr
        assert "PRIVATE KEY" not in proc.stdout + proc.stderr


def test_tls_files_are_checked_when_the_specs_load(tmp_path: Path, pki: dict[str, Path]) -> None:
    specs = _specs(tmp_path / "specs", pki, "client", "client_key")
    (specs / "ca.pem").unlink()
    out = virtsync("validate", str(specs))
    assert out.returncode == 1
    assert "caFile ca.pem: no such file" in out.stdout + out.stderr
    lab = specs / "lab.yaml"
    lab.write_text(lab.read_text().replace(f"qemu+tls://{HOST_ADDR}/system", "qemu+tcp://h/system"))
    out = virtsync("validate", str(specs))
    assert out.returncode == 1 and "needs a +tls URI" in out.stdout + out.stderr
