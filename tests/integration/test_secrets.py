"""kind: Secret: values from files and the environment, referenced as a console password; the
value reaches the definition and appears in no output of virtsync (only its digest does)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import libvirt
import pytest

from controller.spec.loader import load_specs
from controller.spec.secrets import secret_digest
from tests.integration.conftest import VirtsyncCli, connection, guest_doc, host_doc, write_host, write_specs

PASSWORD = "s3cr3t-Vnc-9f2"
NEW_PASSWORD = "n3w-Vnc-77aa"


def _secret(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "virtsync/v1", "kind": "Secret", "metadata": {"name": name}, "spec": spec}


def _tree(tmp_path: Path, uri: str, state: str = "running") -> Path:
    specs = tmp_path / "specs"
    write_specs(specs, [host_doc(uri), _secret("console", fromFile="console.secret.yaml"),
                        guest_doc("vm1", state=state, memory="64MiB",
                                  graphics={"type": "vnc", "passwordSecretRef": "console"})])
    return specs


def _passwd(uri: str) -> str | None:
    xml = connection(uri).lookupByName("vm1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
    from lxml import etree

    return etree.fromstring(xml.encode()).find("devices/graphics").get("passwd")  # type: ignore[union-attr]


def test_a_console_password_from_a_secret_file_lands_and_is_never_printed(
        tmp_path: Path, virtsync: VirtsyncCli, caplog: pytest.LogCaptureFixture) -> None:
    uri = write_host(tmp_path)
    specs = _tree(tmp_path, uri)
    # named *.yaml on purpose: a Secret's file is a value, never read as a spec
    (specs / "console.secret.yaml").write_text(PASSWORD + "\n")
    outputs = [virtsync("validate", specs), virtsync("plan", specs), virtsync("plan", specs, "--format", "json"),
               virtsync("apply", specs, "--yes")]
    assert outputs[0].code == 0, outputs[0].err
    assert outputs[-1].code == 0, outputs[-1].out + outputs[-1].err
    assert _passwd(uri) == PASSWORD, "one trailing newline dropped, the rest is the password"
    outputs += [virtsync("plan", specs), virtsync("drift", specs, "--format", "json")]
    assert outputs[-2].code == 0, "written password reads back as wanted: " + outputs[-2].out

    (specs / "console.secret.yaml").write_text(NEW_PASSWORD)
    change = virtsync("plan", specs)
    assert change.code == 2 and "graphics" in change.out
    assert secret_digest(NEW_PASSWORD) in change.out, "the plan tells the change by the new value's digest"
    outputs += [change, virtsync("drift", specs), virtsync("apply", specs, "--yes")]
    assert outputs[-1].code == 0
    assert _passwd(uri) == NEW_PASSWORD
    inactive = connection(uri).lookupByName("vm1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert "vs:applied" in inactive and "console" in inactive  # the ownership record names the Secret…
    seen = "".join(o.out + o.err for o in outputs) + caplog.text + inactive
    for value in (PASSWORD, NEW_PASSWORD):
        assert value not in seen, "…but no output, log or record holds its value"


def test_an_update_keeps_a_console_password_set_by_hand(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = write_specs(tmp_path / "specs", [host_doc(uri), guest_doc("vm1", state="stopped", memory="64MiB",
                                                                      graphics={"type": "vnc"})])
    assert virtsync("apply", specs, "--yes").code == 0
    conn = connection(uri)
    xml = conn.lookupByName("vm1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    conn.defineXML(xml.replace("<graphics type='vnc'", "<graphics type='vnc' passwd='byhand'"))
    assert virtsync("plan", specs).code == 0, "no passwordSecretRef: the password is not virtsync's business"
    specs = write_specs(tmp_path / "specs", [host_doc(uri), guest_doc("vm1", state="stopped", memory="96MiB",
                                                                      graphics={"type": "vnc"})])
    assert virtsync("apply", specs, "--yes").code == 0
    assert _passwd(uri) == "byhand", "the definition is edited with its password, not without it"


@pytest.mark.parametrize(("secret", "message"), [
    ({"value": "x"}, "allowInline"),
    ({"fromEnv": "VIRTSYNC_TEST_NO_SUCH_VARIABLE"}, "the environment has no VIRTSYNC_TEST_NO_SUCH_VARIABLE"),
    ({"fromFile": "missing.txt"}, "cannot read missing.txt"),
    ({"fromFile": "a", "fromEnv": "B"}, "exactly one of fromFile, fromEnv or value"),
])
def test_a_secret_without_a_usable_value_is_a_validation_error_with_its_line(
        tmp_path: Path, virtsync: VirtsyncCli, secret: dict[str, Any], message: str) -> None:
    uri = write_host(tmp_path)
    path = write_specs(tmp_path / "specs", [host_doc(uri), _secret("s", **secret)])
    run = virtsync("validate", path)
    assert run.code == 1
    assert message in run.err and f"{path}:" in run.err, run.err


def test_a_reference_to_an_unknown_secret_names_the_field(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    path = write_specs(tmp_path / "specs", [host_doc(uri), guest_doc("vm1", graphics={"passwordSecretRef": "nope"})])
    run = virtsync("validate", path)
    assert run.code == 1 and "no kind: Secret named 'nope'" in run.err, run.err
    assert virtsync("apply", path, "--yes").code == 1
    assert connection(uri).listAllDomains(0) == [], "nothing reached the host"


def test_inline_and_environment_values_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRTSYNC_TEST_SECRET", "from-env")
    path = write_specs(tmp_path, [_secret("a", value="inline", allowInline=True),
                                  _secret("b", fromEnv="VIRTSYNC_TEST_SECRET")])
    result = load_specs([str(path)])
    assert not result.errors
    values = {i.obj.metadata.name: i.obj.secret_value for i in result.specs.items}
    assert values == {"a": "inline", "b": "from-env"}
    dumped = "".join(i.obj.model_dump_json() for i in result.specs.items)
    assert "from-env" not in dumped, "a dump holds where a value comes from, never the value read"
