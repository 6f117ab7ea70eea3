"""Disk and NIC tuning on a real libvirtd host (firmware-only KVM guests, TCG without /dev/kvm).

I/O limits, bandwidth and the link state of a running guest change live (the same domain, virsh
shows the new values), and a macvtap NIC on a veth pair made inside the host's network namespace
is defined and runs. The veth pair lives only in that namespace: it goes away with the host.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e.engine_helpers import ok, virtsync
from tests.hosts.hermetic import HermeticHost

pytestmark = [pytest.mark.e2e, pytest.mark.devices, pytest.mark.timeout(300)]

MAC = "52:54:00:77:00:01"


def _specs(tmp: Path, host: HermeticHost, guest: str) -> Path:
    specs = tmp / "specs"
    specs.mkdir(exist_ok=True)
    (specs / "lab.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: lab}}
spec: {{uri: "{host.uri}"}}
---
apiVersion: virtsync/v1
kind: StoragePool
metadata: {{name: tune-images}}
spec: {{host: lab, path: /var/lib/libvirt/images/tune}}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: tuned}}
spec:
  host: lab
  state: running
  memory: 128MiB
  restartPolicy: never
{guest}""")
    return specs


def _netns(host: HermeticHost, *argv: str) -> str:
    done = host.run_in_netns(list(argv))
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr}"
    return done.stdout


def _field(text: str, name: str) -> str:
    m = re.search(rf"^\s*{re.escape(name)}\s*:\s*(\S+)", text, re.M)
    assert m, f"{name} not in:\n{text}"
    return m.group(1)


def _bridge(host: HermeticHost) -> None:
    _netns(host, "ip", "link", "add", "br-tune", "type", "bridge")  # an existing host bridge
    _netns(host, "ip", "link", "set", "br-tune", "up")


def _kernel_shapes_traffic(host: HermeticHost) -> str | None:
    """Why libvirt cannot shape a tap on this kernel (None if it can): it puts an htb class with
    an sfq qdisc on it for inbound traffic and a u32 police filter for outbound."""
    _netns(host, "ip", "link", "add", "tcprobe0", "type", "veth", "peer", "name", "tcprobe1")
    try:
        for argv in (["tc", "qdisc", "add", "dev", "tcprobe0", "root", "handle", "1:", "htb", "default", "1"],
                     ["tc", "class", "add", "dev", "tcprobe0", "parent", "1:", "classid", "1:1", "htb",
                      "rate", "1000kbps"],
                     ["tc", "qdisc", "add", "dev", "tcprobe0", "parent", "1:1", "handle", "2:", "sfq"],
                     ["tc", "qdisc", "add", "dev", "tcprobe0", "ingress"],
                     ["tc", "filter", "add", "dev", "tcprobe0", "parent", "ffff:", "protocol", "all", "u32",
                      "match", "u32", "0", "0", "police", "rate", "500kbps", "burst", "1kb", "drop"]):
            done = host.run_in_netns(argv)
            if done.returncode != 0:
                return f"`{' '.join(argv)}` fails: {done.stderr.strip()}"
        return None
    finally:
        host.run_in_netns(["ip", "link", "del", "tcprobe0"])


def test_iotune_and_link_state_change_live(tmp_path: Path, hermetic_host: HermeticHost) -> None:
    host = hermetic_host
    _bridge(host)
    before = """  disks: [{name: root, pool: tune-images, size: 64MiB, iotune: {totalBytesSec: 10485760}}]
  interfaces: [{bridge: br-tune, mac: "52:54:00:77:00:01", bootRom: false}]
"""
    specs = _specs(tmp_path, host, before)
    ok(virtsync("apply", str(specs), "--yes"))
    assert "No changes" in ok(virtsync("plan", str(specs)))
    dom_id = host.virsh("domid", "tuned").strip()
    assert _field(host.virsh("blkdeviotune", "tuned", "vda"), "total_bytes_sec") == "10485760"
    assert host.virsh("domif-getlink", "tuned", MAC).split()[-1] == "up"

    after = """  disks:
    - {name: root, pool: tune-images, size: 64MiB, iotune: {readBytesSec: 20971520, writeIopsSec: 300}}
  interfaces: [{bridge: br-tune, mac: "52:54:00:77:00:01", bootRom: false, linkState: down}]
"""
    specs = _specs(tmp_path, host, after)
    plan = ok(virtsync("plan", str(specs)), 2)
    assert "~ update Guest tuned (live)" in plan, plan
    assert "pending restart" not in plan, plan
    ok(virtsync("apply", str(specs), "--yes"))

    assert host.virsh("domid", "tuned").strip() == dom_id, "the guest was restarted"
    iotune = host.virsh("blkdeviotune", "tuned", "vda")
    assert _field(iotune, "total_bytes_sec") == "0"  # lifted: a total and a read limit do not mix
    assert _field(iotune, "read_bytes_sec") == "20971520"
    assert _field(iotune, "write_iops_sec") == "300"
    assert host.virsh("domif-getlink", "tuned", MAC).split()[-1] == "down"
    # the definition has them too, and nothing is left to do
    inactive = host.virsh("dumpxml", "--inactive", "tuned")
    assert "<read_bytes_sec>20971520</read_bytes_sec>" in inactive and "<link state='down'/>" in inactive
    assert "No changes" in ok(virtsync("plan", str(specs)))

    # changed live out of band: drift, and one apply repairs it live
    host.virsh("blkdeviotune", "tuned", "vda", "--live", "--total-iops-sec", "5")
    host.virsh("domif-setlink", "tuned", MAC, "up")
    ok(virtsync("drift", str(specs)), 2)
    ok(virtsync("apply", str(specs), "--yes"))
    iotune = host.virsh("blkdeviotune", "tuned", "vda")
    assert (_field(iotune, "total_iops_sec"), _field(iotune, "write_iops_sec")) == ("0", "300")
    assert host.virsh("domif-getlink", "tuned", MAC).split()[-1] == "down"
    assert host.virsh("domid", "tuned").strip() == dom_id
    assert "No changes" in ok(virtsync("plan", str(specs)))


