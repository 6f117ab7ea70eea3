"""A chaos soak of `virtsync serve`: two real hosts with 20 guests, random out-of-band faults
(destroy, undefine, setmem, NIC detach, net-destroy, pool-destroy, a libvirtd restart) and random
spec commits to the git repository the service follows, for VIRTSYNC_SOAK_MINUTES (default 2;
`make soak` runs 30). At the end every host converges within 30 s, nothing unowned was touched,
no object exists twice, no reconcile raised, and the service's RSS grew by less than 20 MB from
after warm-up. Guests are paused (an idle guest in firmware still burns CPU: 20 of them would
saturate this machine), diskless but for a tiny blank disk on a few, without boot ROMs."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import subprocess
import time
from collections import Counter
from pathlib import Path

import libvirt
import pytest

from tests.e2e.service_helpers import ServeProcess, wait_for
from tests.hosts.hermetic import HermeticHost, HostFactory

pytestmark = [pytest.mark.e2e, pytest.mark.reliability, pytest.mark.timeout(3000)]

HOSTS = ("lab", "far")
PER_HOST = 10
DISKS = 2  # guests per host with a small disk in the host's pool
MEMORY = (32, 40)  # MiB: what spec commits switch between (the balloon, below maxMemory: live)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


class Specs:
    """The spec tree in a git repository: one file per host, rewritten from ``memory``."""

    def __init__(self, repo: Path, hosts: dict[str, HermeticHost], tmp: Path):
        self.repo, self.hosts, self.tmp = repo, hosts, tmp
        self.memory = {g: MEMORY[0] for g in self.guests()}
        (repo / "specs").mkdir(parents=True)
        _git(repo, "init", "-q", "-b", "main")
        _git(repo, "config", "user.email", "soak@example.org")
        _git(repo, "config", "user.name", "soak")
        self.commits = 0
        self.commit("first")

    @staticmethod
    def guests() -> list[str]:
        return [f"{h}-g{i:02d}" for h in HOSTS for i in range(PER_HOST)]

    def write(self) -> None:
        for host, hh in self.hosts.items():
            docs = [f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: {host}}}
spec: {{uri: "{hh.uri}", storage: {{allowedDirs: ["{self.tmp}"]}}}}
""", f"""apiVersion: virtsync/v1
kind: StoragePool
metadata: {{name: {host}-pool}}
spec: {{host: {host}, path: "{self.tmp / (host + '-pool')}"}}
""", f"""apiVersion: virtsync/v1
kind: Network
metadata: {{name: {host}-lan}}
spec: {{host: {host}, mode: isolated, bridge: vs-{host}}}
"""]
            for i in range(PER_HOST):
                name = f"{host}-g{i:02d}"
                disk = (f"\n  disks: [{{name: root, pool: {host}-pool, size: 4MiB}}]" if i < DISKS else "")
                docs.append(f"""apiVersion: virtsync/v1
kind: Guest
metadata: {{name: {name}}}
spec:
  host: {host}
  state: paused
  memory: {self.memory[name]}MiB
  maxMemory: 64MiB
  interfaces: [{{network: {host}-lan, bootRom: false, mac: "52:54:00:5a:{HOSTS.index(host):02x}:{i:02x}"}}]{disk}
""")
            (self.repo / "specs" / f"{host}.yaml").write_text("---\n".join(docs))

    def commit(self, message: str) -> None:
        self.write()
        _git(self.repo, "add", ".")
        _git(self.repo, "commit", "-q", "--allow-empty", "-m", message)
        self.commits += 1


def _plain_domain(name: str) -> str:
    return f"""<domain type='kvm'><name>{name}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type></os><devices/></domain>"""


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert m, status
    return int(m.group(1))


