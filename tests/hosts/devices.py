"""Guest devices on hermetic hosts: vTPM (swtpm), virtiofs shares, OVMF secure boot.

Helpers for end-to-end tests that give guests these devices, through raw domain XML or through
virtsync specs, and check them from the host's side and from inside the Linux test guest
(tests/hosts/linux_guest.py; commands run through its agent's guest-exec).

What each device needs here (checked on Debian 12: libvirt 9.0, QEMU 7.2, swtpm 0.7.1):

- vTPM: ``<tpm model='tpm-crb'|'tpm-tis'><backend type='emulator' version='2.0'/></tpm>``;
  packages swtpm + swtpm-tools. libvirt runs ``swtpm_setup`` at the first start (as qemu.conf's
  ``swtpm_user``, tss on Debian), then one ``swtpm socket`` per running guest. The state is
  ``/var/lib/libvirt/swtpm/UUID/tpm2/tpm2-00.permall``: keyed by the domain's UUID, so a
  redefinition keeps the TPM only with the same ``<uuid>`` and after ``undefine --keep-tpm``
  (a plain undefine deletes it). The guest sees /dev/tpm0 (Debian's kernel has both drivers
  built in). Boot the test guest's bzImage (``ensure_test_guest(pvh=False)``) with a TPM: through
  the PVH entry (vmlinux) QEMU's initrd overwrites SeaBIOS's ACPI tables, which the 64 KiB TPM
  event log pushes down, and the kernel finds no TPM ("ACPI: Interpreter disabled").
- virtiofs: ``<filesystem type='mount' accessmode='passthrough'><driver type='virtiofs'/>
  <source dir='…'/><target dir='TAG'/></filesystem>`` plus shared memory,
  ``<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>``. libvirt
  finds QEMU's own virtiofsd (/usr/lib/qemu/virtiofsd, qemu-system-common) through
  /usr/share/qemu/vhost-user/50-qemu-virtiofsd.json and runs one per share as root. In the
  guest: ``mount -t virtiofs TAG DIR`` (modules virtiofs, fuse). libvirt 9.0 refuses
  ``<readonly/>`` ("virtiofs does not yet support read-only mode") and a domain without shared
  memory ("'virtiofs' requires shared memory"), both at define.
- Secure boot: ``<os firmware='efi'>`` on a q35 machine with ``<firmware><feature enabled='yes'
  name='secure-boot'/>…`` and ``<features><smm state='on'/>``; libvirt picks the firmware from
  /usr/share/qemu/firmware/*.json (package ovmf). KVM on this machine has no SMM ("System
  Management Mode not supported by this hypervisor"), so these guests run under TCG here. On
  q35 a plain ``firmware='efi'`` gets the secure-boot build with Microsoft keys and SMM too;
  ``<feature enabled='no' name='secure-boot'/>`` gets OVMF_CODE_4M.fd. The live XML names the
  chosen ``<loader>``/``<nvram>`` and drops the ``firmware='efi'`` attribute; the inactive
  XML keeps the attribute and has no loader path.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import struct
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from tests.hosts.hermetic import HermeticHost, HermeticHostError
from tests.hosts.linux_guest import TestGuestError, guest_sh

# ---- domain XML ------------------------------------------------------------------------------

SHARED_MEMORY_XML = "<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>"


def tpm_xml(model: str = "tpm-crb", version: str = "2.0") -> str:
    """An emulated (swtpm) TPM device."""
    return f"<tpm model={quoteattr(model)}><backend type='emulator' version={quoteattr(version)}/></tpm>"


def virtiofs_xml(source: Path | str, target: str) -> str:
    """A virtiofs share of host directory source, mounted in the guest by its tag target.

    Needs SHARED_MEMORY_XML in the domain. (libvirt 9.0 refuses ``<readonly/>`` on virtiofs.)
    """
    return (
        "<filesystem type='mount' accessmode='passthrough'><driver type='virtiofs'/>"
        f"<source dir={quoteattr(str(source))}/><target dir={quoteattr(target)}/></filesystem>"
    )


def with_devices(
    domain_xml: str,
    devices: Iterable[str] = (),
    *,
    shared_memory: bool = False,
    uuid: str | None = None,
) -> str:
    """domain_xml (e.g. linux_guest.guest_domain_xml's) with more devices, shared memory
    backing (virtiofs needs it) and a fixed UUID (a vTPM's state is found by it)."""
    root = ET.fromstring(domain_xml)
    if uuid is not None:
        for old in root.findall("uuid"):
            root.remove(old)
        el = ET.Element("uuid")
        el.text = uuid
        root.insert(1, el)  # after <name>
    if shared_memory and root.find("memoryBacking") is None:
        root.append(ET.fromstring(SHARED_MEMORY_XML))
    devs = root.find("devices")
    if devs is None:
        devs = ET.SubElement(root, "devices")
    for device in devices:
        devs.append(ET.fromstring(device))
    return ET.tostring(root, encoding="unicode") + "\n"


def secure_boot_domain_xml(
    name: str,
    *,
    virt_type: str = "qemu",
    secure_boot: bool = True,
    enrolled_keys: bool = True,
    serial_log: Path | str | None = None,
    memory_mib: int = 256,
) -> str:
    """A diskless, firmware-only UEFI guest on q35 with SMM; libvirt picks the OVMF build.

    With the ovmf package: secure boot + enrolled keys -> OVMF_CODE_4M.ms.fd with
    OVMF_VARS_4M.ms.fd (Microsoft keys: unsigned EFI binaries are refused), secure boot without
    enrolled keys -> OVMF_CODE_4M.secboot.fd with the empty OVMF_VARS_4M.fd (not enforcing),
    secure_boot False -> OVMF_CODE_4M.fd. Under KVM here it does not start (no SMM).
    """
    feats = [f"<feature enabled='{'yes' if secure_boot else 'no'}' name='secure-boot'/>"]
    if secure_boot:
        feats.append(f"<feature enabled='{'yes' if enrolled_keys else 'no'}' name='enrolled-keys'/>")
    smm = "<smm state='on'/>" if secure_boot else ""
    if serial_log is not None:
        serial = (
            f"<serial type='file'><source path={quoteattr(str(serial_log))} append='on'/>"
            "<target port='0'/></serial>"
        )
    else:
        serial = "<serial type='pty'><target port='0'/></serial>"
    return f"""\
<domain type='{virt_type}'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os firmware='efi'>
    <type arch='x86_64' machine='q35'>hvm</type>
    <firmware>{"".join(feats)}</firmware>
  </os>
  <features><acpi/><apic/>{smm}</features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    {serial}
  </devices>
</domain>
"""


@dataclass(frozen=True)
class Firmware:
    """The firmware facts of a domain's (live) XML."""

    machine: str
    loader: str | None  # path; libvirt fills it in at start when auto-selecting
    secure: bool  # <loader secure='yes'>
    nvram: str | None
    nvram_template: str | None
    smm: bool
    features: dict[str, bool]  # <firmware><feature name=… enabled=…>


def firmware_of(domain_xml: str) -> Firmware:
    root = ET.fromstring(domain_xml)
    type_el = root.find("os/type")
    loader = root.find("os/loader")
    nvram = root.find("os/nvram")
    smm = root.find("features/smm")
    return Firmware(
        machine=type_el.get("machine", "") if type_el is not None else "",
        loader=_text(loader),
        secure=loader is not None and loader.get("secure") == "yes",
        nvram=_text(nvram),
        nvram_template=nvram.get("template") if nvram is not None else None,
        smm=smm is not None and smm.get("state", "on") == "on",
        features={
            f.get("name", ""): f.get("enabled") == "yes" for f in root.findall("os/firmware/feature")
        },
    )


def _text(el: ET.Element | None) -> str | None:
    if el is None or not (el.text or "").strip():
        return None
    return (el.text or "").strip()


# ---- domains that clean up after themselves -----------------------------------------------


def domain_name(domain_xml: str) -> str:
    return ET.fromstring(domain_xml).findtext("name", "")


def define(host: HermeticHost, domain_xml: str, work: Path) -> str:
    """Define domain_xml on host (written to work/NAME.xml first); return the domain's name."""
    name = domain_name(domain_xml)
    path = work / f"{name}.xml"
    path.write_text(domain_xml)
    host.virsh("define", str(path))
    return name


def remove_domain(host: HermeticHost, name: str, keep_tpm: bool = False) -> None:
    """Destroy (if running) and undefine name with its NVRAM and, unless keep_tpm, its TPM
    state. Quiet when it does not exist: for finally blocks."""
    with contextlib.suppress(HermeticHostError):
        host.virsh("destroy", name)
    flags = ["--nvram"] + (["--keep-tpm"] if keep_tpm else [])
    with contextlib.suppress(HermeticHostError):
        host.virsh("undefine", name, *flags)


@contextlib.contextmanager
def defined_domain(host: HermeticHost, domain_xml: str, work: Path) -> Iterator[str]:
    """Define domain_xml; on leaving, destroy and undefine it (NVRAM and TPM state too)."""
    name = domain_name(domain_xml)
    try:
        yield define(host, domain_xml, work)
    finally:
        remove_domain(host, name)


def domain_uuid(host: HermeticHost, name: str) -> str:
    return host.virsh("domuuid", name).strip()


# ---- vTPM ----------------------------------------------------------------------------------

SWTPM_DIR = "/var/lib/libvirt/swtpm"
SWTPM_LOG_DIR = "/var/log/swtpm/libvirt/qemu"


def swtpm_state_dir(host: HermeticHost, uuid: str) -> Path:
    """Where (seen from outside the host) libvirt keeps the TPM state of the domain uuid."""
    return host.path_outside(f"{SWTPM_DIR}/{uuid}")


def swtpm_state_file(host: HermeticHost, uuid: str, version: str = "2.0") -> Path:
    """The swtpm permanent-state file (the TPM's NV memory, seeds, counters)."""
    if version == "2.0":
        return swtpm_state_dir(host, uuid) / "tpm2" / "tpm2-00.permall"
    return swtpm_state_dir(host, uuid) / "tpm1.2" / "tpm-00.permall"


def swtpm_log(host: HermeticHost, name: str) -> Path:
    return host.path_outside(f"{SWTPM_LOG_DIR}/{name}-swtpm.log")


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def swtpm_pids(host: HermeticHost) -> list[int]:
    return host.pids_of("swtpm")


class TpmError(RuntimeError):
    def __init__(self, command: str, code: int) -> None:
        super().__init__(f"TPM2 {command} failed: response code {code:#x}")
        self.code = code


# TPM 2.0 commands sent raw to /dev/tpm0 from the guest (busybox has no tpm2-tools). Each uses
# one password session with an empty password (TPM_RS_PW), as a fresh TPM accepts.
_ST_SESSIONS = 0x8002
_RS_PW = 0x40000009
_RH_OWNER = 0x40000001
_ALG_SHA256 = 0x000B
# OWNERWRITE | AUTHWRITE | OWNERREAD | AUTHREAD, an ordinary index.
_NV_ATTRIBUTES = 0x00000002 | 0x00000004 | 0x00020000 | 0x00040000
TPM_RC_NV_DEFINED = 0x14C
DEFAULT_NV_INDEX = 0x01500001  # the owner's range


def _tpm2_command(code: int, handles: bytes, parameters: bytes) -> bytes:
    session = struct.pack(">IHBH", _RS_PW, 0, 0, 0)
    body = handles + struct.pack(">I", len(session)) + session + parameters
    return struct.pack(">HII", _ST_SESSIONS, 10 + len(body), code) + body


def tpm_transact(host: HermeticHost, name: str, command: bytes, device: str = "/dev/tpm0") -> bytes:
    """Send one raw TPM command to device in the guest; return the raw response."""
    octal = "".join(f"\\{b:03o}" for b in command)
    out = guest_sh(
        host,
        name,
        f"printf '{octal}' >/tmp/tpm.cmd && exec 3<>{device} && cat /tmp/tpm.cmd >&3 "
        "&& dd bs=4096 count=1 <&3 2>/dev/null | od -An -v -tx1",
    )
    response = bytes.fromhex(re.sub(r"\s+", "", out))
    if len(response) < 10:
        raise TestGuestError(f"short TPM response from {device} in {name}: {response.hex()}")
    return response


def response_code(response: bytes) -> int:
    code: int = struct.unpack(">I", response[6:10])[0]
    return code


def _checked(what: str, response: bytes, ok: tuple[int, ...] = ()) -> bytes:
    code = response_code(response)
    if code != 0 and code not in ok:
        raise TpmError(what, code)
    return response


def tpm_nv_define(host: HermeticHost, name: str, size: int, index: int = DEFAULT_NV_INDEX) -> bool:
    """Define an owner NV index of size bytes (empty auth); False if it existed already."""
    public = struct.pack(">IHIHH", index, _ALG_SHA256, _NV_ATTRIBUTES, 0, size)
    params = struct.pack(">H", 0) + struct.pack(">H", len(public)) + public
    response = _checked(
        "NV_DefineSpace",
        tpm_transact(host, name, _tpm2_command(0x12A, struct.pack(">I", _RH_OWNER), params)),
        ok=(TPM_RC_NV_DEFINED,),
    )
    return response_code(response) == 0


def tpm_nv_write(host: HermeticHost, name: str, data: bytes, index: int = DEFAULT_NV_INDEX) -> None:
    """Write data at offset 0 of the NV index: the TPM's persistent state changes."""
    params = struct.pack(">H", len(data)) + data + struct.pack(">H", 0)
    handles = struct.pack(">II", index, index)
    _checked("NV_Write", tpm_transact(host, name, _tpm2_command(0x137, handles, params)))


def tpm_nv_read(host: HermeticHost, name: str, size: int, index: int = DEFAULT_NV_INDEX) -> bytes:
    """size bytes from offset 0 of the NV index."""
    handles = struct.pack(">II", index, index)
    response = _checked(
        "NV_Read", tpm_transact(host, name, _tpm2_command(0x14E, handles, struct.pack(">HH", size, 0)))
    )
    # header (10), parameterSize (4), TPM2B_MAX_NV_BUFFER (2 + n), then the session's reply.
    (length,) = struct.unpack(">H", response[14:16])
    return response[16 : 16 + length]


def guest_tpm(host: HermeticHost, name: str) -> dict[str, str]:
    """What the guest's kernel says of its TPM: the device node, version and driver."""
    out = guest_sh(
        host,
        name,
        "test -c /dev/tpm0 && echo dev=/dev/tpm0; "
        "echo major=$(cat /sys/class/tpm/tpm0/tpm_version_major 2>/dev/null); "
        "echo driver=$(basename $(readlink /sys/class/tpm/tpm0/device/driver) 2>/dev/null)",
    )
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


# ---- virtiofs ------------------------------------------------------------------------------


def virtiofsd_pids(host: HermeticHost) -> list[int]:
    return host.pids_of("virtiofsd")


def mount_virtiofs(host: HermeticHost, name: str, tag: str, mountpoint: str = "/mnt/share") -> None:
    """Mount the share tagged tag at mountpoint in the guest (no-op when it is mounted)."""
    if virtiofs_mounts(host, name).get(mountpoint) == tag:
        return
    guest_sh(host, name, f"mkdir -p {mountpoint} && mount -t virtiofs {tag} {mountpoint}")


def virtiofs_mounts(host: HermeticHost, name: str) -> dict[str, str]:
    """The guest's virtiofs mounts: mount point -> tag (from /proc/mounts)."""
    mounts = {}
    for line in guest_sh(host, name, "cat /proc/mounts").splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "virtiofs":
            mounts[fields[1]] = fields[0]
    return mounts


def virtiofs_mounted(host: HermeticHost, name: str, tag: str, mountpoint: str = "/mnt/share") -> bool:
    return virtiofs_mounts(host, name).get(mountpoint) == tag


def new_uuid() -> str:
    return str(uuidlib.uuid4())
