"""vTPM (swtpm), virtiofs shares and OVMF secure boot work on hermetic hosts: raw domain XML.

The host-side parts virtsync's `tpm`, `filesystems` and `secureBoot` fields rely on, proven
with plain `virsh define` of hand-written XML (tests/hosts/devices.py has the XML and the
helpers). The Linux test guest boots under TCG (`<domain type='qemu'>`: KVM here cannot boot
Linux); the firmware-only secure-boot guest needs SMM, which KVM on this nested machine lacks,
so it also runs under TCG here (tried under KVM first where /dev/kvm is usable).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.hosts import devices as dv
from tests.hosts.hermetic import HermeticHost, HermeticHostError, HostFactory, virt_type
from tests.hosts.linux_guest import (
    console_tail,
    ensure_test_guest,
    guest_domain_xml,
    guest_sh,
    link_or_copy,
    wait_for_agent,
    wait_for_console,
)

pytestmark = [pytest.mark.e2e, pytest.mark.devices, pytest.mark.timeout(300)]

AGENT_TIMEOUT = 120


@dataclass
class DeviceHost:
    host: HermeticHost
    work: Path
    bzimage: Path
    initrd: Path

    def guest_xml(self, name: str, console: Path) -> str:
        # The bzImage, not the PVH vmlinux: booted through its PVH entry with a TPM, QEMU's
        # initrd lands on SeaBIOS's ACPI tables (moved down by the 64 KiB TPM event log), the
        # guest kernel finds them garbled ("ACPI: Interpreter disabled") and sees no TPM.
        return guest_domain_xml(name, self.bzimage, self.initrd, None, serial_log=console)


@pytest.fixture(scope="module")
def devhost(hermetic_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeviceHost]:
    bzimage, initrd = ensure_test_guest(pvh=False)
    work = tmp_path_factory.mktemp("dev")
    bzimage = link_or_copy(bzimage, work / "boot")
    initrd = link_or_copy(initrd, work / "boot")
    factory = HostFactory(work)
    try:
        yield DeviceHost(factory("host"), work, bzimage, initrd)
    finally:
        factory.close()


def start_and_wait(dh: DeviceHost, name: str, console: Path) -> float:
    t0 = time.monotonic()
    dh.host.virsh("start", name)
    wait_for_agent(dh.host, name, AGENT_TIMEOUT, console)
    return time.monotonic() - t0


def wait_gone(what: str, pids: Callable[[], list[int]], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while pids():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} still running {timeout:.0f} s after its guest stopped: {pids()}")
        time.sleep(0.05)


# ---- vTPM ------------------------------------------------------------------------------------


def test_vtpm_crb_state_survives_undefine_keep_tpm_and_redefinition(devhost: DeviceHost) -> None:
    host, name = devhost.host, "tpm1"
    console = devhost.work / f"{name}.console"
    uuid = dv.new_uuid()
    # The TPM state is found by the UUID: the redefinition must carry the same <uuid>.
    xml = dv.with_devices(devhost.guest_xml(name, console), [dv.tpm_xml("tpm-crb", "2.0")], uuid=uuid)
    state = dv.swtpm_state_file(host, uuid)
    try:
        dv.define(host, xml, devhost.work)
        assert not state.exists(), "libvirt makes the TPM state at the first start, not at define"
        boot1 = start_and_wait(devhost, name, console)
        assert dv.swtpm_pids(host), "no swtpm runs for the guest"
        assert dv.guest_tpm(host, name) == {"dev": "/dev/tpm0", "major": "2", "driver": "tpm_crb"}
        assert state.is_file(), f"no swtpm state at {state}"
        # swtpm's log lands in the host's private /var/log/swtpm, not the machine's.
        assert dv.swtpm_log(host, name).is_file()
        assert not (Path(dv.SWTPM_LOG_DIR) / f"{name}-swtpm.log").exists()

        fresh = dv.file_digest(state)
        token = secrets.token_bytes(8)
        dv.tpm_nv_define(host, name, len(token))
        dv.tpm_nv_write(host, name, token)
        assert dv.tpm_nv_read(host, name, len(token)) == token
        written = dv.file_digest(state)
        assert written != fresh, "writing TPM NV memory did not change swtpm's state file"

        host.virsh("destroy", name)
        wait_gone("swtpm", lambda: dv.swtpm_pids(host))
        stopped = dv.file_digest(state)
        host.virsh("undefine", name, "--keep-tpm")
        assert state.is_file(), "undefine --keep-tpm removed the TPM state"
        assert dv.file_digest(state) == stopped
        dv.define(host, xml, devhost.work)
        assert dv.file_digest(state) == stopped, "the redefinition touched the TPM state"
        boot2 = start_and_wait(devhost, name, console)
        # The NV index written before the redefinition is still in the TPM the guest sees.
        assert dv.tpm_nv_read(host, name, len(token)) == token
        print(
            f"\nvTPM tpm-crb: agent after {boot1:.1f} s / {boot2:.1f} s (TCG); state "
            f"{state.stat().st_size} B; digest fresh {fresh[:12]}, after NV write {written[:12]}, "
            f"after destroy {stopped[:12]} (kept over undefine --keep-tpm + define), "
            f"after the next boot {dv.file_digest(state)[:12]}"
        )

        # A plain undefine deletes the state: --keep-tpm is what kept it.
        dv.remove_domain(host, name)
        assert not dv.swtpm_state_dir(host, uuid).exists()
        assert not dv.swtpm_pids(host)
    except BaseException:
        print(console_tail(console))
        raise
    finally:
        dv.remove_domain(host, name)


# ---- virtiofs (and a tpm-tis vTPM on the same guest: one boot less) --------------------------


@dataclass
class ShareGuest:
    host: HermeticHost
    name: str
    share: Path
    token: str


@pytest.fixture(scope="module")
def share_guest(devhost: DeviceHost) -> Iterator[ShareGuest]:
    host, name = devhost.host, "fs1"
    console = devhost.work / f"{name}.console"
    share = devhost.work / "share"
    share.mkdir()
    token = secrets.token_hex(8)
    (share / "hello.txt").write_text(token + "\n")
    xml = dv.with_devices(
        devhost.guest_xml(name, console),
        [dv.tpm_xml("tpm-tis", "2.0"), dv.virtiofs_xml(share, "share")],
        shared_memory=True,
    )
    try:
        dv.define(host, xml, devhost.work)
        seconds = start_and_wait(devhost, name, console)
        print(f"\nvirtiofs + tpm-tis guest: agent after {seconds:.1f} s (TCG)")
        yield ShareGuest(host, name, share, token)
        dv.remove_domain(host, name)
        # Every helper daemon of the guest ends with it.
        wait_gone("virtiofsd", lambda: dv.virtiofsd_pids(host))
        wait_gone("swtpm", lambda: dv.swtpm_pids(host))
    except BaseException:
        print(console_tail(console))
        raise
    finally:
        dv.remove_domain(host, name)


def test_vtpm_tis_gives_the_guest_dev_tpm0(share_guest: ShareGuest) -> None:
    g = share_guest
    assert dv.guest_tpm(g.host, g.name) == {"dev": "/dev/tpm0", "major": "2", "driver": "tpm_tis"}


def test_virtiofs_share_is_read_and_written_from_the_guest(share_guest: ShareGuest) -> None:
    g = share_guest
    live = g.host.virsh("dumpxml", g.name)
    # libvirt found QEMU's virtiofsd through /usr/share/qemu/vhost-user/*.json.
    assert "<binary path='/usr/lib/qemu/virtiofsd'/>" in live
    assert dv.virtiofsd_pids(g.host), "no virtiofsd runs for the share"
    dv.mount_virtiofs(g.host, g.name, "share", "/mnt/share")
    assert dv.virtiofs_mounted(g.host, g.name, "share", "/mnt/share")
    assert guest_sh(g.host, g.name, "cat /mnt/share/hello.txt").strip() == g.token
    # Both ways, and files made after the mount.
    (g.share / "later.txt").write_text("from the host\n")
    assert guest_sh(g.host, g.name, "cat /mnt/share/later.txt") == "from the host\n"
    guest_sh(g.host, g.name, "echo from the guest >/mnt/share/guest.txt && sync")
    assert (g.share / "guest.txt").read_text() == "from the guest\n"


# ---- OVMF secure boot ------------------------------------------------------------------------


def start_secure_boot_guest(dh: DeviceHost, name: str, console: Path) -> str:
    """Start the firmware-only secure-boot guest under KVM where that works, else TCG; return
    the virt type used."""
    if virt_type() == "kvm":
        xml = dv.secure_boot_domain_xml(name, virt_type="kvm", serial_log=console)
        dv.define(dh.host, xml, dh.work)
        try:
            dh.host.virsh("start", name)
            return "kvm"
        except HermeticHostError as e:
            # Here: "System Management Mode not supported by this hypervisor" (nested KVM).
            print(f"\nsecure boot under KVM does not start here, using TCG: {str(e).splitlines()[-1]}")
            dv.remove_domain(dh.host, name)
    dv.define(dh.host, dv.secure_boot_domain_xml(name, virt_type="qemu", serial_log=console), dh.work)
    dh.host.virsh("start", name)
    return "qemu"


def test_secure_boot_uefi_guest_runs_the_secboot_firmware_with_smm(devhost: DeviceHost) -> None:
    host, name = devhost.host, "sb1"
    console = devhost.work / f"{name}.console"
    try:
        t0 = time.monotonic()
        used = start_secure_boot_guest(devhost, name, console)
        assert host.virsh("domstate", name).strip() == "running"
        fw = dv.firmware_of(host.virsh("dumpxml", name))
        assert fw.machine.startswith("pc-q35-")
        assert fw.loader == "/usr/share/OVMF/OVMF_CODE_4M.ms.fd"
        assert fw.secure
        assert fw.smm
        assert fw.nvram_template == "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
        assert fw.features == {"secure-boot": True, "enrolled-keys": True}
        assert fw.nvram is not None and host.path_outside(fw.nvram).is_file()
        # Enforced, not only selected: OVMF refuses its own unsigned EFI shell.
        wait_for_console(console, "Security Violation", timeout=90)
        print(f"\nsecure boot ({used}): firmware refused the unsigned shell {time.monotonic() - t0:.1f} s after start")
    finally:
        dv.remove_domain(host, name)
    assert not host.path_outside(f"/var/lib/libvirt/qemu/nvram/{name}_VARS.fd").exists()


def test_uefi_firmware_choice_follows_the_secure_boot_feature(devhost: DeviceHost) -> None:
    """What libvirt's auto-selection picks, so virtsync can say what it wants explicitly.

    On q35, plain firmware='efi' gets the secure-boot build with Microsoft keys (and SMM
    switched on): `firmware: uefi` without secure boot must say secure-boot enabled='no'.
    """
    host = devhost.host
    expected = {
        "efi-plain": ("/usr/share/OVMF/OVMF_CODE_4M.ms.fd", True, True),
        "efi-nosb": ("/usr/share/OVMF/OVMF_CODE_4M.fd", False, False),
        "efi-nokeys": ("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", True, True),
    }
    for name, (loader, secure, smm) in expected.items():
        if name == "efi-plain":
            xml = dv.secure_boot_domain_xml(name, secure_boot=False).replace(
                "<feature enabled='no' name='secure-boot'/>", ""
            )
        elif name == "efi-nosb":
            xml = dv.secure_boot_domain_xml(name, secure_boot=False)
        else:
            xml = dv.secure_boot_domain_xml(name, enrolled_keys=False)
        try:
            dv.define(host, xml, devhost.work)
            host.virsh("start", name)
            fw = dv.firmware_of(host.virsh("dumpxml", name))
            assert (fw.loader, fw.secure, fw.smm) == (loader, secure, smm), name
        finally:
            dv.remove_domain(host, name)
