"""Open vSwitch in userspace inside a hermetic host's namespaces.

This kernel has no Open vSwitch datapath module, so ovs-vswitchd runs its bridges with
``datapath_type=netdev`` (the userspace datapath: it reads and writes the ports' packets
itself). libvirtd plugs a guest's tap with ``ovs-vsctl`` at OVS's compiled-in socket
(/run/openvswitch/db.sock) and passes it no environment to say otherwise, so a private
directory is bind-mounted over /run/openvswitch inside the host's mount namespace: the
database and both daemons belong to this host only, and nothing of them outlives it.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

from tests.hosts.hermetic import HermeticHost, HermeticHostError

RUNDIR = "/run/openvswitch"
SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
TOOLS = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl")


def missing() -> list[str]:
    """What this machine lacks to run OVS in userspace (Debian: openvswitch-switch)."""
    out = [t for t in TOOLS if shutil.which(t) is None and not Path("/usr/sbin", t).exists()]
    if not SCHEMA.is_file():
        out.append(str(SCHEMA))
    return out


class UserspaceOvs:
    """ovsdb-server + ovs-vswitchd in ``host``'s namespaces; stop() kills both by their PIDs."""

    def __init__(self, host: HermeticHost) -> None:
        self.host = host
        self.dir = host.root / "ovs"
        self.pids: list[int] = []

    def _run(self, *argv: str) -> str:
        done = self.host.run_in_netns(list(argv), timeout=30)
        if done.returncode != 0:
            raise HermeticHostError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}"
                                    f"\n{self.logs()}")
        return done.stdout

    def vsctl(self, *args: str) -> str:
        return self._run("ovs-vsctl", "--timeout=10", *args)

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        # the mount point: OVS's own run directory (the package's daemons are not running here)
        os.makedirs(RUNDIR, exist_ok=True)
        d = self.dir
        self._run("mount", "--bind", str(d), RUNDIR)
        self._run("ovsdb-tool", "create", str(d / "conf.db"), str(SCHEMA))
        before = set(self.host.pids())
        self._run("ovsdb-server", str(d / "conf.db"), f"--remote=punix:{RUNDIR}/db.sock",
                  f"--pidfile={RUNDIR}/ovsdb-server.pid", f"--log-file={d}/ovsdb-server.log", "--detach")
        self.vsctl("--no-wait", "init")
        self._run("ovs-vswitchd", f"unix:{RUNDIR}/db.sock", f"--pidfile={RUNDIR}/ovs-vswitchd.pid",
                  f"--log-file={d}/ovs-vswitchd.log", "--detach")
        self.pids = [p for p in self.host.pids() if p not in before
                     and self._comm(p) in ("ovsdb-server", "ovs-vswitchd")]

    @staticmethod
    def _comm(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return ""

    def add_bridge(self, name: str) -> None:
        """A userspace bridge; waits until its internal port (a tap) exists in the netns."""
        self.vsctl("add-br", name, "--", "set", "bridge", name, "datapath_type=netdev")
        deadline = time.monotonic() + 10
        while self.host.run_in_netns(["ip", "link", "show", name]).returncode != 0:
            if time.monotonic() > deadline:
                raise HermeticHostError(f"OVS bridge {name} has no device after 10 s\n{self.logs()}")
            time.sleep(0.1)
        self._run("ip", "link", "set", name, "up")

    def logs(self) -> str:
        out = []
        for name in ("ovsdb-server.log", "ovs-vswitchd.log"):
            p = self.dir / name
            if p.is_file():
                out.append(f"--- {name}\n" + "".join(p.read_text().splitlines(keepends=True)[-20:]))
        return "\n".join(out)

    def stop(self) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + 5
        for pid in self.pids:
            while Path(f"/proc/{pid}").exists() and self._comm(pid) in ("ovsdb-server", "ovs-vswitchd"):
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    break
                time.sleep(0.05)
        self.pids = []