class Chaos:
    """Random out-of-band faults through libvirt, on the hosts' own connections."""

    KINDS = ("destroy", "undefine", "setmem", "detach-nic", "net-destroy", "pool-destroy",
             "libvirtd-restart")

    def __init__(self, rng: random.Random, hosts: dict[str, HermeticHost]):
        self.rng, self.hosts = rng, hosts
        self.conns = {h: hh.connect() for h, hh in hosts.items()}
        self.done: Counter[str] = Counter()
        self.restarts = 0

    def close(self) -> None:
        for c in self.conns.values():
            with contextlib.suppress(libvirt.libvirtError):
                c.close()

    def one(self) -> None:
        host = self.rng.choice(HOSTS)
        # a libvirtd restart is the heaviest fault: rarer than the others
        kind = self.rng.choices(self.KINDS, weights=(3, 2, 3, 2, 1, 1, 0.3))[0]
        conn = self.conns[host]
        name = f"{host}-g{self.rng.randrange(PER_HOST):02d}"
        try:
            if kind == "libvirtd-restart":
                self.hosts[host].kill_libvirtd()
                self.hosts[host].restart_libvirtd()
                self.conns[host] = self.hosts[host].connect()
            elif kind == "net-destroy":
                conn.networkLookupByName(f"{host}-lan").destroy()
            elif kind == "pool-destroy":
                conn.storagePoolLookupByName(f"{host}-pool").destroy()
            else:
                dom = conn.lookupByName(name)
                if kind == "destroy":
                    dom.destroy()
                elif kind == "undefine":
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
                elif kind == "setmem":
                    dom.setMemoryFlags(24 * 1024, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
                elif kind == "detach-nic":
                    xml = dom.XMLDesc(0)
                    nic = re.search(r"<interface type='network'>.*?</interface>", xml, re.S)
                    if nic is None:
                        return
                    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | (
                        libvirt.VIR_DOMAIN_AFFECT_LIVE if dom.isActive() else 0)
                    dom.detachDeviceFlags(nic.group(0), flags)
        except libvirt.libvirtError as exc:
            # the object is gone or stopped (an earlier fault not repaired yet): no fault made
            if exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_NETWORK,
                                        libvirt.VIR_ERR_NO_STORAGE_POOL, libvirt.VIR_ERR_OPERATION_INVALID,
                                        libvirt.VIR_ERR_OPERATION_FAILED, libvirt.VIR_ERR_INVALID_ARG,
                                        # a NIC the live and the persistent definition do not both
                                        # have yet (a repair of an earlier fault in flight)
                                        libvirt.VIR_ERR_DEVICE_MISSING):
                return
            if exc.get_error_code() in (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_INTERNAL_ERROR,
                                        libvirt.VIR_ERR_RPC):
                self.conns[host] = self.hosts[host].connect()  # after a libvirtd restart
                return
            raise
        self.done[kind] += 1


def _converged(conns: dict[str, libvirt.virConnect], specs: Specs) -> str:
    """What still differs from the specs ('' when nothing): every guest once, on its own host,
    paused, with its memory and NIC; networks and pools active."""
    wanted = {h: {g for g in specs.guests() if g.startswith(h + "-")} for h in HOSTS}
    for host, conn in conns.items():
        names = [d.name() for d in conn.listAllDomains()]
        if sorted(names) != sorted(wanted[host] | {f"{host}-unowned"}):
            return f"{host}: guests {sorted(names)}"
        for name in wanted[host]:
            dom = conn.lookupByName(name)
            if dom.state()[0] != libvirt.VIR_DOMAIN_PAUSED or not dom.isPersistent():
                return f"{host}/{name}: state {dom.state()} persistent {dom.isPersistent()}"
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            found = re.search(r"<currentMemory unit='KiB'>(\d+)</currentMemory>", xml)
            mem = int(found.group(1)) if found else 0
            if mem != specs.memory[name] * 1024:
                return f"{host}/{name}: memory {mem} KiB, the spec says {specs.memory[name]} MiB"
            if "<interface type='network'>" not in xml:
                return f"{host}/{name}: its NIC is missing"
        if not all(n.isActive() for n in conn.listAllNetworks()) or len(conn.listAllNetworks()) != 1:
            return f"{host}: networks"
        if not all(p.isActive() for p in conn.listAllStoragePools()) or len(conn.listAllStoragePools()) != 1:
            return f"{host}: pools"
    return ""


