"""The engine on real libvirtd hosts running real KVM guests (TCG where /dev/kvm is missing)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.e2e.engine_helpers import copy_example, drift_json, objects, ok, virtsync
from tests.hosts.hermetic import HermeticHost, HostFactory, virt_type

pytestmark = [pytest.mark.e2e, pytest.mark.kvm, pytest.mark.timeout(300)]


@pytest.fixture
def homelab(tmp_path: Path, hermetic_host: HermeticHost) -> tuple[Path, HermeticHost]:
    """examples/homelab applied to a fresh host."""
    specs = copy_example("homelab", tmp_path)
    out = ok(virtsync("apply", str(specs), "--connect", hermetic_host.uri, "--yes"))
    assert "Plan:" in out
    return specs, hermetic_host


def _state(host: HermeticHost, guest: str) -> str:
    return host.virsh("domstate", guest).strip()


def test_apply_homelab_converges_a_fresh_host_and_replan_is_empty(
    homelab: tuple[Path, HermeticHost],
) -> None:
    specs, host = homelab
    print(f"guests run as <domain type='{virt_type()}'>")
    for guest in ("web", "db", "worker"):
        assert _state(host, guest) == "running"
        dom_type = re.search(r"<domain type='(\w+)'", host.virsh("dumpxml", guest))
        assert dom_type and dom_type.group(1) == virt_type()
    for net, bridge in (("lan", "virbr-lan"), ("backend", "virbr-back")):
        info = host.virsh("net-info", net)
        assert re.search(r"Active:\s+yes", info) and re.search(r"Autostart:\s+yes", info)
        link = host.run_in_netns(["ip", "-br", "addr", "show", bridge])
        assert link.returncode == 0, link.stderr
    assert "192.168.160.1/24" in host.run_in_netns(["ip", "-br", "addr", "show", "virbr-lan"]).stdout
    assert host.pids_of("dnsmasq"), "NAT network without its DHCP server"
    vols = host.virsh("vol-list", "homelab-images")
    for vol in ("web-root.qcow2", "db-root.qcow2", "db-data.qcow2", "worker-root.qcow2"):
        assert vol in vols
    # qcow2 v3 (compat 1.1): what incremental backups' dirty bitmaps need
    data = host.virsh("vol-dumpxml", "db-data.qcow2", "--pool", "homelab-images")
    assert "<compat>1.1</compat>" in data, data
    # the guests' taps are on the bridges of their networks
    lan_ports = host.run_in_netns(["ip", "-br", "link", "show", "master", "virbr-lan"]).stdout
    assert len(lan_ports.strip().splitlines()) == 2
    out = ok(virtsync("plan", str(specs), "--connect", host.uri))
    assert "No changes" in out


def test_out_of_band_changes_show_as_drift_and_one_apply_repairs_them(
    homelab: tuple[Path, HermeticHost],
) -> None:
    specs, host = homelab
    web_id = host.virsh("domid", "web").strip()
    host.virsh("destroy", "db")                                     # guest destroyed
    host.virsh("setmem", "web", "100M", "--config")                  # memory changed
    host.virsh("setvcpus", "web", "2", "--config")                   # vCPUs changed
    host.virsh("autostart", "web", "--disable")                      # autostart flipped
    # NIC detached (from the definition: a guest with no OS never acknowledges a live unplug)
    host.virsh("detach-interface", "db", "network", "--mac", "52:54:00:16:01:02", "--config")
    host.virsh("destroy", "worker")
    host.virsh("undefine", "worker")                                 # guest undefined
    host.virsh("net-update", "lan", "delete", "ip-dhcp-host",
               "<host mac='52:54:00:16:00:01' ip='192.168.160.11'/>", "--live", "--config")
    host.virsh("net-destroy", "backend")                             # network stopped
    doc = drift_json(specs, host.uri)
    objs = objects(doc)
    assert doc["inSync"] is False

    def change(obj: str, path: str) -> dict[str, object]:
        hits = [c for c in objs[obj]["changes"] if c["path"] == path]
        assert hits, f"{obj}: no change at {path} in {objs[obj]['changes']}"
        return hits[0]

    assert change("Guest/db", "/spec/state")["defined"] == "stopped"
    mem = change("Guest/web", "/spec/memory")
    assert (mem["desired"], mem["defined"]) == ("128MiB", "100MiB")
    vcpus = change("Guest/web", "/spec/vcpus")
    assert (vcpus["desired"], vcpus["defined"]) == (1, 2)
    auto = change("Guest/web", "/spec/autostart")
    assert (auto["desired"], auto["defined"]) == (True, False)
    assert objs["Guest/worker"]["status"] == "missing"
    nic = change("Guest/db", "/spec/interfaces/1")
    assert nic["desired"] == "backend 52:54:00:16:01:02" and nic["defined"] is None
    leases = change("Network/lan", "/spec/ipv4/dhcp/hosts")
    assert "52:54:00:16:00:01=192.168.160.11" in leases["desired"]
    assert "52:54:00:16:00:01=192.168.160.11" not in leases["defined"]
    assert change("Network/backend", "/status/active")["defined"] is False
    text = ok(virtsync("drift", str(specs), "--connect", host.uri), 2)
    assert "memory" in text and "desired=128MiB" in text and "defined=100MiB" in text

    ok(virtsync("apply", str(specs), "--connect", host.uri, "--yes"))
    assert ok(virtsync("plan", str(specs), "--connect", host.uri)).count("No changes") == 1
    for guest in ("web", "db", "worker"):
        assert _state(host, guest) == "running"
    assert host.virsh("domid", "web").strip() == web_id, "web was restarted"
    assert "192.168.160.11" in host.virsh("net-dumpxml", "lan")
    assert "52:54:00:16:01:02" in host.virsh("dumpxml", "--inactive", "db")
    # the running guests' NICs are back on the restarted network's bridge
    ports = host.run_in_netns(["ip", "-br", "link", "show", "master", "virbr-back"]).stdout
    assert len(ports.strip().splitlines()) == 2, ports  # db and worker


def test_network_restarted_out_of_band_gets_its_guests_nics_back(
    homelab: tuple[Path, HermeticHost],
) -> None:
    specs, host = homelab
    host.virsh("net-destroy", "lan")
    host.virsh("net-start", "lan")  # libvirt 9.0 leaves the guests' taps off the new bridge
    assert host.run_in_netns(["ip", "-br", "link", "show", "master", "virbr-lan"]).stdout == ""
    host.virsh("net-destroy", "lan")
    ok(virtsync("apply", str(specs), "--connect", host.uri, "--yes"))
    ports = host.run_in_netns(["ip", "-br", "link", "show", "master", "virbr-lan"]).stdout
    assert len(ports.strip().splitlines()) == 2, ports
    assert "No changes" in ok(virtsync("plan", str(specs), "--connect", host.uri))


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_memory_and_vcpu_increases_within_their_maximum_are_live(
    homelab: tuple[Path, HermeticHost],
) -> None:
    specs, host = homelab
    dom_id = host.virsh("domid", "web").strip()
    _edit(specs / "guests.yaml", "  vcpus: 1\n  maxVcpus: 2\n  memory: 128MiB\n  maxMemory: 256MiB",
          "  vcpus: 2\n  maxVcpus: 2\n  memory: 192MiB\n  maxMemory: 256MiB")
    plan = ok(virtsync("plan", str(specs), "--connect", host.uri), 2)
    assert "~ update Guest web (live)" in plan
    assert "memory: 128MiB → 192MiB" in plan and "vcpus: 1 → 2" in plan
    ok(virtsync("apply", str(specs), "--connect", host.uri, "--yes"))
    assert host.virsh("domid", "web").strip() == dom_id
    # A firmware-only guest has no balloon driver (DESIGN.md): the definition shows the
    # new memory; the vCPU hot-plug is visible live.
    assert "196608" in host.virsh("dumpxml", "--inactive", "web")  # currentMemory in KiB
    assert host.virsh("vcpucount", "web", "--live", "--current").strip() == "2"
    assert "No changes" in ok(virtsync("plan", str(specs), "--connect", host.uri))


def test_vcpus_beyond_the_maximum_under_restart_policy_never_is_a_pending_restart(
    homelab: tuple[Path, HermeticHost],
) -> None:
    specs, host = homelab
    dom_id = host.virsh("domid", "web").strip()
    _edit(specs / "guests.yaml", "  vcpus: 1\n  maxVcpus: 2", "  vcpus: 3\n  maxVcpus: 3")
    plan = ok(virtsync("plan", str(specs), "--connect", host.uri), 2)
    assert "~ update Guest web (next boot)" in plan
    ok(virtsync("apply", str(specs), "--connect", host.uri, "--yes"))
    assert host.virsh("domid", "web").strip() == dom_id, "restartPolicy never restarted the guest"
    out = ok(virtsync("plan", str(specs), "--connect", host.uri))  # a status, not a change: 0
    assert "pending restart (restartPolicy: never)" in out
    doc = json.loads(ok(virtsync("plan", str(specs), "--connect", host.uri, "--format", "json")))
    pending = doc["hosts"][0]["pending"]
    assert pending and pending[0]["name"] == "web"
    assert {c["path"] for c in pending[0]["changes"]} >= {"/spec/vcpus"}


def test_firmware_change_is_a_recreate_that_keeps_uuid_and_volumes(
    tmp_path: Path, hermetic_host: HermeticHost,
) -> None:
    # OVMF stops with a KVM emulation failure on this nested machine (SeaBIOS does not),
    # so this host says `hypervisor: qemu` and its guests run under TCG.
    specs, host = copy_example("homelab", tmp_path), hermetic_host
    _edit(specs / "host.yaml", "  uri: qemu:///system\n", "  uri: qemu:///system\n  hypervisor: qemu\n")
    ok(virtsync("apply", str(specs), "--connect", host.uri, "--yes"))
    assert "<domain type='qemu'" in host.virsh("dumpxml", "db")
    uuid = host.virsh("domuuid", "db").strip()
    _edit(specs / "guests.yaml", "  restartPolicy: onChange\n", "  restartPolicy: onChange\n  firmware: uefi\n")
    plan = ok(virtsync("plan", str(specs), "--connect", host.uri), 2)
    assert "-/+ recreate Guest db" in plan and "firmware: bios → uefi" in plan
    ok(virtsync("apply", str(specs), "--connect", host.uri, "--yes"))
    assert host.virsh("domuuid", "db").strip() == uuid
    assert _state(host, "db") == "running"
    xml = host.virsh("dumpxml", "db")
    assert "<nvram" in xml and "db-data.qcow2" in xml
    assert "No changes" in ok(virtsync("plan", str(specs), "--connect", host.uri))


def test_prune_deletes_only_managed_guests_of_this_instance(
    homelab: tuple[Path, HermeticHost], tmp_path: Path,
) -> None:
    specs, host = homelab
    host.virsh("define", str(_handmade_guest(tmp_path, "handmade")))
    other = tmp_path / "other"
    other.mkdir()
    (other / "g.yaml").write_text(
        "apiVersion: virtsync/v1\nkind: Host\nmetadata: {name: homelab}\nspec: {uri: \"qemu:///system\"}\n"
        "---\napiVersion: virtsync/v1\nkind: Guest\nmetadata: {name: theirs}\n"
        "spec: {host: homelab, state: stopped, memory: 64MiB}\n")
    ok(virtsync("apply", str(other), "--connect", host.uri, "--yes", "--instance", "other"))
    # worker leaves the specs; its root disk has deletePolicy: delete
    text = (specs / "guests.yaml").read_text()
    worker_doc = "---\napiVersion: virtsync/v1\nkind: Guest\nmetadata:\n  name: worker"
    (specs / "guests.yaml").write_text(text[: text.index(worker_doc)])
    plan = ok(virtsync("plan", str(specs), "--connect", host.uri, "--prune"), 2)
    assert "- delete Guest worker" in plan
    assert "handmade" not in plan.split("unmanaged")[0] and "theirs" not in plan.split("unmanaged")[0]
    ok(virtsync("apply", str(specs), "--connect", host.uri, "--yes", "--prune"))
    names = host.virsh("list", "--all", "--name").split()
    assert "worker" not in names and {"handmade", "theirs", "web", "db"} <= set(names)
    vols = host.virsh("vol-list", "homelab-images")
    assert "worker-root.qcow2" not in vols and "db-data.qcow2" in vols


def test_mass_deletion_guard_refuses_and_changes_nothing(homelab: tuple[Path, HermeticHost]) -> None:
    specs, host = homelab
    (specs / "guests.yaml").write_text("")  # every guest gone from the specs
    proc = virtsync("apply", str(specs), "--connect", host.uri, "--yes", "--prune")
    ok(proc, 1)
    assert "more than half" in proc.stderr
    assert set(host.virsh("list", "--all", "--name").split()) == {"web", "db", "worker"}
    proc = virtsync("apply", str(specs), "--connect", host.uri, "--yes", "--prune", "--max-deletions", "1", "--force")
    ok(proc)
    assert host.virsh("list", "--all", "--name").split() == []


def test_export_then_plan_has_nothing_to_do(homelab: tuple[Path, HermeticHost], tmp_path: Path) -> None:
    _specs, host = homelab
    host.virsh("define", str(_handmade_guest(tmp_path, "handmade")))
    out = tmp_path / "exported.yaml"
    ok(virtsync("export", "--host", "homelab", "--connect", host.uri, "-o", str(out)))
    text = out.read_text()
    assert "name: handmade" in text and "adopt: true" in text
    ok(virtsync("validate", str(out)))
    assert "No changes" in ok(virtsync("plan", str(out), "--connect", host.uri))


def test_saved_plan_is_refused_after_an_out_of_band_change(
    homelab: tuple[Path, HermeticHost], tmp_path: Path,
) -> None:
    specs, host = homelab
    _edit(specs / "guests.yaml", "  memory: 96MiB", "  memory: 80MiB")
    saved = tmp_path / "plan.json"
    ok(virtsync("plan", str(specs), "--connect", host.uri, "--out", str(saved)), 2)
    host.virsh("setmem", "web", "120M", "--config")
    proc = virtsync("apply", str(saved))
    ok(proc, 1)
    assert "changed since the plan was made" in proc.stderr
    assert "98304" in host.virsh("dumpxml", "--inactive", "worker")  # untouched: 96MiB
    # made afresh, the saved plan applies
    ok(virtsync("plan", str(specs), "--connect", host.uri, "--out", str(saved)), 2)
    ok(virtsync("apply", str(saved)))
    assert "81920" in host.virsh("dumpxml", "--inactive", "worker")


def test_two_hosts_converge_independently(hermetic_host_factory: HostFactory, tmp_path: Path) -> None:
    a, b = hermetic_host_factory("a"), hermetic_host_factory("b")
    specs = copy_example("quickstart", tmp_path)
    ok(virtsync("apply", str(specs), "--connect", a.uri, "--yes"))
    assert _state(a, "web1") == "running"
    assert b.virsh("list", "--all", "--name").split() == []


def _handmade_guest(tmp_path: Path, name: str) -> Path:
    xml = tmp_path / f"{name}.xml"
    xml.write_text(f"<domain type='{virt_type()}'><name>{name}</name><memory unit='MiB'>32</memory>"
                   "<os><type>hvm</type></os></domain>")
    return xml


def test_adopt_takes_over_a_hand_made_host_in_one_step(hermetic_host: HermeticHost, tmp_path: Path) -> None:
    host = hermetic_host
    net = tmp_path / "handnet.xml"
    net.write_text("<network><name>handnet</name><forward mode='nat'/><bridge name='virbr-hand'/>"
                   "<dns><host ip='192.168.177.5'><hostname>files</hostname></host></dns>"
                   "<ip address='192.168.177.1' prefix='24'><dhcp><range start='192.168.177.10' "
                   "end='192.168.177.50'/></dhcp></ip></network>")
    host.virsh("net-define", str(net))
    host.virsh("net-start", "handnet")
    for name in ("hand1", "hand2"):
        host.virsh("define", str(_handmade_guest(tmp_path, name)))
    tree = tmp_path / "tree"
    ok(virtsync("export", "--host", "lab", "--connect", host.uri, "-o", f"{tree}/"))
    spec2 = tree / "guest-hand2.yaml"
    spec2.write_text(spec2.read_text().replace("autostart: false", "autostart: true"))
    before = {n: host.virsh("dumpxml", "--inactive", n) for n in ("hand1", "hand2")}
    proc = virtsync("adopt", str(tree), "--yes")
    ok(proc, 2)  # hand2 differs from its spec: left alone, still drift
    assert "left alone: Guest hand2 on lab: drift: autostart" in proc.stdout
    owner = "virtsync.dev/xmlns/owner"
    assert owner in host.virsh("dumpxml", "--inactive", "hand1")
    assert owner in host.virsh("net-dumpxml", "--inactive", "handnet")
    assert "files" in host.virsh("net-dumpxml", "--inactive", "handnet")  # its DNS host kept
    assert host.virsh("dumpxml", "--inactive", "hand2") == before["hand2"]  # untouched
    strip = re.compile(r"\s*<metadata>.*?</metadata>", re.S)
    assert strip.sub("", host.virsh("dumpxml", "--inactive", "hand1")) == strip.sub("", before["hand1"])
    assert re.search(r"Active:\s+yes", host.virsh("net-info", "handnet"))
