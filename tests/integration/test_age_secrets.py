"""kind: Secret values kept in git encrypted with age (`encryption: age`), decrypted in memory with
the instance's identity (--age-identity FILE or VIRTSYNC_AGE_IDENTITY_FILE), and ${secret:NAME} in
cloud-init text. The age files are made by the real `age` tool; the value reaches the definition
and the seed, and appears in no output of virtsync."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Any

import libvirt
import pytest
from lxml import etree

from controller.hypervisor.operations import HostOps
from controller.hypervisor.pool_xml import volume_xml
from controller.images.seed import read_seed_iso
from controller.spec.loader import load_specs
from controller.spec.models import Secret
from controller.spec.secrets import age_identity
from tests.integration.conftest import VirtsyncCli, connection, guest_doc, host_doc, write_host, write_specs

PASSWORD = "ag3-Vnc-5ecr3t"
NEW_PASSWORD = "n3w-ag3-Vnc-77"
NO_IDENTITY = "no age identity: give --age-identity FILE or VIRTSYNC_AGE_IDENTITY_FILE"
FROM_FILE, ENCRYPTION = '"fromFile"', '"encryption"'  # the keys' lines in write_specs' JSON


def _keygen(path: Path) -> str:
    """A new age identity in ``path`` (as age-keygen writes it); its public key (age1…)."""
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    return subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True,
                          text=True).stdout.strip()


def _encrypt(value: str, recipient: str, out: Path, armor: bool = False) -> None:
    """``value`` encrypted by age to ``recipient``, through a pipe (no plaintext file)."""
    subprocess.run(["age", "-r", recipient, *(["-a"] if armor else []), "-o", str(out)],
                   input=(value + "\n").encode(), check=True, capture_output=True)


def _secret(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "virtsync/v1", "kind": "Secret", "metadata": {"name": name}, "spec": spec}


def _line_of(path: Path, text: str, nth: int = 0) -> int:
    return [i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line][nth]


def _passwd(uri: str) -> str | None:
    xml = connection(uri).lookupByName("vm1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
    return etree.fromstring(xml.encode()).find("devices/graphics").get("passwd")  # type: ignore[union-attr]


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, str]:
    """The instance's identity file (outside the spec tree) and its recipient."""
    (tmp_path / "keys").mkdir()
    key = tmp_path / "keys" / "key.txt"
    return key, _keygen(key)


def _console_tree(tmp_path: Path, uri: str, file: str = "console.age") -> Path:
    specs = tmp_path / "specs"
    write_specs(specs, [host_doc(uri), _secret("console", fromFile=file, encryption="age"),
                        guest_doc("vm1", state="stopped", memory="64MiB",
                                  graphics={"type": "vnc", "passwordSecretRef": "console"})])
    return specs


