"""Fleets: one spec tree across several hosts; a host that fails never holds up the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.engine_helpers import ok, virtsync
from tests.hosts.hermetic import HermeticHost, HostFactory

pytestmark = [pytest.mark.e2e, pytest.mark.fleet, pytest.mark.timeout(600)]


def _tree(root: Path, hosts: dict[str, HermeticHost], memory: str = "64MiB") -> Path:
    root.mkdir(exist_ok=True)
    for i, (name, host) in enumerate(sorted(hosts.items())):
        (root / f"{name}.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: {name}, labels: {{rack: r{i % 2}}}}}
spec: {{uri: "{host.uri}", connectTimeout: 5s}}
---
apiVersion: virtsync/v1
kind: Network
metadata: {{name: net}}
spec:
  host: {name}
  mode: nat
  bridge: virbr-fleet
  ipv4: {{address: 192.168.22{i}.1/24, dhcp: {{start: 192.168.22{i}.10, end: 192.168.22{i}.99}}}}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: app-{name}}}
spec:
  host: {name}
  memory: {memory}
  interfaces: [{{network: net, bootRom: false}}]
""")
    return root


def join(one: HermeticHost, two: HermeticHost, tag: str, subnet: str) -> tuple[str, str]:
    """A veth pair between two hosts' network namespaces; returns their addresses."""
    import subprocess

    left, right = f"vs-{tag}-1", f"vs-{tag}-2"
    subprocess.run(["ip", "link", "add", left, "type", "veth", "peer", "name", right], check=True)
    addrs = (f"{subnet}.1", f"{subnet}.2")
    for host, dev, ip in ((one, left, addrs[0]), (two, right, addrs[1])):
        subprocess.run(["ip", "link", "set", dev, "netns", str(host.netns_pid)], check=True)
        assert host.run_in_netns(["ip", "addr", "add", f"{ip}/24", "dev", dev]).returncode == 0
        assert host.run_in_netns(["ip", "link", "set", dev, "up"]).returncode == 0
    return addrs


def test_three_hosts_converge_and_a_dead_host_never_stops_the_others(
    hermetic_host_factory: HostFactory, tmp_path: Path,
) -> None:
    hosts = {name: hermetic_host_factory(name) for name in ("a", "b", "c")}
    _, b_addr = join(hosts["a"], hosts["b"], "ab", "10.98.1")
    _, c_addr = join(hosts["b"], hosts["c"], "bc", "10.98.2")
    assert hosts["a"].run_in_netns(["ping", "-c", "1", "-W", "2", b_addr]).returncode == 0  # they reach each other
    assert hosts["b"].run_in_netns(["ping", "-c", "1", "-W", "2", c_addr]).returncode == 0
    tree = _tree(tmp_path / "specs", hosts)
    ok(virtsync("apply", str(tree), "--yes"))
    for name, host in hosts.items():
        assert host.virsh("domstate", f"app-{name}").strip() == "running"
    assert "No changes" in ok(virtsync("plan", str(tree)))
    hosts["b"].kill_libvirtd()
    _tree(tmp_path / "specs", hosts, memory="80MiB")
    proc = virtsync("apply", str(tree), "--yes")
    ok(proc, 1)  # a host could not be reached: an error, after the others converged
    assert "Host b" in proc.stdout and "unreachable" in proc.stdout
    for name in ("a", "c"):
        assert "81920" in hosts[name].virsh("dumpxml", "--inactive", f"app-{name}")
    drift = virtsync("drift", str(tree))
    ok(drift, 1)
    assert "Host b: UNREACHABLE" in drift.stdout
    hosts["b"].restart_libvirtd()
    ok(virtsync("apply", str(tree), "--yes"))
    assert "81920" in hosts["b"].virsh("dumpxml", "--inactive", "app-b")
    assert "No changes" in ok(virtsync("plan", str(tree)))
    # filters: one rack only
    out = ok(virtsync("plan", str(tree), "--host-selector", "rack=r1"))
    assert "Host b" in out and "Host a" not in out and "Host c" not in out


def _boot_id(host: HermeticHost, guest: str) -> str:
    import base64

    from tests.hosts.linux_guest import agent

    handle = agent(host, guest, {"execute": "guest-file-open",
                                 "arguments": {"path": "/proc/sys/kernel/random/boot_id"}})["return"]
    data = agent(host, guest, {"execute": "guest-file-read", "arguments": {"handle": handle}})["return"]
    agent(host, guest, {"execute": "guest-file-close", "arguments": {"handle": handle}})
    return base64.b64decode(data["buf-b64"]).decode().strip()


