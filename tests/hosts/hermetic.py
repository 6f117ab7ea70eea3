"""Hermetic libvirtd test hosts.

A HermeticHost is a real libvirtd (QEMU driver, networks, storage) with a virtlogd, run as root
in its own mount, network and PID namespaces. Private directories are bind-mounted over the paths
libvirt hard-codes (/run/libvirt, /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt,
/etc/libvirt, and swtpm's /var/log/swtpm and /var/lib/swtpm-localca), so several hosts run side
by side and leave nothing behind in the root namespace: their guests, bridges, dnsmasq and
iptables rules all live in the host's network namespace.

Clients outside reach a host through its private socket: ``qemu:///system?socket=ROOT/run/...``.
Stopping a host SIGKILLs the init of its PID namespace, so the kernel kills every process in it.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import libvirt

SCRIPT = Path(__file__).with_name("hermetic_host.sh")

# Private subdirectory of a host's root -> the path it is bind-mounted over in the namespace.
MOUNTS = {
    "run": "/run/libvirt",  # /var/run is a symlink to /run
    "lib": "/var/lib/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
    "etc": "/etc/libvirt",
    # vTPM (swtpm): libvirt keeps each guest's TPM state in /var/lib/libvirt/swtpm/UUID (under
    # lib/ above), but writes swtpm's log to /var/log/swtpm/libvirt/qemu (compiled in), and
    # swtpm_setup's local CA, which signs a new TPM's EK certificate, keeps its keys in
    # /var/lib/swtpm-localca (/etc/swtpm-localca.conf): both would be shared by every host
    # and outlive them in the root namespace.
    "swtpm-log": "/var/log/swtpm",
    "swtpm-localca": "/var/lib/swtpm-localca",
}
TOOLS = ("unshare", "nsenter", "setpriv", "mount", "ip", "libvirtd", "virtlogd", "virsh")
# sockaddr_un.sun_path is 108 bytes including the NUL.
MAX_SOCKET_PATH = 107
# Probing QEMU's capabilities costs ~0.6 s at a host's first guest. libvirt validates its cache
# (QEMU's and its own ctimes, kernel, CPU) and re-probes when stale, so hosts can share it.
CAPS_SEED = Path(tempfile.gettempdir()) / "virtsync-hermetic" / "qemu-capabilities"

_live: weakref.WeakSet[HermeticHost] = weakref.WeakSet()


class HermeticHostError(RuntimeError):
    pass


@dataclass(frozen=True)
class ServerTls:
    """A host's TLS listener: the CA that signs (and verifies) clients, the server's
    certificate for the address clients use, and its key. Copied into the host's root."""

    ca_file: Path
    cert_file: Path
    key_file: Path


# Where a TLS host's files are, inside its namespace (ROOT/etc is /etc/libvirt there).
TLS_DIR = "/etc/libvirt/pki"
TLS_NAMES = {"ca_file": "cacert.pem", "cert_file": "servercert.pem", "key_file": "serverkey.pem"}


