"""The Linux test guest (tests/hosts/linux_guest.py) boots on a hermetic host and is useful.

One guest is booted for the module, under TCG (``<domain type='qemu'>``): KVM on the
development machine cannot boot Linux, and TCG needs no /dev/kvm, so these tests never skip
for lack of it. They check what other end-to-end tests rely on: the agent answers, the
guest takes a DHCP lease on a NAT network, its ext4 data disk is mounted and can be frozen
(and snapshotted quiesced), its console shows the boot, and it powers off on ACPI.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.hosts.hermetic import HermeticHost, HostFactory
from tests.hosts.linux_guest import (
    AGENT_CHANNEL,
    BOOTED_LINE,
    agent,
    console_tail,
    ensure_test_guest,
    guest_domain_xml,
    link_or_copy,
    make_ext4_image,
    wait_for_agent,
    wait_for_console,
)

pytestmark = [pytest.mark.e2e, pytest.mark.boot, pytest.mark.timeout(300)]

NAME = "lg1"
MAC = "52:54:00:5e:00:21"
NETWORK = "lgnet"
NETWORK_XML = f"""\
<network>
  <name>{NETWORK}</name>
  <forward mode='nat'/>
  <bridge name='virbr-lg' stp='off' delay='0'/>
  <ip address='192.168.152.1' netmask='255.255.255.0'>
    <dhcp><range start='192.168.152.10' end='192.168.152.100'/></dhcp>
  </ip>
</network>
"""
# Generous for a loaded 2-core machine; the guest's agent usually answers in 6-10 s.
AGENT_TIMEOUT = 120
SETTLE_TIMEOUT = 60


@dataclass
class BootedGuest:
    host: HermeticHost
    name: str
    work: Path
    console: Path
    disk: Path
    agent_seconds: float


def poll(what: str, probe: Callable[[], Any], timeout: float, console: Path | None = None) -> Any:
    """probe()'s first truthy result, retried until timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s" + console_tail(console))
        time.sleep(0.25)


@pytest.fixture(scope="module")
def guest(hermetic_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BootedGuest]:
    started = time.monotonic()
    kernel, initrd = ensure_test_guest()
    built = time.monotonic() - started
    work = tmp_path_factory.mktemp("lg")
    # The hermetic host's QEMU runs as root and sees this machine's file system, except
    # libvirt's own (private) directories: the kernel, initrd and disk can live in tmp.
    kernel = link_or_copy(kernel, work / "boot")
    initrd = link_or_copy(initrd, work / "boot")
    disk = make_ext4_image(work / "data.img", size_mib=64)
    console = work / "console.log"
    factory = HostFactory(work)
    try:
        host = factory("host")
        (work / "net.xml").write_text(NETWORK_XML)
        host.virsh("net-define", str(work / "net.xml"))
        host.virsh("net-start", NETWORK)
        xml = guest_domain_xml(NAME, kernel, initrd, NETWORK, MAC, disk, serial_log=console)
        (work / "guest.xml").write_text(xml)
        host.virsh("define", str(work / "guest.xml"))
        t0 = time.monotonic()
        host.virsh("start", NAME)
        wait_for_agent(host, NAME, AGENT_TIMEOUT, console)
        agent_seconds = time.monotonic() - t0
        print(
            f"\nlinux test guest: built/checked in {built:.1f} s; guest agent answered "
            f"{agent_seconds:.1f} s after virsh start (TCG, 1 vCPU, 256 MiB, {kernel.name})"
        )
        yield BootedGuest(host, NAME, work, console, disk, agent_seconds)
    finally:
        factory.close()


def test_guest_runs_under_tcg_and_its_agent_answers(guest: BootedGuest) -> None:
    root = ET.fromstring(guest.host.virsh("dumpxml", guest.name))
    assert root.get("type") == "qemu"
    assert Path(root.findtext("os/kernel", "")).name in ("vmlinux", "vmlinuz")
    assert root.find(f"devices/channel/target[@name='{AGENT_CHANNEL}']") is not None
    assert guest.host.virsh("domstate", guest.name).strip() == "running"
    assert agent(guest.host, guest.name, {"execute": "guest-ping"}) == {"return": {}}
    osinfo = agent(guest.host, guest.name, {"execute": "guest-get-osinfo"})["return"]
    assert osinfo["id"] == "virtsync-test-guest"
    assert osinfo["kernel-release"].endswith("-amd64")
    assert guest.agent_seconds < AGENT_TIMEOUT


