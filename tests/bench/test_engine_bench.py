"""Engine benchmarks on a real (hermetic) libvirtd host, printed side by side.

- no-op `plan` of 1,000 defined guests: in-process time vs the raw minimum (one
  listAllDomains, the persistent XMLDesc of each domain and the live one of each running
  domain: a stopped guest's live XML is its persistent one), and the whole `virtsync plan`
  process;
- converge 20 diskless guests and a NAT network from nothing, vs the same raw
  libvirt calls made one after another; then a no-op re-run.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import libvirt
import pytest

from controller.engine import Engine
from controller.hypervisor.connection import ConnectionPool
from controller.spec.loader import load_specs
from tests.hosts.hermetic import HermeticHost, virt_type

pytestmark = [pytest.mark.bench, pytest.mark.timeout(1800)]
ROOT = Path(__file__).resolve().parents[2]

ANSIBLE_REFERENCE = "community.libvirt (measured on this kind of machine): converge 54 s, no-op 18 s"



def _specs(root: Path, guests: int, state: str, network: bool) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    docs = ["apiVersion: virtsync/v1\nkind: Host\nmetadata: {name: bench}\nspec: {uri: 'qemu:///system'}\n"]
    if network:
        docs.append("apiVersion: virtsync/v1\nkind: Network\nmetadata: {name: net}\nspec:\n"
                    "  host: bench\n  mode: nat\n  bridge: virbr-bench\n  ipv4:\n"
                    "    address: 192.168.190.1/24\n    dhcp: {start: 192.168.190.10, end: 192.168.190.250}\n")
    for i in range(guests):
        # bootRom false: a diskless guest would otherwise spin in iPXE (a whole core each here)
        mac = f"52:54:00:19:{i >> 8:02x}:{i & 255:02x}"
        nic = f"  interfaces: [{{network: net, mac: '{mac}', bootRom: false}}]\n" if network else ""
        docs.append(f"apiVersion: virtsync/v1\nkind: Guest\nmetadata: {{name: g{i:04d}}}\nspec:\n"
                    f"  host: bench\n  state: {state}\n  vcpus: 1\n  memory: 32MiB\n{nic}")
    (root / "specs.yaml").write_text("---\n".join(docs))
    return root


def _raw_minimum(uri: str, keepalive: bool = False) -> float:
    conn = libvirt.open(uri)
    try:
        if keepalive:  # as virtsync's connections (connection.py): every reply then wakes the event loop
            conn.setKeepAlive(5, 3)
        started = time.perf_counter()
        for dom in conn.listAllDomains(0):
            dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            if dom.ID() != -1:  # running: its live XML too (the ID comes with the list)
                dom.XMLDesc(0)
        return time.perf_counter() - started
    finally:
        conn.close()


def test_noop_plan_of_1000_guests_is_within_the_raw_minimum(host: HermeticHost, tmp_path: Path) -> None:
    specs = _specs(tmp_path / "s", 1000, "stopped", network=False)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "controller", "apply", str(specs), "--connect", host.uri,
                           "--yes", "--concurrency", "16"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    define_secs = time.perf_counter() - started

    loaded = load_specs([specs]).raise_for_errors()
    from controller.engine import select_hosts

    loaded = select_hosts(loaded, (), host.uri)
    engine = Engine(pool=ConnectionPool())
    t, c = time.perf_counter(), time.process_time()
    engine.plan(loaded, engine.observe(loaded))  # opens the connections; every definition parsed afresh
    cold, cold_cpu = time.perf_counter() - t, time.process_time() - c
    # Interleaved, best of 7 each: on a shared machine the load moves between separate series.
    # CPU (process_time: every thread of this process, libvirt's event loop included) beside wall.
    runs, raws, kept = [], [], []
    for _ in range(7):
        c = time.process_time()
        raws.append((_raw_minimum(host.uri), time.process_time() - c))
        c = time.process_time()
        kept.append((_raw_minimum(host.uri, keepalive=True), time.process_time() - c))
        t, c = time.perf_counter(), time.process_time()
        plan = engine.plan(loaded, engine.observe(loaded))
        runs.append((time.perf_counter() - t, time.process_time() - c))
        assert not plan.has_changes
    engine.close()
    raw, raw_cpu = min(r[0] for r in raws), min(r[1] for r in raws)
    ours, ours_cpu = min(r[0] for r in runs), min(r[1] for r in runs)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "controller", "plan", str(specs), "--connect", host.uri],
                          capture_output=True, text=True, timeout=120)
    whole = time.perf_counter() - t
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    print(f"\n1,000 defined guests (created by apply in {define_secs:.1f} s)")
    print(f"  raw minimum (listAllDomains + XMLDesc each):   {raw:.3f} s  (CPU {raw_cpu:.3f} s with its open)")
    kept_wall, kept_cpu = min(r[0] for r in kept), min(r[1] for r in kept)
    print(f"  the same over a keepalive connection:          {kept_wall:.3f} s  (ratio {kept_wall / raw:.2f}; "
          f"CPU {kept_cpu:.3f} s; virtsync's connections keep alive)")
    print(f"  virtsync observe+plan in process:              {ours:.3f} s  (ratio {ours / raw:.2f}, target ≤ 1.0; "
          f"CPU {ours_cpu:.3f} s; unchanged definitions are not parsed again)")
    print(f"  the same, first run (every definition parsed): {cold:.3f} s  (ratio {cold / raw:.2f}; "
          f"CPU {cold_cpu:.3f} s, connections opened)")
    print(f"  whole `virtsync plan` process:                 {whole:.3f} s  (target < 2 s)")
    import os

    print(f"  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    assert whole < 2.0
    assert ours <= 1.0 * raw


def _raw_sequential(uri: str, guests: int) -> float:
    conn = libvirt.open(uri)
    try:
        started = time.perf_counter()
        net = conn.networkDefineXML(
            "<network><name>rawnet</name><forward mode='nat'/><bridge name='virbr-raw'/>"
            "<ip address='192.168.191.1' prefix='24'><dhcp><range start='192.168.191.10' "
            "end='192.168.191.250'/></dhcp></ip></network>")
        net.create()
        for i in range(guests):
            dom = conn.defineXML(
                f"<domain type='{virt_type()}'><name>raw{i:02d}</name><memory unit='MiB'>32</memory>"
                "<os><type>hvm</type></os><devices><interface type='network'>"
                f"<mac address='52:54:00:1a:00:{i:02x}'/><source network='rawnet'/><model type='virtio'/>"
                "<rom enabled='no'/>"
                "</interface></devices></domain>")
            dom.create()
        return time.perf_counter() - started
    finally:
        conn.close()


def _settle(host: HermeticHost, timeout: float = 90) -> float:
    """Wait until the host's guests are done booting (their firmware burns CPU at first)."""
    import os

    def qemu_cpu() -> float:
        total = 0.0
        for pid in host.pids_of("qemu-system-x86"):
            try:
                f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        return total

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        a = qemu_cpu()
        time.sleep(2)
        if (qemu_cpu() - a) / 2 < 0.5:  # all guests together under half a core
            break
    return time.monotonic() - started