@functools.cache
def virt_type() -> str:
    """'kvm' where /dev/kvm is usable, else 'qemu' (TCG: slow, but the same XML otherwise)."""
    # Opened rather than os.access()ed: root passes access checks on a node it cannot use.
    with contextlib.suppress(OSError):
        os.close(os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC))
        return "kvm"
    print(
        "WARNING: /dev/kvm is not usable; test guests fall back to type='qemu' (TCG)",
        file=sys.stderr,
    )
    return "qemu"


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run hermetic hosts; empty when all is there."""
    missing = [f"command {tool}" for tool in TOOLS if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root (namespaces and bind mounts need it)")
    try:
        import pwd

        pwd.getpwnam("libvirt-qemu")
    except KeyError:
        # The QEMU driver fails to initialise without its built-in default user, even with
        # user = "root" in qemu.conf: "Failed to parse user 'libvirt-qemu'".
        missing.append("user libvirt-qemu (scripts/install-system-deps.sh test creates it)")
    if shutil.which("qemu-system-x86_64") is None:
        missing.append("command qemu-system-x86_64")
    return missing


def live_hosts() -> list[HermeticHost]:
    """Hosts started and not stopped yet (for leak checks)."""
    return [h for h in _live if h.running]


def stray_processes() -> list[int]:
    """PIDs of this process's hosts (unshare ... hermetic_host.sh) that no running host owns.

    Only our own children: other test processes (pytest-xdist workers) run hosts of theirs.
    """
    owned = {h._proc.pid for h in live_hosts() if h._proc is not None}
    stray = []
    for pid in _all_pids():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            argv[0] == b"unshare"
            and str(SCRIPT).encode() in argv
            and _ppid(pid) == os.getpid()
            and pid not in owned
        ):
            stray.append(pid)
    return stray


def _ns_id(pid: int, kind: str) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm, in parentheses, may itself hold spaces and parentheses.
    return int(stat.rsplit(")", 1)[1].split()[1])


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _libvirtd_conf(host_uuid: str, listen_tcp: bool, listen_tls: bool = False) -> str:
    lines = [
        "# Written by tests/hosts/hermetic.py for one hermetic test host.",
        # Unique per host: migration refuses to move a guest between hosts with one UUID.
        f'host_uuid = "{host_uuid}"',
        # No polkit or dbus here; the socket is only reachable by root through ROOT/run.
        'auth_unix_rw = "none"',
        'auth_unix_ro = "none"',
        'unix_sock_rw_perms = "0700"',
        # Daemons started with -d log to syslog, which is absent: keep warnings in a file.
        'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"',
    ]
    if listen_tls:
        # Port 16514 of the host's network namespace; clients must show a certificate the CA
        # signed (tls_no_verify_certificate = 0), which is all the authentication there is.
        lines += [
            "listen_tls = 1",
            f'ca_file = "{TLS_DIR}/{TLS_NAMES["ca_file"]}"',
            f'cert_file = "{TLS_DIR}/{TLS_NAMES["cert_file"]}"',
            f'key_file = "{TLS_DIR}/{TLS_NAMES["key_file"]}"',
            'auth_tls = "none"',
            "tls_no_verify_certificate = 0",
        ]
    else:
        lines.append("listen_tls = 0")
    if listen_tcp:
        # Port 16509 of the host's own network namespace, so hosts do not collide.
        lines += ["listen_tcp = 1", 'auth_tcp = "none"']
    return "\n".join(lines) + "\n"


QEMU_CONF = """\
# Written by tests/hosts/hermetic.py for one hermetic test host.
# /dev/kvm is root-only where no udev grants the kvm group; QEMU runs as root. (As
# libvirt-qemu: "Could not access KVM kernel module: Permission denied".)
user = "root"
group = "root"
# No AppArmor/SELinux profiles: they would be written outside the private directories.
security_driver = "none"
# cgroups are shared by all hosts of the machine (and hidden: /sys is remounted in the
# namespace); two hosts' guests "qemu-1-NAME" would share one cgroup.
cgroup_controllers = [ ]
"""
# swtpm (vTPM) runs as this user, as on a real Debian host (swtpm-tools creates it); its
# state dir and the private local CA dir (MOUNTS) are handed to it.
SWTPM_USER = "tss"


def _swtpm_ids() -> tuple[int, int] | None:
    """(uid, gid) of SWTPM_USER, or None where swtpm is not installed."""
    import pwd

    try:
        entry = pwd.getpwnam(SWTPM_USER)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def _qemu_conf() -> str:
    if _swtpm_ids() is None:
        return QEMU_CONF
    return QEMU_CONF + f'swtpm_user = "{SWTPM_USER}"\nswtpm_group = "{SWTPM_USER}"\n'


class HermeticHost:
    """One libvirtd test host in its own namespaces; see the module docstring."""

    def __init__(
        self, base_dir: Path, name: str = "host", listen_tcp: bool = False,
        tls: ServerTls | None = None,
    ) -> None:
        self.name = name
        self.listen_tcp = listen_tcp
        self.tls = tls
        self.root = Path(base_dir).absolute() / name
        self.run_dir = self.root / "run"
        self.socket_path = self.run_dir / "libvirt-sock"
        if len(str(self.socket_path)) > MAX_SOCKET_PATH:
            raise HermeticHostError(
                f"socket path too long for AF_UNIX ({len(str(self.socket_path))} bytes): "
                f"{self.socket_path}; use a shorter base_dir"
            )
        self.uri = f"qemu:///system?socket={self.socket_path}"
        self.host_uuid = str(uuid.uuid4())
        self.log_path = self.root / "host.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._init_pid: int | None = None
        self._ns: dict[str, tuple[int, int]] = {}

    def __repr__(self) -> str:
        return f"HermeticHost({self.name!r}, uri={self.uri!r}, running={self.running})"

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None

    @property
    def listens(self) -> bool:
        """Whether libvirtd listens on the network (TCP, TLS or both): libvirtd --listen."""
        return self.listen_tcp or self.tls is not None

    @property
    def netns_pid(self) -> int:
        """Global PID of the namespaces' init: for nsenter --target and `ip link set netns`."""
        if self._init_pid is None:
            raise HermeticHostError(f"host {self.name} is not running")
        return self._init_pid

    def start(self, timeout: float = 30) -> None:
        """Start the namespaces, virtlogd and libvirtd; return once the socket answers.

        State in lib/ and etc/ survives stop()/start() (like a reboot); run/ starts empty.
        Start from a thread that outlives the host: the kernel kills the host when the thread
        that started it exits (PR_SET_PDEATHSIG, which also covers a crashed test process).
        """
        if self._proc is not None:
            raise HermeticHostError(f"host {self.name} is already running")
        self._prepare()
        deadline = time.monotonic() + timeout
        argv = [
            # If the test process dies, unshare gets SIGKILL, and --kill-child passes it to
            # the namespaces' init: the kernel then kills everything in the PID namespace.
            "setpriv", "--pdeathsig", "KILL",
            "unshare", "--mount", "--net", "--pid", "--fork", "--mount-proc",
            "--propagation", "private", "--kill-child=SIGKILL",
            "bash", str(SCRIPT), str(self.root),
        ]
        if self.listens:
            argv.append("--listen")
        env = {**os.environ, "HERMETIC_PYTHON": sys.executable}
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env
            )
        _live.add(self)
        try:
            self._init_pid = self._wait_for_init(deadline)
            self._ns = {k: ns for k in ("net", "pid", "mnt") if (ns := _ns_id(self._init_pid, k))}
            # Hold the namespaces open: the kernel reuses a freed namespace's number at once, and
            # stop() must not mistake a newer namespace (another suite's) for this host's.
            self._ns_fds = [os.open(f"/proc/{self._init_pid}/ns/{k}", os.O_RDONLY) for k in self._ns]
            self._wait_ready(deadline)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill every process of this host (libvirtd, virtlogd, dnsmasq, QEMU). Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        self._power_off_guests()
        # unshare then logs "sigprocmask unblock failed: Invalid argument", as it cannot
        # re-raise its child's SIGKILL on itself: harmless.
        if self._init_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._init_pid, signal.SIGKILL)
        else:
            proc.kill()
        # unshare returns once init is reaped, and the kernel reaps a PID namespace's init
        # only after all its other processes are gone.
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        # Processes that entered only some namespaces (nsenter without --pid) survive that.
        for _ in range(50):
            stray = self.pids()
            if not stray:
                break
            for pid in stray:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        else:
            raise HermeticHostError(f"host {self.name}: processes survive stop: {stray}")
        self._init_pid = None
        self._ns = {}
        for fd in getattr(self, "_ns_fds", []):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._ns_fds = []
        _sync_newer(self._caps_dir(), CAPS_SEED)

    def _power_off_guests(self, timeout: float = 3) -> None:
        # SIGTERM lets QEMU flush its qcow2 metadata, so images stay consistent for tests
        # that inspect them after stop(); a guest that lingers is SIGKILLed with the rest.
        qemus = [pid for pid in self.pids() if _comm(pid).startswith("qemu-system")]
        for pid in qemus:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in qemus):
            time.sleep(0.01)

    def __enter__(self) -> HermeticHost:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- processes -------------------------------------------------------------------------

    def pids(self) -> list[int]:
        """Global PIDs of all processes in any of this host's namespaces."""
        if not self._ns:
            return []
        found = []
        for pid in _all_pids():
            if any(_ns_id(pid, kind) == ns for kind, ns in self._ns.items()):
                found.append(pid)
        return found

    def pids_of(self, comm: str) -> list[int]:
        """Global PIDs of this host's processes named comm (e.g. 'libvirtd', 'qemu-system-x86')."""
        return [pid for pid in self.pids() if _comm(pid) == comm]

    def kill_libvirtd(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Kill libvirtd only (a crash by default); guests, virtlogd and dnsmasq keep running."""
        pids = self.pids_of("libvirtd")
        if not pids:
            raise HermeticHostError(f"host {self.name}: libvirtd is not running")
        for pid in pids:
            os.kill(pid, sig)
        deadline = time.monotonic() + 30
        while self.pids_of("libvirtd"):
            if time.monotonic() > deadline:
                raise HermeticHostError(f"host {self.name}: libvirtd survives {sig.name}")
            time.sleep(0.02)

    def restart_libvirtd(self, timeout: float = 30) -> None:
        """Start libvirtd again in the host's namespaces (after kill_libvirtd)."""
        if self.pids_of("libvirtd"):
            self.kill_libvirtd()
        argv = ["libvirtd", "-d", "-p", "/run/libvirt/libvirtd.pid"]
        if self.listens:
            argv.append("--listen")
        done = self.run_in_netns(argv, timeout=timeout)
        if done.returncode != 0:
            raise HermeticHostError(
                f"host {self.name}: libvirtd did not restart: {done.stderr.strip()}\n{self._logs()}"
            )
        self._wait_ready(time.monotonic() + timeout)

    # ---- commands --------------------------------------------------------------------------

    def run_in_netns(
        self, argv: list[str], check: bool = False, timeout: float | None = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside the host's namespaces (network, mount and PID), capturing text."""
        nsenter = ["nsenter", "--target", str(self.netns_pid), "--net", "--mount", "--pid", "--"]
        return subprocess.run(
            nsenter + argv, capture_output=True, text=True, check=check, timeout=timeout
        )

    def virsh(self, *args: str, timeout: float = 60) -> str:
        """Output of `virsh -c URI ARGS`; HermeticHostError with stderr when it fails."""
        done = subprocess.run(
            ["virsh", "-c", self.uri, *args], capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise HermeticHostError(
                f"virsh {' '.join(args)} on {self.name} failed ({done.returncode}): "
                f"{done.stderr.strip()}"
            )
        return done.stdout

    def path_outside(self, inside: str | Path) -> Path:
        """Where a path that libvirt sees in the namespace is, seen from outside.

        Only the libvirt directories are private: other paths are the same on both sides.
        """
        inside = Path(inside)
        for sub, target in MOUNTS.items():
            if inside.is_relative_to(target):
                return self.root / sub / inside.relative_to(target)
        return inside

    def connect(self) -> libvirt.virConnect:
        """A new read-write connection; the caller closes it."""
        return libvirt.open(self.uri)

    # ---- internals -------------------------------------------------------------------------

    def _prepare(self) -> None:
        for sub, target in MOUNTS.items():
            (self.root / sub).mkdir(parents=True, exist_ok=True)
            # Bind mounts need their mount points; without libvirt-daemon-system nothing
            # creates them. Empty directories are all this leaves in the root namespace.
            Path(target).mkdir(parents=True, exist_ok=True)
        # /run is volatile: a stale socket or pidfile from a previous start would mislead.
        for entry in self.run_dir.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        caps = self._caps_dir()
        caps.mkdir(parents=True, exist_ok=True)
        _sync_newer(CAPS_SEED, caps)
        etc = self.root / "etc"
        for conf in Path("/etc/libvirt").glob("*.conf"):
            shutil.copyfile(conf, etc / conf.name)
        # Written whole rather than patched: libvirt's config parser takes a key's first value.
        (etc / "libvirtd.conf").write_text(
            _libvirtd_conf(self.host_uuid, self.listen_tcp, self.tls is not None)
        )
        if self.tls is not None:
            pki = etc / Path(TLS_DIR).relative_to("/etc/libvirt")
            pki.mkdir(mode=0o700, exist_ok=True)
            for attr, name in TLS_NAMES.items():
                shutil.copyfile(getattr(self.tls, attr), pki / name)
            (pki / TLS_NAMES["key_file"]).chmod(0o600)
        (etc / "qemu.conf").write_text(_qemu_conf())
        ids = _swtpm_ids()
        if ids is not None:
            # swtpm_setup (run as the swtpm user) writes the CA's key and serial there; the
            # package makes /var/lib/swtpm-localca tss:root 0750.
            localca = self.root / "swtpm-localca"
            os.chown(localca, ids[0], 0)
            localca.chmod(0o750)

    def _caps_dir(self) -> Path:
        return self.root / "cache" / "qemu" / "capabilities"

    def _wait_for_init(self, deadline: float) -> int:
        """Global PID of unshare's child, the init of the new PID namespace."""
        assert self._proc is not None
        me = _ns_id(os.getpid(), "pid")
        while time.monotonic() < deadline:
            for pid in _all_pids():
                # Only once it has entered the new PID namespace, so _ns is the host's.
                if _ppid(pid) == self._proc.pid and _ns_id(pid, "pid") not in (None, me):
                    return pid
            self._check_alive()
            time.sleep(0.005)
        raise HermeticHostError(f"host {self.name}: namespaces did not start\n{self._logs()}")

    def _wait_ready(self, deadline: float) -> None:
        # The socket appears before libvirtd's drivers are up; a connection made then waits
        # in the backlog until they are, so a successful open means ready.
        while not self.socket_path.exists():
            self._check_alive()
            if time.monotonic() > deadline:
                raise HermeticHostError(f"host {self.name}: no socket in time\n{self._logs()}")
            time.sleep(0.01)
        errors: list[BaseException] = []

        def probe() -> None:
            # The socket file exists between bind() and listen(): "connection refused"
            # then only means "not yet", so retry until the deadline.
            while True:
                try:
                    conn = libvirt.open(self.uri)
                    try:
                        conn.getLibVersion()
                    finally:
                        conn.close()
                    return
                except libvirt.libvirtError as e:
                    if "Connection refused" not in str(e) or time.monotonic() > deadline:
                        errors.append(e)
                        return
                    time.sleep(0.02)
                except BaseException as e:
                    errors.append(e)
                    return

        # libvirt.open has no timeout of its own; a hung daemon must not hang the test run.
        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            raise HermeticHostError(f"host {self.name}: libvirtd does not answer\n{self._logs()}")
        if errors:
            raise HermeticHostError(
                f"host {self.name}: cannot connect: {errors[0]}\n{self._logs()}"
            ) from errors[0]

    def _check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise HermeticHostError(
                f"host {self.name}: init exited ({self._proc.returncode})\n{self._logs()}"
            )

    def _logs(self) -> str:
        parts = []
        for path in (self.log_path, self.root / "log" / "libvirtd.log"):
            with contextlib.suppress(OSError):
                tail = path.read_text(errors="replace").splitlines()[-20:]
                parts.append(f"--- {path}:\n" + "\n".join(tail))
        return "\n".join(parts)


class HostFactory:
    """Makes started hosts under one base directory; close() stops them all."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = Path(base_dir)
        self.hosts: list[HermeticHost] = []

    def __call__(
        self, name: str | None = None, *, listen_tcp: bool = False, tls: ServerTls | None = None,
        start: bool = True,
    ) -> HermeticHost:
        host = HermeticHost(self.base_dir, name or f"h{len(self.hosts) + 1}", listen_tcp, tls)
        if any(h.name == host.name for h in self.hosts):
            raise HermeticHostError(f"host name {host.name!r} is taken")
        self.hosts.append(host)
        if start:
            host.start()
        return host

    def close(self) -> None:
        """Stop every host, even when one fails to; then raise the first failure."""
        errors = []
        for host in reversed(self.hosts):
            try:
                host.stop()
            except Exception as e:
                errors.append(e)
        if errors:
            raise errors[0]


def _sync_newer(src: Path, dst: Path) -> None:
    """Copy src/*.xml files that are missing or older in dst, keeping mtimes."""
    if not src.is_dir():
        return
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.glob("*.xml"):
        target = dst / f.name
        with contextlib.suppress(OSError):
            if target.exists() and target.stat().st_mtime >= f.stat().st_mtime:
                continue
            # Rename into place: other test processes may read the seed at the same time.
            tmp = dst / f".{f.name}.{os.getpid()}.tmp"
            shutil.copy2(f, tmp)
            os.replace(tmp, target)


def stop_all() -> None:
    """Stop every host still running (atexit fallback; fixtures stop their own)."""
    for host in live_hosts():
        with contextlib.suppress(Exception):
            host.stop()


atexit.register(stop_all)