def test_a_running_guest_whose_host_changes_is_live_migrated_without_a_reboot(
    hermetic_host_factory: HostFactory, tmp_path: Path,
) -> None:
    from tests.hosts.linux_guest import ensure_test_guest, link_or_copy, wait_for_agent

    a = hermetic_host_factory("ma", listen_tcp=True)
    b = hermetic_host_factory("mb", listen_tcp=True)
    # join the two hosts' network namespaces with a veth pair (DESIGN.md's recipe)
    import subprocess

    subprocess.run(["ip", "link", "add", "vs-mig-a", "type", "veth", "peer", "name", "vs-mig-b"], check=True)
    subprocess.run(["ip", "link", "set", "vs-mig-a", "netns", str(a.netns_pid)], check=True)
    subprocess.run(["ip", "link", "set", "vs-mig-b", "netns", str(b.netns_pid)], check=True)
    for host, dev, ip in ((a, "vs-mig-a", "10.99.0.1/24"), (b, "vs-mig-b", "10.99.0.2/24")):
        assert host.run_in_netns(["ip", "addr", "add", ip, "dev", dev]).returncode == 0
        assert host.run_in_netns(["ip", "link", "set", dev, "up"]).returncode == 0
    kernel, initrd = ensure_test_guest()
    boot = tmp_path / "boot"
    kernel, initrd = link_or_copy(kernel, boot), link_or_copy(initrd, boot)
    specs = tmp_path / "specs"
    specs.mkdir()

    def write(where: str) -> None:
        docs = []
        for name, host, ip in (("ma", a, "10.99.0.1"), ("mb", b, "10.99.0.2")):
            docs.append(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: {name}}}
spec: {{uri: "{host.uri}", hypervisor: qemu, migrationUri: "qemu+tcp://{ip}/system", migrationAddress: {ip},
       storage: {{allowedDirs: ["{boot}", /var/lib/libvirt/images]}}}}
---
apiVersion: virtsync/v1
kind: StoragePool
metadata: {{name: migpool}}
spec: {{host: {name}, path: /var/lib/libvirt/images/migpool}}
---
apiVersion: virtsync/v1
kind: Network
metadata: {{name: mig}}
spec: {{host: {name}, mode: nat, bridge: virbr-mig,
        ipv4: {{address: 192.168.230.1/24, dhcp: {{start: 192.168.230.10, end: 192.168.230.99}}}}}}
""")
        docs.append(f"""apiVersion: virtsync/v1
kind: Guest
metadata: {{name: mover}}
spec:
  host: {where}
  memory: 256MiB
  agent: true
  boot: {{kernel: "{kernel}", initrd: "{initrd}", cmdline: "console=ttyS0"}}
  disks: [{{name: data, pool: migpool, size: 16MiB}}]
  interfaces: [{{network: mig, mac: "52:54:00:23:00:01", bootRom: false}}]
""")
        (specs / "fleet.yaml").write_text("---\n".join(docs))

    write("ma")
    ok(virtsync("apply", str(specs), "--yes"))
    wait_for_agent(a, "mover", timeout=120)
    before = _boot_id(a, "mover")
    write("mb")
    plan = ok(virtsync("plan", str(specs)), 2)
    assert "migrate Guest mover" in plan and "- delete" not in plan
    ok(virtsync("apply", str(specs), "--yes", "--prune"))
    assert "mover" not in a.virsh("list", "--all", "--name").split()
    assert b.virsh("domstate", "mover").strip() == "running"
    wait_for_agent(b, "mover", timeout=60)
    assert _boot_id(b, "mover") == before, "the guest rebooted"
    # its disk was copied live: the target has the volume and the guest uses it there
    assert "mover-data.qcow2" in b.virsh("vol-list", "migpool")
    assert "/var/lib/libvirt/images/migpool/mover-data.qcow2" in b.virsh("dumpxml", "mover")
    assert "No changes" in ok(virtsync("plan", str(specs)))


def test_a_stopped_guest_whose_host_changes_is_moved_cold_with_its_disk(
    hermetic_host_factory: HostFactory, tmp_path: Path,
) -> None:
    import hashlib

    a, b = hermetic_host_factory("ca"), hermetic_host_factory("cb")
    specs = tmp_path / "specs"
    specs.mkdir()

    def write(where: str) -> None:
        docs = [f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: {name}}}
spec: {{uri: "{host.uri}"}}
---
apiVersion: virtsync/v1
kind: StoragePool
metadata: {{name: movepool}}
spec: {{host: {name}, path: /var/lib/libvirt/images/movepool}}
""" for name, host in (("ca", a), ("cb", b))]
        docs.append(f"""apiVersion: virtsync/v1
kind: Guest
metadata: {{name: boxed}}
spec:
  host: {where}
  state: stopped
  memory: 64MiB
  disks: [{{name: root, pool: movepool, size: 8MiB, format: raw}}]
""")
        (specs / "fleet.yaml").write_text("---\n".join(docs))

    write("ca")
    ok(virtsync("apply", str(specs), "--yes"))
    src_file = a.path_outside("/var/lib/libvirt/images/movepool/boxed-root.img")
    with src_file.open("r+b") as f:
        f.write(b"virtsync was here\n" * 1000)
    digest = hashlib.sha256(src_file.read_bytes()).hexdigest()
    uuid = a.virsh("domuuid", "boxed").strip()
    write("cb")
    plan = ok(virtsync("plan", str(specs)), 2)
    assert "-/+ move Guest boxed" in plan and "no downtime: it is not running" in plan
    ok(virtsync("apply", str(specs), "--yes"))
    assert "boxed" not in a.virsh("list", "--all", "--name").split()
    assert b.virsh("domuuid", "boxed").strip() == uuid
    dst_file = b.path_outside("/var/lib/libvirt/images/movepool/boxed-root.img")
    assert hashlib.sha256(dst_file.read_bytes()).hexdigest() == digest
    assert src_file.exists()  # the source's data is kept
    assert "No changes" in ok(virtsync("plan", str(specs)))
