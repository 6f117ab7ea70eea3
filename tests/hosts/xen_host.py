"""A real Xen host for end-to-end tests: Xen 4.17 + a Debian dom0 running libvirtd, under QEMU.

scripts/build-xen-host.sh builds the image (``xen``, ``vmlinuz``, ``dom0.cpio.gz``) into
``$VIRTSYNC_XEN_HOST_DIR`` (default ``~/.cache/virtsync-tests/xen-host``, outside the checkout so that a
clean clone on the same machine reuses it); :class:`XenHost` boots it with
QEMU's TCG (Xen 4.17 dies at once under KVM here, and libvirt's libxl driver needs a named CPU
model such as Nehalem, see DESIGN.md) and forwards a free loopback port to dom0's libvirtd, which
listens on TCP without authentication: connect to :attr:`XenHost.uri`.

Everything dom0 prints, and every domU console line (prefixed ``[domU NAME] `` by dom0's init),
reaches QEMU's serial port, captured in :attr:`XenHost.console_log`. The test guest's kernel
and initrd are inside dom0 at :data:`DOM0_GUEST_KERNEL` and :data:`DOM0_GUEST_INITRD`.
"""

from __future__ import annotations

import atexit
import functools
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-xen-host.sh"
DOM0_GUEST_KERNEL = "/var/lib/libvirt/boot/vmlinuz"
DOM0_GUEST_INITRD = "/var/lib/libvirt/boot/initrd.img"
QEMU = "qemu-system-x86_64"


class XenHostError(RuntimeError):
    pass


def _user_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def cache_dir() -> Path:
    return Path(os.environ.get("VIRTSYNC_XEN_HOST_DIR") or _user_cache() / "virtsync-tests" / "xen-host")


@functools.cache
def ensure_xen_host_image(timeout: float = 1200) -> Path:
    """The directory holding xen, vmlinuz and dom0.cpio.gz, built or refreshed when needed."""
    done = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise XenHostError(f"{BUILD_SCRIPT.name} failed ({done.returncode}):\n{done.stderr.strip()[-3000:]}")
    out = Path(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else cache_dir()
    for name in ("xen", "vmlinuz", "dom0.cpio.gz"):
        if not (out / name).is_file():
            raise XenHostError(f"{BUILD_SCRIPT.name} succeeded but {out / name} is missing")
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class XenHost:
    """A Xen test host under QEMU. ``with XenHost() as host: libvirt.open(host.uri)``."""

    def __init__(self, image_dir: Path | None = None, workdir: Path | None = None,
                 memory_mib: int = 3072, dom0_mib: int = 2048, smp: int = 2) -> None:
        self.image_dir = image_dir
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="xenhost-"))
        self.memory_mib = memory_mib
        self.dom0_mib = dom0_mib
        self.smp = smp
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.console_log = self.workdir / "console.log"
        self.boot_seconds: float | None = None
        self.stalls = 0

    @property
    def uri(self) -> str:
        if not self.port:
            raise XenHostError("the Xen host is not started")
        return f"xen+tcp://127.0.0.1:{self.port}/system"

    def qemu_argv(self) -> list[str]:
        img = self.image_dir or ensure_xen_host_image()
        return [
            QEMU, "-accel", "tcg", "-cpu", "Nehalem", "-m", str(self.memory_mib), "-smp", str(self.smp),
            "-display", "none", "-monitor", "none", "-serial", f"file:{self.console_log}",
            "-no-reboot",
            "-kernel", str(img / "xen"),
            "-append", f"console=com1 dom0_mem={self.dom0_mib}M,max:{self.dom0_mib}M",
            # QEMU's multiboot loader: comma-separated modules, each "file args".
            "-initrd", f"{img / 'vmlinuz'} console=hvc0 rdinit=/init,{img / 'dom0.cpio.gz'}",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.port}-:16509",
            "-device", "e1000,netdev=n0",
        ]

    def start(self, timeout: float = 180, attempts: int = 2, stall: float = 60) -> XenHost:
        """Boots QEMU and waits until dom0's libvirtd answers as driver "Xen"; returns self.

        Under TCG, dom0's kernel sometimes hangs early in boot (seen here once in a few boots,
        right after "sched_clock: Marking stable"); a boot whose console stays silent for
        ``stall`` seconds before libvirtd answers is killed and retried, ``attempts`` in all.
        ``timeout`` bounds each attempt. :attr:`stalls` counts the retried boots.
        """
        if self.proc is not None:
            raise XenHostError("already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.stalls = 0
        for attempt in range(1, attempts + 1):
            if self._boot(timeout, stall if attempt < attempts else None):
                return self
            self.stalls += 1
            stalled = self.console_log.with_name(f"console.stalled-{attempt}.log")
            if self.console_log.exists():
                self.console_log.replace(stalled)
        raise AssertionError("unreachable")

    def _boot(self, timeout: float, stall: float | None) -> bool:
        """One boot: True once libvirtd answers, False when stalled (QEMU then stopped)."""
        import libvirt

        self.console_log.unlink(missing_ok=True)
        self.port = _free_port()
        argv = self.qemu_argv()
        t0 = time.monotonic()
        with open(self.workdir / "qemu.stderr", "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         start_new_session=True)
        atexit.register(self.stop)  # no QEMU outlives the test process, even on an aborted run
        libvirt.registerErrorHandler(lambda *_: None, None)
        last = ""
        size, grown = -1, t0
        while True:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                raise XenHostError(f"QEMU exited ({rc}) before libvirtd answered: {self._stderr()}" + self.tail())
            try:
                conn = libvirt.open(self.uri)
                try:
                    kind = conn.getType()
                finally:
                    conn.close()
                if kind == "Xen":
                    self.boot_seconds = time.monotonic() - t0
                    return True
                last = f"driver type {kind!r}"
            except libvirt.libvirtError as e:
                last = str(e)
            now = time.monotonic()
            current = self.console_log.stat().st_size if self.console_log.exists() else 0
            if current != size:
                size, grown = current, now
            elif stall is not None and now - grown > stall:
                self.stop()
                return False
            if now - t0 > timeout:
                self.stop()
                raise XenHostError(f"libvirtd on the Xen host did not answer within {timeout:.0f} s: {last}"
                                   + self.tail())
            time.sleep(1)

    def _stderr(self) -> str:
        try:
            return (self.workdir / "qemu.stderr").read_text(errors="replace").strip()
        except OSError:
            return ""

    def console_text(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return f"\n--- last lines of {self.console_log}:\n" + "\n".join(self.console_text().splitlines()[-lines:])

    def wait_for_console(self, needle: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.console_text()
            if needle in text:
                return text
            if time.monotonic() > deadline:
                raise XenHostError(f"{needle!r} not on the Xen host's console within {timeout:.0f} s" + self.tail())
            time.sleep(0.5)

    def stop(self) -> None:
        """Kills QEMU (by its pid; its domUs go with it). Idempotent."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass

    def __enter__(self) -> XenHost:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