def test_serve_repairs_random_faults_and_spec_commits_and_converges_at_the_end(
    hermetic_host_factory: HostFactory, tmp_path: Path,
) -> None:
    minutes = float(os.environ.get("VIRTSYNC_SOAK_MINUTES", "2"))
    seed = int(os.environ.get("VIRTSYNC_SOAK_SEED", str(random.SystemRandom().randrange(1 << 32))))
    print(f"chaos soak: {minutes:g} minutes, seed {seed} (VIRTSYNC_SOAK_SEED={seed} repeats it)")
    rng = random.Random(seed)
    hosts = {h: hermetic_host_factory(h) for h in HOSTS}
    specs = Specs(tmp_path / "repo", hosts, tmp_path)
    chaos = Chaos(rng, hosts)
    unowned = {}
    for host, conn in chaos.conns.items():
        conn.defineXML(_plain_domain(f"{host}-unowned"))
        unowned[host] = conn.lookupByName(f"{host}-unowned").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    svc = ServeProcess(["--git", str(specs.repo), "--branch", "main", "--git-path", "specs",
                        "--git-interval", "1s", "--prune", "--resync", "20s", "--log-format", "json",
                        # the chaos changes each guest back many times: no thrashing back-off
                        "--thrash-limit", "100000",
                        "--coordination", f"file://{tmp_path / 'coord'}", "--snapshot-interval", "1h",
                        "--audit-log", str(tmp_path / "audit.jsonl")],
                       tmp_path / "serve.log")
    try:
        svc.start()
        wait_for(lambda: not _converged(chaos.conns, specs), 120, "the first convergence", svc)
        time.sleep(2)  # warm-up: the first reconciles' garbage is collected, caches are full
        assert svc.proc is not None
        rss_start = _rss_kib(svc.proc.pid)
        deadline = time.monotonic() + minutes * 60
        while time.monotonic() < deadline:
            if rng.random() < 0.15:
                name = rng.choice(specs.guests())
                specs.memory[name] = MEMORY[1] if specs.memory[name] == MEMORY[0] else MEMORY[0]
                specs.commit(f"memory of {name}: {specs.memory[name]}MiB")
            else:
                chaos.one()
            time.sleep(rng.uniform(0.2, 1.5))
        # the last fault and commit are in: the service must converge within 30 s
        ended = time.monotonic()
        try:
            wait_for(lambda: not _converged(chaos.conns, specs), 30, "convergence after the chaos", svc)
        except AssertionError:
            status = svc.get("/status") or {}
            raise AssertionError(f"not converged 30 s after the chaos: {_converged(chaos.conns, specs)}; "
                                 f"specs at {_git(specs.repo, 'rev-parse', 'HEAD')}, the service says "
                                 f"{ {k: v for k, v in status.items() if k != 'hosts'} }\n"
                                 + svc.logs()[-3000:]) from None
        print(f"converged {time.monotonic() - ended:.1f}s after the last fault")
        rss_end = _rss_kib(svc.proc.pid)
    finally:
        code = svc.stop()
        chaos.close()
    conns = {h: hh.connect() for h, hh in hosts.items()}
    try:
        for host, conn in conns.items():
            assert conn.lookupByName(f"{host}-unowned").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) == unowned[host]
    finally:
        for c in conns.values():
            c.close()
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    repaired = [e for e in audit if e.get("repair") and e.get("outcome") == "ok"]
    crashed = [line for line in svc.logs().splitlines() if "reconcile crashed" in line or "Traceback" in line]
    print(f"faults injected: {sum(chaos.done.values())} ({dict(chaos.done)}); spec commits: {specs.commits}; "
          f"repairs the service logged: {len(repaired)} "
          f"({dict(Counter(str(e.get('action')) for e in repaired))}); "
          f"RSS {rss_start / 1024:.1f} MiB after warm-up, {rss_end / 1024:.1f} MiB at the end")
    assert code == 0, svc.logs()[-3000:]
    assert not crashed, crashed[:5]
    assert sum(chaos.done.values()) >= minutes * 20, chaos.done  # the chaos really happened
    assert repaired, "no repair was logged"
    assert (rss_end - rss_start) < 20 * 1024, f"RSS grew by {(rss_end - rss_start) / 1024:.1f} MiB"