@pytest.mark.parametrize("guests", [20, 100])
def test_converging_guests_beats_sequential_raw_calls(tmp_path: Path, guests: int) -> None:
    # Each run gets a fresh host of its own: running guests slow down whatever comes next.
    with tempfile.TemporaryDirectory(prefix="vr", dir="/tmp") as base:
        raw_host = HermeticHost(Path(base), "raw")
        raw_host.start()
        try:
            raw = _raw_sequential(raw_host.uri, guests)
        finally:
            raw_host.stop()
    specs = _specs(tmp_path / "s", guests, "running", network=True)
    with tempfile.TemporaryDirectory(prefix="vo", dir="/tmp") as base:
        host = HermeticHost(Path(base), "ours")
        host.start()
        try:
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "controller", "apply", str(specs), "--connect", host.uri,
                                   "--yes"], capture_output=True, text=True, timeout=600)
            ours = time.perf_counter() - t
            assert proc.returncode == 0, proc.stderr[-3000:]
            conn = libvirt.open(host.uri)
            running = [d for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_RUNNING)
                       if d.name().startswith("g")]
            conn.close()
            assert len(running) == guests
            settled = _settle(host)
            noops = []
            for _ in range(3):
                t = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", "controller", "apply", str(specs), "--connect",
                                       host.uri, "--yes"], capture_output=True, text=True, timeout=120)
                noops.append(time.perf_counter() - t)
                assert proc.returncode == 0 and "No changes" in proc.stdout
        finally:
            host.stop()
    noop = min(noops)
    import os

    print(f"\nconverge {guests} diskless guests + 1 NAT network, from nothing (fresh host each; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs):")
    print(f"  raw libvirt calls one after another: {raw:.2f} s")
    print(f"  virtsync apply (whole process):      {ours:.2f} s  (ratio {ours / raw:.2f}, target ≤ 0.3)")
    print(f"  virtsync no-op re-run:               {noop:.2f} s  (best of 3 once the guests' firmware "
          f"settled after {settled:.0f} s; target < 1 s)")
    print(f"  reference, {ANSIBLE_REFERENCE}")
    if guests == 20:  # issue 17's targets are for 20 guests; 100 reports its figure and ratio
        assert ours <= 0.3 * raw
        assert noop < 1.0