@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armored"])
def test_an_age_encrypted_console_password_lands_and_is_never_printed(
        tmp_path: Path, virtsync: VirtsyncCli, keys: tuple[Path, str], armor: bool,
        caplog: pytest.LogCaptureFixture) -> None:
    key, recipient = keys
    uri = write_host(tmp_path)
    specs = _console_tree(tmp_path, uri)
    _encrypt(PASSWORD, recipient, specs / "console.age", armor=armor)
    assert (b"-----BEGIN AGE ENCRYPTED FILE-----" in (specs / "console.age").read_bytes()) is armor
    ident = ("--age-identity", str(key))
    outputs = [virtsync("validate", specs, *ident), virtsync("plan", specs, *ident),
               virtsync("plan", specs, "--format", "json", *ident), virtsync("apply", specs, "--yes", *ident)]
    assert outputs[0].code == 0, outputs[0].err
    assert outputs[-1].code == 0, outputs[-1].out + outputs[-1].err
    assert _passwd(uri) == PASSWORD, "decrypted, one trailing newline dropped"
    outputs.append(virtsync("plan", specs, *ident))
    assert outputs[-1].code == 0, "the written password reads back as wanted: " + outputs[-1].out

    _encrypt(NEW_PASSWORD, recipient, specs / "console.age", armor=armor)
    change = virtsync("plan", specs, *ident)
    assert change.code == 2 and "graphics" in change.out, change.out + change.err
    outputs += [change, virtsync("drift", specs, "--format", "json", *ident), virtsync("apply", specs, "--yes", *ident)]
    assert outputs[-1].code == 0
    assert _passwd(uri) == NEW_PASSWORD
    inactive = connection(uri).lookupByName("vm1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    seen = "".join(o.out + o.err for o in outputs) + caplog.text + inactive
    for value in (PASSWORD, NEW_PASSWORD):
        assert value not in seen, "no output, log or ownership record holds the value"
    plain = [p for p in tmp_path.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]
    assert plain == [], "the plaintext was written to disk"


def test_the_identity_from_the_environment(tmp_path: Path, virtsync: VirtsyncCli, keys: tuple[Path, str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    key, recipient = keys
    specs = _console_tree(tmp_path, write_host(tmp_path))
    _encrypt(PASSWORD, recipient, specs / "console.age")
    monkeypatch.setenv("VIRTSYNC_AGE_IDENTITY_FILE", str(key))
    run = virtsync("validate", specs)
    assert run.code == 0, run.err
    result = load_specs([specs])
    assert not result.errors
    assert [s.obj.secret_value for s in result.specs.of_kind(Secret)] == [PASSWORD]
    # --age-identity wins over the environment
    monkeypatch.setenv("VIRTSYNC_AGE_IDENTITY_FILE", str(tmp_path / "nowhere.txt"))
    assert virtsync("validate", specs).code == 1
    assert virtsync("validate", specs, "--age-identity", str(key)).code == 0


def test_a_missing_or_wrong_identity_is_a_validation_error_at_the_secret(
        tmp_path: Path, virtsync: VirtsyncCli, keys: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIRTSYNC_AGE_IDENTITY_FILE", raising=False)
    _, recipient = keys
    uri = write_host(tmp_path)
    specs = _console_tree(tmp_path, uri)
    _encrypt(PASSWORD, recipient, specs / "console.age")
    where = f"{specs / 'specs.yaml'}:{_line_of(specs / 'specs.yaml', FROM_FILE)}:"

    missing = virtsync("validate", specs)
    assert missing.code == 1
    assert f"{where}" in missing.err and NO_IDENTITY in missing.err, missing.err
    refused = virtsync("apply", specs, "--yes")
    assert refused.code == 1 and NO_IDENTITY in refused.err
    with pytest.raises(libvirt.libvirtError):
        connection(uri).lookupByName("vm1")  # nothing was applied

    other = tmp_path / "keys" / "other.txt"
    _keygen(other)
    wrong = virtsync("validate", specs, "--age-identity", str(other))
    assert wrong.code == 1 and f"{where}" in wrong.err
    assert "the identity cannot decrypt console.age" in wrong.err, wrong.err
    gone = virtsync("validate", specs, "--age-identity", str(tmp_path / "keys" / "gone.txt"))
    assert gone.code == 1 and "cannot read the age identity" in gone.err and where in gone.err
    not_a_key = virtsync("validate", specs, "--age-identity", str(specs / "console.age"))
    assert not_a_key.code == 1 and "holds no identity" in not_a_key.err
    for run in (missing, refused, wrong, gone, not_a_key):
        assert PASSWORD not in run.out + run.err


def test_an_encrypted_secret_needs_an_age_file_and_fromfile(
        tmp_path: Path, virtsync: VirtsyncCli, keys: tuple[Path, str]) -> None:
    key, _ = keys
    specs = _console_tree(tmp_path, write_host(tmp_path), file="console.txt")
    (specs / "console.txt").write_text(PASSWORD + "\n")
    run = virtsync("validate", specs, "--age-identity", str(key))
    assert run.code == 1 and "console.txt is not an age file" in run.err, run.err
    assert PASSWORD not in run.out + run.err
    write_specs(specs, [_secret("x", fromEnv="X", encryption="age")])
    run = virtsync("validate", specs)
    assert run.code == 1 and "encryption: age decrypts a file: use fromFile" in run.err, run.err
    assert f"{specs / 'specs.yaml'}:{_line_of(specs / 'specs.yaml', ENCRYPTION)}:" in run.err


# ------------------------------------------------------------ cloud-init


def _cloud_tree(tmp_path: Path, uri: str, user_data: str) -> Path:
    (tmp_path / "pool").mkdir(exist_ok=True)
    host = host_doc(uri)
    host["spec"]["storage"] = {"allowedDirs": [str(tmp_path)]}
    pool = {"apiVersion": "virtsync/v1", "kind": "StoragePool", "metadata": {"name": "p"},
            "spec": {"host": "kvm1", "path": str(tmp_path / "pool")}}
    return write_specs(tmp_path / "specs", [
        host, pool, _secret("db", fromFile="db.age", encryption="age"),
        guest_doc("vm1", state="stopped", memory="64MiB", disks=[{"name": "root", "pool": "p", "size": "16MiB"}],
                  cloudInit={"userData": user_data})]).parent


@pytest.fixture
def seeds(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The seed ISOs virtsync writes: the test driver cannot upload a volume's content, so the
    bytes are caught on their way to it (the volume itself is made, empty)."""
    written: list[bytes] = []

    def write_volume(self: HostOps, pool: str, name: str, data: bytes) -> None:
        assert name.endswith("-cidata.iso")
        written.append(data)
        p = self.conn.get().storagePoolLookupByName(pool)
        with contextlib.suppress(libvirt.libvirtError):
            p.storageVolLookupByName(name).delete(0)
        p.createXML(volume_xml(name, len(data), "raw"), 0)

    monkeypatch.setattr(HostOps, "write_volume", write_volume)
    return written


USER_DATA = "#cloud-config\nchpasswd: {expire: false}\npassword: ${secret:db}\n"


def test_a_secret_in_cloud_init_lands_in_the_seed_and_its_change_changes_the_plan(
        tmp_path: Path, virtsync: VirtsyncCli, keys: tuple[Path, str], seeds: list[bytes],
        caplog: pytest.LogCaptureFixture) -> None:
    key, recipient = keys
    uri = write_host(tmp_path)
    specs = _cloud_tree(tmp_path, uri, USER_DATA)
    _encrypt(PASSWORD, recipient, specs / "db.age", armor=True)
    ident = ("--age-identity", str(key))
    first = virtsync("plan", specs, *ident)
    assert first.code == 2 and "write-seed" in first.out, first.out + first.err
    applied = virtsync("apply", specs, "--yes", *ident)
    assert applied.code == 0, applied.out + applied.err
    assert len(seeds) == 1
    assert read_seed_iso(seeds[0])["user-data"] == USER_DATA.replace("${secret:db}", PASSWORD)
    same = virtsync("plan", specs, *ident)
    assert same.code == 0, same.out

    _encrypt(NEW_PASSWORD, recipient, specs / "db.age")  # the same spec text, a new value
    change = virtsync("plan", specs, *ident)
    assert change.code == 2 and "cloudInit" in change.out and "write-seed" in change.out, change.out
    again = virtsync("apply", specs, "--yes", *ident)
    assert again.code == 0, again.out + again.err
    assert read_seed_iso(seeds[-1])["user-data"] == USER_DATA.replace("${secret:db}", NEW_PASSWORD)
    with age_identity(str(key)):
        loaded = load_specs([specs]).raise_for_errors()
    ci = loaded.guests[0].spec.cloud_init
    assert ci is not None and ci.user_data is not None and NEW_PASSWORD in ci.user_data

    seen = "".join(o.out + o.err for o in (first, applied, same, change, again)) + caplog.text
    seen += connection(uri).lookupByName("vm1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    for value in (PASSWORD, NEW_PASSWORD):
        assert value not in seen, "only the cloud-init digest is shown"


def test_an_unknown_secret_in_cloud_init_is_a_validation_error_at_its_field(
        tmp_path: Path, virtsync: VirtsyncCli, keys: tuple[Path, str]) -> None:
    key, recipient = keys
    specs = _cloud_tree(tmp_path, write_host(tmp_path), "#cloud-config\npassword: ${secret:nope}\n")
    _encrypt(PASSWORD, recipient, specs / "db.age")
    run = virtsync("validate", specs, "--age-identity", str(key))
    assert run.code == 1, run.err
    line = _line_of(specs / "specs.yaml", '"userData"')
    assert f"{specs / 'specs.yaml'}:{line}:" in run.err
    assert "${secret:nope}: no kind: Secret named 'nope' in the specs" in run.err, run.err


def test_a_secret_that_cannot_be_decrypted_is_reported_once_at_the_secret(
        tmp_path: Path, virtsync: VirtsyncCli, keys: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIRTSYNC_AGE_IDENTITY_FILE", raising=False)
    _, recipient = keys
    specs = _cloud_tree(tmp_path, write_host(tmp_path), USER_DATA)
    _encrypt(PASSWORD, recipient, specs / "db.age")
    run = virtsync("validate", specs)
    assert run.code == 1
    errors = [line for line in run.err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and NO_IDENTITY in errors[0], run.err
