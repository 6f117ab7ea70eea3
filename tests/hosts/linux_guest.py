"""The Linux test guest: a Debian kernel and a busybox + qemu-guest-agent initramfs.

scripts/build-test-guest.sh builds it from Debian packages into a cache directory outside the
checkout (``$VIRTSYNC_TEST_GUEST_DIR``, default ``~/.cache/virtsync-tests/test-guest``) and
rebuilds only when the packages change. Booted by direct kernel boot, the guest:

- prints ``virtsync-test-guest: booted`` on its console (``console=ttyS0`` for KVM/QEMU,
  ``console=hvc0`` as a Xen PV domU; the same kernel and initrd serve both),
- mounts the first ext4 file system found on a virtio or Xen disk at ``/data``,
- takes a DHCP lease on every ethN (``lease IP on ethN`` on the console),
- runs qemu-ga on the virtio-serial port ``org.qemu.guest_agent.0``,
- powers off on the ACPI power button, on the agent's guest-shutdown and on a Xen request.

KVM on the development machine cannot boot Linux (DESIGN.md), so :func:`guest_domain_xml`
defaults to ``<domain type='qemu'>`` (TCG), which boots to a working agent in seconds.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from tests.hosts.hermetic import HermeticHost, HermeticHostError

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-test-guest.sh"
AGENT_CHANNEL = "org.qemu.guest_agent.0"
BOOTED_LINE = "virtsync-test-guest: booted"


class TestGuestError(RuntimeError):
    __test__ = False  # not a pytest test class


def _user_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def cache_dir() -> Path:
    return Path(os.environ.get("VIRTSYNC_TEST_GUEST_DIR") or _user_cache() / "virtsync-tests" / "test-guest")


def ensure_test_guest(pvh: bool = True) -> tuple[Path, Path]:
    """(kernel, initrd) of the test guest, built or refreshed first when needed.

    The kernel is ``vmlinux``, the uncompressed ELF that QEMU boots through its PVH entry
    (about 3 s faster to a working agent under TCG than the bzImage), unless pvh is False
    or the build could not make it: then ``vmlinuz``, the bzImage (which also serves as a
    Xen PV domU kernel). Runs the build script once per process; it returns at once when
    its cache is current. Rebuilt files are renamed into place, so hard-link or copy them
    (:func:`link_or_copy`) before use when another process might rebuild meanwhile.
    """
    out = _build()
    kernel = out / "vmlinux"
    if not (pvh and kernel.is_file()):
        kernel = out / "vmlinuz"
    initrd = out / "initrd.img"
    for path in (kernel, initrd):
        if not path.is_file():
            raise TestGuestError(f"{BUILD_SCRIPT.name} succeeded but {path} is missing")
    return kernel, initrd


@functools.cache
def _build(timeout: float = 900) -> Path:
    done = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise TestGuestError(
            f"{BUILD_SCRIPT.name} failed ({done.returncode}):\n{done.stderr.strip()}"
        )
    return Path(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else cache_dir()


def link_or_copy(src: Path, dst_dir: Path) -> Path:
    """src placed in dst_dir (a hard link where possible: instant, and a rebuild of the
    cache, which renames new files into place, leaves it whole)."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / src.name
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def make_ext4_image(path: Path, size_mib: int = 64, label: str = "vsdata") -> Path:
    """A raw disk image holding an empty ext4 file system (made with the host's mkfs.ext4)."""
    mkfs = shutil.which("mkfs.ext4") or "/sbin/mkfs.ext4"
    with open(path, "wb") as f:
        f.truncate(size_mib * 1024 * 1024)
    done = subprocess.run(
        [mkfs, "-q", "-F", "-L", label, str(path)], capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise TestGuestError(f"mkfs.ext4 {path} failed: {done.stderr.strip()}")
    return path


def guest_domain_xml(
    name: str,
    kernel: Path | str,
    initrd: Path | str,
    network: str | None,
    mac: str | None = None,
    data_disk: Path | str | None = None,
    cmdline_extra: str = "",
    *,
    memory_mib: int = 256,
    vcpus: int = 1,
    serial_log: Path | str | None = None,
    virt_type: str = "qemu",
) -> str:
    """Domain XML for the test guest: direct kernel boot, agent channel, NIC, data disk.

    ``serial_log``: a file that receives the serial console (ttyS0), else a pty; it is appended
    to, so a second start of the guest adds its boot after the first's.
    ``data_disk``: a raw (or ``.qcow2``) image, attached as the first virtio disk.
    No ``<cpu>``: on a nested VM, host-model/host-passthrough make QEMU abort (DESIGN.md).
    """
    cmdline = f"console=ttyS0 virtsync.hostname={name}"
    if cmdline_extra:
        cmdline += f" {cmdline_extra}"
    devices = []
    if data_disk is not None:
        fmt = "qcow2" if str(data_disk).endswith(".qcow2") else "raw"
        devices.append(
            f"""<disk type='file' device='disk'>
      <driver name='qemu' type='{fmt}'/>
      <source file={quoteattr(str(data_disk))}/>
      <target dev='vda' bus='virtio'/>
    </disk>"""
        )
    if network is not None:
        mac_xml = f"<mac address={quoteattr(mac)}/>" if mac else ""
        devices.append(
            f"""<interface type='network'>
      <source network={quoteattr(network)}/>{mac_xml}
      <model type='virtio'/>
    </interface>"""
        )
    if serial_log is not None:
        devices.append(
            f"""<serial type='file'>
      <source path={quoteattr(str(serial_log))} append='on'/>
      <target port='0'/>
    </serial>"""
        )
    else:
        devices.append("<serial type='pty'><target port='0'/></serial>")
    devices.append(
        f"""<channel type='unix'>
      <target type='virtio' name='{AGENT_CHANNEL}'/>
    </channel>"""
    )
    devices.append(
        "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>"
    )
    devices.append("<memballoon model='virtio'/>")
    joined = "\n    ".join(devices)
    return f"""\
<domain type='{virt_type}'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>{vcpus}</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
    <kernel>{escape(str(kernel))}</kernel>
    <initrd>{escape(str(initrd))}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    {joined}
  </devices>
</domain>
"""


def agent(host: HermeticHost, name: str, command: dict[str, Any], timeout: int = 10) -> dict[str, Any]:
    """The guest agent's whole reply to command (``{"return": ...}``), via virsh."""
    out = host.virsh(
        "qemu-agent-command", "--timeout", str(timeout), name, json.dumps(command),
        timeout=timeout + 30,
    )
    reply = json.loads(out)
    if not isinstance(reply, dict):
        raise TestGuestError(f"agent reply to {command} is not an object: {out!r}")
    return reply


def wait_for_agent(
    host: HermeticHost, name: str, timeout: float = 60, serial_log: Path | None = None
) -> float:
    """Poll guest-ping until the agent answers; return the seconds waited.

    On timeout, the error carries the last agent error and the console's tail when known.
    """
    start = time.monotonic()
    last = ""
    while True:
        try:
            agent(host, name, {"execute": "guest-ping"}, timeout=2)
            return time.monotonic() - start
        except (HermeticHostError, subprocess.TimeoutExpired, json.JSONDecodeError) as e:
            last = str(e)
        if time.monotonic() - start > timeout:
            raise TestGuestError(
                f"guest agent of {name} did not answer within {timeout:.0f} s: {last}"
                + console_tail(serial_log)
            )
        time.sleep(0.2)


def console_tail(serial_log: Path | None, lines: int = 40) -> str:
    if serial_log is None:
        return ""
    try:
        text = serial_log.read_text(errors="replace")
    except OSError as e:
        return f"\n(no console log: {e})"
    return f"\n--- last lines of {serial_log}:\n" + "\n".join(text.splitlines()[-lines:])


def wait_for_console(serial_log: Path, needle: str, timeout: float = 30) -> str:
    """The console log once it contains needle."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = serial_log.read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        if needle in text:
            return text
        if time.monotonic() > deadline:
            raise TestGuestError(f"{needle!r} not on the console within {timeout:.0f} s" + console_tail(serial_log))
        time.sleep(0.2)


# ---- commands in the guest (qemu-ga guest-exec) ---------------------------------------------


@dataclass(frozen=True)
class GuestExecResult:
    """What a command run through the agent's guest-exec left: exit code and its output."""

    exitcode: int
    stdout: str
    stderr: str
    signal: int | None = None


def guest_exec(
    host: HermeticHost,
    name: str,
    path: str,
    args: list[str] | tuple[str, ...] = (),
    timeout: float = 30,
    stdin: bytes | None = None,
) -> GuestExecResult:
    """Run path with args in the guest through the agent (guest-exec), wait for it, return
    its exit code and captured output. TestGuestError when it does not end within timeout.
    """
    command: dict[str, Any] = {"path": path, "arg": list(args), "capture-output": True}
    if stdin is not None:
        command["input-data"] = base64.b64encode(stdin).decode()
    started = agent(host, name, {"execute": "guest-exec", "arguments": command})
    pid = started["return"]["pid"]
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        status = agent(host, name, {"execute": "guest-exec-status", "arguments": {"pid": pid}})
        ret = status["return"]
        if ret.get("exited"):
            out = base64.b64decode(ret.get("out-data", "")).decode(errors="replace")
            err = base64.b64decode(ret.get("err-data", "")).decode(errors="replace")
            return GuestExecResult(int(ret.get("exitcode", -1)), out, err, ret.get("signal"))
        if time.monotonic() > deadline:
            raise TestGuestError(f"{path} {' '.join(args)} in {name} did not end within {timeout:.0f} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def guest_sh(host: HermeticHost, name: str, script: str, timeout: float = 30) -> str:
    """stdout of ``/bin/sh -c script`` in the guest; TestGuestError (with stderr) unless it exits 0."""
    done = guest_exec(host, name, "/bin/sh", ["-c", script], timeout=timeout)
    if done.exitcode != 0 or done.signal is not None:
        raise TestGuestError(
            f"in guest {name}: sh -c {script!r} failed (exit {done.exitcode}, signal {done.signal}): "
            f"{done.stderr.strip() or done.stdout.strip()}"
        )
    return done.stdout
