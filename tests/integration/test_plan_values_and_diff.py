"""A plan shows each changed field's old and new value (text, Markdown, JSON), and with --diff
the unified diff of the libvirt XML that will be defined: the very XML apply then defines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import libvirt

from controller.apply.definitions import xml_diff
from tests.integration.conftest import (
    VirtsyncCli,
    connection,
    guest_doc,
    host_doc,
    network_doc,
    write_host,
    write_specs,
)
from tests.integration.test_output_schemas import assert_valid

PASSWORD = "vnc-Pa55-e2d1"


def _specs(tmp_path: Path, uri: str, **spec: Any) -> Path:
    guest: dict[str, Any] = {"state": "running", "vcpus": 1, "memory": "1GiB", "maxMemory": "4GiB"}
    guest.update(spec)
    return write_specs(tmp_path / "specs", [host_doc(uri), guest_doc("vm1", **guest)])


def _added_and_removed(diff: str) -> tuple[list[str], list[str]]:
    body = [line for line in diff.splitlines() if not line.startswith(("+++", "---", "@@"))]
    return ([line[1:].strip() for line in body if line.startswith("+")],
            [line[1:].strip() for line in body if line.startswith("-")])


def test_plan_shows_memory_change_old_and_new_value(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    assert virtsync("apply", _specs(tmp_path, uri), "--yes").code == 0
    specs = _specs(tmp_path, uri, memory="2GiB", vcpus=2, maxVcpus=2, autostart=True)

    text = virtsync("plan", specs)
    assert text.code == 2, text.out + text.err
    for line in ("memory: 1GiB → 2GiB", "vcpus: 1 → 2", "autostart: false → true"):
        assert line in text.out, text.out

    md = virtsync("plan", specs, "--format", "markdown")
    assert md.code == 2 and "memory: 1GiB → 2GiB" in md.out, md.out

    js = virtsync("plan", specs, "--format", "json")
    assert js.code == 2
    assert_valid("plan.schema.json", js.json())
    changes = {c["path"]: c for a in js.json()["hosts"][0]["actions"] for c in a["changes"]}
    assert changes["/spec/memory"]["defined"] == "1GiB" and changes["/spec/memory"]["desired"] == "2GiB"
    assert changes["/spec/vcpus"]["defined"] == 1 and changes["/spec/vcpus"]["desired"] == 2
    assert "xmlDiff" not in js.out, "the XML diff only with --diff"


def test_plan_diff_shows_domain_xml_lines(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    assert virtsync("apply", _specs(tmp_path, uri), "--yes").code == 0
    specs = _specs(tmp_path, uri, memory="2GiB")

    text = virtsync("plan", specs, "--diff")
    assert text.code == 2, text.out + text.err
    assert "--- a/kvm1/Guest/vm1.xml" in text.out and "+++ b/kvm1/Guest/vm1.xml" in text.out
    assert '-  <currentMemory unit="KiB">1048576</currentMemory>' in text.out, text.out
    assert '+  <currentMemory unit="KiB">2097152</currentMemory>' in text.out, text.out
    assert '   <memory unit="KiB">4194304</memory>' in text.out, "unchanged lines are context"

    md = virtsync("plan", specs, "--diff", "--format", "markdown")
    assert "```diff" in md.out and '+  <currentMemory unit="KiB">2097152</currentMemory>' in md.out, md.out

    js = virtsync("plan", specs, "--diff", "--format", "json")
    assert_valid("plan.schema.json", js.json())
    (action,) = js.json()["hosts"][0]["actions"]
    added, removed = _added_and_removed(action["xmlDiff"])
    assert '<currentMemory unit="KiB">2097152</currentMemory>' in added
    assert '<currentMemory unit="KiB">1048576</currentMemory>' in removed


def test_apply_defines_exactly_the_xml_the_plan_diff_showed(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    assert virtsync("apply", _specs(tmp_path, uri), "--yes").code == 0
    before = connection(uri).lookupByName("vm1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    specs = _specs(tmp_path, uri, memory="3GiB", onCrash="restart")
    shown = virtsync("plan", specs, "--diff", "--format", "json", "--commit", "abc123")
    (action,) = shown.json()["hosts"][0]["actions"]

    applied = virtsync("apply", specs, "--yes", "--diff", "--commit", "abc123")
    assert applied.code == 0, applied.out + applied.err
    assert "+++ b/kvm1/Guest/vm1.xml" in applied.out, "apply shows the diff in the plan it shows"
    after = connection(uri).lookupByName("vm1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert action["xmlDiff"] == xml_diff(before, after, "kvm1/Guest/vm1.xml"), \
        "the plan's diff is the diff between the definitions before and after the apply"
    assert "<on_crash>restart</on_crash>" in _added_and_removed(action["xmlDiff"])[0]


def test_plan_diff_of_a_new_and_a_recreated_network(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)

    def specs(address: str) -> Path:
        return write_specs(tmp_path / "specs", [host_doc(uri), network_doc(
            "lab", mode="nat", bridge="vbr-lab", ipv4={"address": address})])

    new = virtsync("plan", specs("10.7.0.1/24"), "--diff")
    assert "--- /dev/null" in new.out and "+++ b/kvm1/Network/lab.xml" in new.out, new.out
    assert '+  <ip address="10.7.0.1" prefix="24"' in new.out or '+  <ip address="10.7.0.1" netmask' in new.out, new.out
    assert virtsync("apply", specs("10.7.0.1/24"), "--yes").code == 0

    moved = virtsync("plan", specs("10.7.1.1/24"), "--diff")
    assert moved.code == 2 and "ipv4/address: 10.7.0.1/24 → 10.7.1.1/24" in moved.out, moved.out
    assert "--- a/kvm1/Network/lab.xml" in moved.out
    assert any(line.strip().startswith("-") and "10.7.0.1" in line for line in moved.out.splitlines())
    assert any(line.strip().startswith("+") and "10.7.1.1" in line for line in moved.out.splitlines())


def test_plan_diff_shows_a_console_password_change_by_digest_only(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = tmp_path / "specs"

    def tree(memory: str) -> Path:
        write_specs(specs, [host_doc(uri),
                            {"apiVersion": "virtsync/v1", "kind": "Secret", "metadata": {"name": "console"},
                             "spec": {"fromFile": "console.secret"}},
                            guest_doc("vm1", state="stopped", memory=memory,
                                      graphics={"type": "vnc", "passwordSecretRef": "console"})])
        return specs

    (specs / "console.secret").parent.mkdir(parents=True, exist_ok=True)
    (specs / "console.secret").write_text(PASSWORD)
    first = virtsync("plan", tree("64MiB"), "--diff")
    assert first.code == 2 and "<graphics" in first.out, first.out
    assert virtsync("apply", tree("64MiB"), "--yes").code == 0
    (specs / "console.secret").write_text(PASSWORD + "-new")
    changed = virtsync("plan", tree("64MiB"), "--diff")
    assert changed.code == 2, changed.out + changed.err
    lines = [line.strip() for line in changed.out.splitlines()]
    assert any(line.startswith("-") and "passwd=" in line for line in lines), changed.out
    assert any(line.startswith("+") and "passwd=" in line for line in lines), changed.out
    for out in (first.out, changed.out):
        assert PASSWORD not in out, "a console password never reaches the diff"