def test_guest_takes_a_dhcp_lease(guest: BootedGuest) -> None:
    def lease() -> tuple[str, str] | None:
        out = guest.host.virsh("net-dhcp-leases", NETWORK)
        for line in out.splitlines():
            fields = line.split()
            if MAC in fields:
                # Expiry (date time), MAC, protocol, IP/prefix, hostname, client ID
                return fields[4].split("/")[0], fields[5]
        return None

    ip, hostname = poll(f"a lease for {MAC} in net-dhcp-leases {NETWORK}", lease, SETTLE_TIMEOUT, guest.console)
    assert ip.startswith("192.168.152.")
    assert hostname == guest.name  # udhcpc sends virtsync.hostname= from the kernel command line

    def guest_ipv4() -> list[str]:
        reply = agent(guest.host, guest.name, {"execute": "guest-network-get-interfaces"})["return"]
        return [
            a["ip-address"]
            for nic in reply
            if nic.get("hardware-address") == MAC
            for a in nic.get("ip-addresses", [])
            if a["ip-address-type"] == "ipv4"
        ]

    assert poll("the lease's address in guest-network-get-interfaces", guest_ipv4, SETTLE_TIMEOUT) == [ip]
    wait_for_console(guest.console, f"virtsync-test-guest: lease {ip} on eth0", SETTLE_TIMEOUT)
    # The address libvirt reports from its lease records, as virtsync would read it.
    assert ip in guest.host.virsh("domifaddr", guest.name, "--source", "lease")


def test_data_disk_is_mounted_and_freezes(guest: BootedGuest) -> None:
    fsinfo = agent(guest.host, guest.name, {"execute": "guest-get-fsinfo"})["return"]
    data = [fs for fs in fsinfo if fs["mountpoint"] == "/data"]
    assert len(data) == 1, fsinfo
    assert data[0]["type"] == "ext4"
    assert data[0]["disk"][0]["bus-type"] == "virtio"
    assert data[0]["disk"][0]["dev"] == "/dev/vda"

    status = {"execute": "guest-fsfreeze-status"}
    assert agent(guest.host, guest.name, status)["return"] == "thawed"
    assert guest.host.virsh("domfsfreeze", guest.name).strip() == "Froze 1 filesystem(s)"
    try:
        assert agent(guest.host, guest.name, status)["return"] == "frozen"
    finally:
        thawed = guest.host.virsh("domfsthaw", guest.name).strip()
    assert thawed == "Thawed 1 filesystem(s)"
    assert agent(guest.host, guest.name, status)["return"] == "thawed"


def test_quiesced_disk_only_snapshot(guest: BootedGuest) -> None:
    overlay = guest.work / "data.snap1.qcow2"
    out = guest.host.virsh(
        "snapshot-create-as", guest.name, "snap1", "--disk-only", "--quiesce", "--atomic",
        "--diskspec", f"vda,file={overlay}",
    )
    assert "snap1 created" in out
    assert overlay.is_file()
    assert str(overlay) in guest.host.virsh("domblklist", guest.name)
    # The agent thawed the file system again after the snapshot.
    assert agent(guest.host, guest.name, {"execute": "guest-fsfreeze-status"})["return"] == "thawed"


def test_console_log_shows_the_boot(guest: BootedGuest) -> None:
    text = wait_for_console(guest.console, BOOTED_LINE, SETTLE_TIMEOUT)
    assert re.search(rf"^{re.escape(BOOTED_LINE)} \(hostname {guest.name}\)", text, re.M), text[-2000:]
    assert "virtsync-test-guest: mounted /dev/vda at /data" in text
    assert f"virtsync-test-guest: starting qemu-ga on /dev/virtio-ports/{AGENT_CHANNEL}" in text
    assert "Run /init as init process" in text  # the kernel's own lines reach the log too
    assert "qemu-ga exited" not in text


def test_acpi_power_button_powers_off(guest: BootedGuest) -> None:
    """Last: the guest is gone afterwards."""
    guest.host.virsh("shutdown", "--mode", "acpi", guest.name)
    poll(
        "shut off after ACPI shutdown",
        lambda: guest.host.virsh("domstate", guest.name).strip() == "shut off",
        SETTLE_TIMEOUT,
        guest.console,
    )
    text = guest.console.read_text(errors="replace")
    assert "virtsync-test-guest: shutting down" in text
    assert "reboot: Power down" in text