def test_bandwidth_changes_live(tmp_path: Path, hermetic_host: HermeticHost) -> None:
    host = hermetic_host
    why = _kernel_shapes_traffic(host)
    if why:
        pytest.skip(f"this kernel cannot shape traffic the way libvirt does: {why}")
    _bridge(host)
    nic = '{bridge: br-tune, mac: "52:54:00:77:00:01", bootRom: false, bandwidth: %s}'
    disks = "  disks: [{name: root, pool: tune-images, size: 64MiB}]\n"
    specs = _specs(tmp_path, host, disks + "  interfaces: [" + nic % "{inbound: {average: 1000}}" + "]\n")
    ok(virtsync("apply", str(specs), "--yes"))
    dom_id = host.virsh("domid", "tuned").strip()
    assert _field(host.virsh("domiftune", "tuned", MAC), "inbound.average") == "1000"
    specs = _specs(tmp_path, host, disks + "  interfaces: [" + nic % (
        "{inbound: {average: 2000, peak: 4000, burst: 512}, outbound: {average: 500}}") + "]\n")
    assert "~ update Guest tuned (live)" in ok(virtsync("plan", str(specs)), 2)
    ok(virtsync("apply", str(specs), "--yes"))
    assert host.virsh("domid", "tuned").strip() == dom_id, "the guest was restarted"
    iftune = host.virsh("domiftune", "tuned", MAC)
    assert (_field(iftune, "inbound.average"), _field(iftune, "inbound.peak"),
            _field(iftune, "inbound.burst"), _field(iftune, "outbound.average")) == ("2000", "4000", "512", "500")
    assert "No changes" in ok(virtsync("plan", str(specs)))


def test_a_macvtap_nic_on_a_veth_inside_the_host_namespace_is_defined_and_runs(
        tmp_path: Path, hermetic_host: HermeticHost) -> None:
    host = hermetic_host
    _netns(host, "ip", "link", "add", "vtune0", "type", "veth", "peer", "name", "vtune1")
    for dev in ("vtune0", "vtune1"):
        _netns(host, "ip", "link", "set", dev, "up")
    # made inside the host's namespace only: the machine itself has no such device
    outside = subprocess.run(["ip", "link", "show", "vtune0"], capture_output=True, text=True)
    assert outside.returncode != 0, "the veth leaked into the machine's own network namespace"

    guest = """  disks: [{name: root, pool: tune-images, size: 64MiB, cache: none, io: native, serial: TUNED-1}]
  interfaces:
    - {direct: {dev: vtune0, mode: bridge}, mac: "52:54:00:77:00:02", bootRom: false, queues: 2}
"""
    specs = _specs(tmp_path, host, guest)
    ok(virtsync("apply", str(specs), "--yes"))
    assert host.virsh("domstate", "tuned").strip() == "running"
    xml = host.virsh("dumpxml", "tuned")
    assert "<interface type='direct'>" in xml and "<source dev='vtune0' mode='bridge'/>" in xml, xml
    tap = re.search(r"<target dev='(macvtap\d+)'/>", xml)
    assert tap, xml
    # the macvtap device sits on the veth, in the host's namespace
    link = _netns(host, "ip", "-d", "link", "show", tap.group(1))
    assert "vtune0" in link and "macvtap" in link, link
    assert "serial>TUNED-1<" in xml and "cache='none'" in xml and "io='native'" in xml
    assert "No changes" in ok(virtsync("plan", str(specs)))
