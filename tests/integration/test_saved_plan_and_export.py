"""Saved plans are refused once a host changed; export round-trips to an empty plan."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import libvirt
from lxml import etree
from ruamel.yaml import YAML

from controller.hypervisor.ownership import find_owner
from tests.integration.conftest import (
    QUICKSTART,
    VirtsyncCli,
    connection,
    guest_doc,
    host_doc,
    snapshot,
    unmanaged_domain,
    unmanaged_network,
    write_host,
    write_specs,
)


def test_saved_plan_is_refused_after_an_out_of_band_change(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    assert virtsync("apply", QUICKSTART, "--connect", uri, "--yes").code == 0
    conn = connection(uri)
    conn.lookupByName("web1").setMemoryFlags(200 * 1024, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    plan_file = tmp_path / "plan.json"
    made = virtsync("plan", QUICKSTART, "--connect", uri, "--out", plan_file)
    assert made.code == 2
    saved = json.loads(plan_file.read_text())
    assert saved["kind"] == "plan" and saved["connect"] == uri

    conn.lookupByName("web2").destroy()  # another writer, after the plan was made
    before = snapshot(conn)
    refused = virtsync("apply", plan_file)
    assert refused.code == 1
    assert "changed since the plan was made" in refused.err
    assert snapshot(conn) == before, "nothing changed"


def test_saved_plan_applies_when_nothing_changed(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    plan_file = tmp_path / "plan.json"
    assert virtsync("plan", QUICKSTART, "--connect", uri, "--out", plan_file).code == 2
    applied = virtsync("apply", plan_file)  # a reviewed plan needs no --yes
    assert applied.code == 0, applied.out + applied.err
    assert connection(uri).lookupByName("web1").isActive()
    assert virtsync("plan", QUICKSTART, "--connect", uri).code == 0


def test_saved_plan_is_refused_when_the_specs_changed(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = tmp_path / "lab.yaml"
    specs.write_text((QUICKSTART / "lab.yaml").read_text())
    plan_file = tmp_path / "plan.json"
    assert virtsync("plan", specs, "--connect", uri, "--out", plan_file).code == 2
    specs.write_text(specs.read_text().replace("memory: 128MiB\n  maxMemory", "memory: 192MiB\n"
                                               "  maxMemory"))
    refused = virtsync("apply", plan_file)
    assert refused.code == 1 and "specs changed since the plan was made" in refused.err
    assert [d.name() for d in connection(uri).listAllDomains(0)] == []


def test_export_of_a_host_plans_no_changes(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    body = (unmanaged_domain("legacy") + unmanaged_domain("old", running=False)
            + unmanaged_network("legacy-net", 7))
    uri = write_host(tmp_path, body)
    assert virtsync("apply", QUICKSTART, "--connect", uri, "--yes").code == 0
    conn = connection(uri)
    conn.lookupByName("old").setAutostart(1)

    out = tmp_path / "out.yaml"
    exported = virtsync("export", "--connect", uri, "--host", "kvm1", "-o", out)
    assert exported.code == 0, exported.err
    text = out.read_text()
    for name in ("web1", "web2", "legacy", "old", "lab", "legacy-net"):
        assert f"name: {name}\n" in text, name
    assert text.count("adopt: true") == 3  # the unmanaged guests and network

    assert virtsync("validate", out).code == 0
    plan = virtsync("plan", out, "--connect", uri)
    assert plan.code == 0, plan.out + plan.err
    assert "No changes" in plan.out
    before = snapshot(conn)
    assert virtsync("apply", out, "--connect", uri, "--yes").code == 0
    assert snapshot(conn) == before


def _two_racks(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    uris = {name: write_host(tmp_path, name=f"{name}.xml") for name in ("a1", "b1")}
    docs = []
    for name, uri in uris.items():
        host = host_doc(uri, name)
        host["metadata"]["labels"] = {"rack": name[0]}
        docs += [host, guest_doc(f"g-{name}", host=name, memory="64MiB")]
    return write_specs(tmp_path / "specs", docs), uris


def test_a_plan_saved_with_a_host_selector_applies_to_the_hosts_it_was_made_for(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    specs, uris = _two_racks(tmp_path)
    plan_file = tmp_path / "plan.json"
    made = virtsync("plan", specs, "--host-selector", "rack=a", "--out", plan_file)
    assert made.code == 2, made.err
    assert json.loads(plan_file.read_text())["hostsFilter"] == ["a1"]

    applied = virtsync("apply", plan_file)
    assert applied.code == 0, applied.out + applied.err
    assert "changed since the plan was made" not in applied.err
    assert [d.name() for d in connection(uris["a1"], "a1").listAllDomains(0)] == ["g-a1"]
    assert connection(uris["b1"], "b1").listAllDomains(0) == [], "the other rack is left alone"


def test_a_saved_plan_refuses_hosts_it_was_not_made_for(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    specs, uris = _two_racks(tmp_path)
    plan_file = tmp_path / "plan.json"
    assert virtsync("plan", specs, "--host-selector", "rack=a", "--out", plan_file).code == 2
    refused = virtsync("apply", plan_file, "--host", "b1")
    assert refused.code == 64
    assert "the saved plan was made for hosts a1" in refused.err
    assert connection(uris["b1"], "b1").listAllDomains(0) == []


def test_apply_of_a_saved_plan_records_the_commit_of_the_spec_tree(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    specs, uris = _two_racks(tmp_path)
    repo = specs.parent

    def git(*argv: str, where: Path = repo) -> str:
        return subprocess.run(["git", "-C", str(where), *argv], check=True, capture_output=True,
                              text=True).stdout.strip()

    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@example.net", "commit", "-q", "--allow-empty", "-m", "specs")
    git("add", specs.name)
    git("-c", "user.name=t", "-c", "user.email=t@example.net", "commit", "-q", "-m", "the specs")
    elsewhere = tmp_path / "plans"  # a repository of its own, with another HEAD
    elsewhere.mkdir()
    git("init", "-q", where=elsewhere)
    git("-c", "user.name=t", "-c", "user.email=t@example.net", "commit", "-q", "--allow-empty", "-m", "plans",
        where=elsewhere)
    plan_file = elsewhere / "plan.json"
    assert virtsync("plan", specs, "--host", "a1", "--out", plan_file).code == 2
    applied = virtsync("apply", plan_file)
    assert applied.code == 0, applied.err
    dom = connection(uris["a1"], "a1").lookupByName("g-a1")
    owner = find_owner(etree.fromstring(dom.XMLDesc(0).encode()))
    assert owner is not None
    assert owner.commit == git("rev-parse", "HEAD")
    assert owner.commit != git("rev-parse", "HEAD", where=elsewhere)


ADOPTED_POOL = ("<pool type='dir'><name>vms</name><target><path>/var/lib/libvirt/images/vms</path></target>"
                "<volume><name>app.qcow2</name><capacity unit='GiB'>2</capacity>"
                "<target><format type='qcow2'/></target></volume></pool>")
VOLUME_DISK_GUEST = (
    "<domain type='test'><name>app</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
    "<os><type>hvm</type><boot dev='hd'/></os><devices>"
    "<disk type='volume' device='disk'><driver name='qemu' type='qcow2'/>"
    "<source pool='vms' volume='app.qcow2'/><target dev='vda' bus='virtio'/></disk>"
    "<interface type='bridge'><mac address='52:54:00:66:00:01'/><source bridge='br0'/>"
    "<model type='virtio'/></interface></devices></domain>")


def test_export_keeps_a_volume_disk_and_a_bridge_nic_through_adopt_and_apply(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    """Regression: a <disk type='volume'> was exported as disks: [] and a bridge NIC as
    interfaces: [], and the plan of the export then detached both."""
    uri = write_host(tmp_path, ADOPTED_POOL + VOLUME_DISK_GUEST)
    conn = connection(uri)
    out = tmp_path / "out.yaml"
    exported = virtsync("export", "--connect", uri, "--host", "kvm1", "-o", out)
    assert exported.code == 0, exported.err
    text = out.read_text()
    assert "path: /var/lib/libvirt/images/vms/app.qcow2" in text  # the volume, by its file
    assert "kind: StoragePool" in text and "name: vms" in text  # the pool the disk is in
    # a bridge NIC is modelled now: exported as one, its list compared (not ignored)
    assert "- bridge: br0\n    mac: 52:54:00:66:00:01" in text and "/spec/interfaces" not in text
    assert text.startswith("# yaml-language-server: $schema=file://") and "virtsync.schema.json" in text
    assert virtsync("validate", out).code == 0
    plan = virtsync("plan", out, "--connect", uri)
    assert plan.code == 0, plan.out + plan.err
    before = conn.lookupByName("app").XMLDesc(0)
    assert virtsync("apply", out, "--connect", uri, "--yes", "--prune").code == 0
    after = conn.lookupByName("app").XMLDesc(0)
    assert after == before  # nothing changed: the disk and the NIC are still there
    assert "app.qcow2" in after and "52:54:00:66:00:01" in after


def test_export_all_into_a_directory_writes_one_spec_file_per_object_that_plans_no_change(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    spare = ("<pool type='dir'><name>spare</name><target><path>/var/lib/libvirt/images/spare</path></target>"
             "</pool>")
    uri = write_host(tmp_path, ADOPTED_POOL + spare + VOLUME_DISK_GUEST + unmanaged_network("legacy-net", 8))
    tree = tmp_path / "tree"
    without_all = virtsync("export", "--connect", uri, "--host", "kvm1", "-o", f"{tree}/")
    assert without_all.code == 0, without_all.err
    assert not (tree / "storagepool-spare.yaml").exists()  # no guest uses it
    exported = virtsync("export", "--connect", uri, "--host", "kvm1", "--all", "-o", tree)
    assert exported.code == 0, exported.err
    files = sorted(p.name for p in tree.iterdir())
    assert files == ["guest-app.yaml", "host-kvm1.yaml", "network-legacy-net.yaml", "storagepool-spare.yaml",
                     "storagepool-vms.yaml"]
    assert all((tree / f).read_text().startswith("# yaml-language-server: $schema=") for f in files)
    assert virtsync("validate", tree).code == 0
    plan = virtsync("plan", tree)
    assert plan.code == 0, plan.out + plan.err


SAN_GUEST = (
    "<domain type='test'><name>san</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
    "<os><type>hvm</type><boot dev='hd'/></os><devices>"
    "<disk type='volume' device='disk'><driver name='qemu' type='qcow2'/>"
    "<source pool='vms' volume='app.qcow2'/><target dev='vda' bus='virtio'/></disk>"
    "<disk type='block' device='disk'><driver name='qemu' type='raw'/>"
    "<source dev='/dev/disk/by-path/ip-192.0.2.21:3260-iscsi-iqn.2010-10.org.example:lun-1'/>"
    "<target dev='vdb' bus='virtio'/></disk>"
    "<disk type='network' device='disk'><driver name='qemu' type='raw'/>"
    "<source protocol='rbd' name='vms/san_disk'><host name='192.0.2.11' port='6789'/></source>"
    "<target dev='vdc' bus='virtio'/></disk>"
    "<graphics type='vnc' autoport='yes'/></devices></domain>")


def test_export_keeps_block_and_network_disks_under_ignore_and_a_console_without_listen_plans_nothing(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    """A block device and an rbd disk cannot be a spec disk (a spec's disk is a file, never /dev):
    export names them in a comment and ignores /spec/disks, instead of writing a /dev path that
    validate refuses. A console without a listen address (the host default) is no change."""
    uri = write_host(tmp_path, ADOPTED_POOL + SAN_GUEST)
    conn = connection(uri)
    out = tmp_path / "out.yaml"
    exported = virtsync("export", "--connect", uri, "--host", "kvm1", "-o", out)
    assert exported.code == 0, exported.err
    text = out.read_text()
    assert "# disk vdb (disk on block device /dev/disk/by-path/ip-192.0.2.21:3260-iscsi-iqn.2010-10.org.example" \
           ":lun-1: a spec's disk is a file) is not modelled yet" in text, text
    assert "# disk vdc (disk on network storage rbd:vms/san_disk: a spec's disk is a file)" in text, text
    assert "ignore:\n  - /spec/disks" in text
    docs = {d["kind"]: d for d in YAML(typ="safe", pure=True).load_all(text)}
    assert docs["Host"]["spec"]["storage"]["allowedDirs"] == ["/var/lib/libvirt/images/vms"]  # no /dev dir
    assert "path: /var/lib/libvirt/images/vms/app.qcow2" in text  # the file disk is still listed
    assert "graphics:\n    type: vnc\n" in text
    assert virtsync("validate", out).code == 0
    plan = virtsync("plan", out, "--connect", uri)
    assert plan.code == 0, plan.out + plan.err
    before = conn.lookupByName("san").XMLDesc(0)
    assert virtsync("apply", out, "--connect", uri, "--yes").code == 0
    after = conn.lookupByName("san").XMLDesc(0)
    assert after == before  # all three disks and the console as they were
