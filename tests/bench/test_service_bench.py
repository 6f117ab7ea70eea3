"""Service benchmarks on a real (hermetic) libvirtd host, printing figures and ratios.

- spec file saved → change on the host: median of 20 under 0.5 s;
- out-of-band `virsh destroy` → guest running again: under 2 s;
- drift on a report-only guest visible in /status: under 1 s;
- 1,000 managed guests idle: under 2% of one core and under 300 MB, with the light resync
  fingerprinting the host every 4 s (issue 17, target 7), and a `setmem --config` of one guest,
  which sends no event, repaired within 15 s.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import libvirt
import pytest

from tests.e2e.service_helpers import ServeProcess, wait_for
from tests.e2e.test_service import write_specs
from tests.hosts.hermetic import HermeticHost

pytestmark = [pytest.mark.bench, pytest.mark.timeout(1800)]



def test_service_reaction_times(host: HermeticHost, tmp_path: Path) -> None:
    specs = write_specs(tmp_path / "specs", host.uri)
    svc = ServeProcess([str(specs), "--resync", "1h"], tmp_path / "serve.log").start()
    try:
        wait_for(lambda: svc.objects().get("Guest/web", {}).get("status") == "in-sync", 60, "sync", svc)
        saves = []
        for i in range(20):
            mib = 100 + i
            text = (specs / "guests.yaml").read_text()
            new = text.replace(f"memory: {mib - 1 if i else 96}MiB", f"memory: {mib}MiB", 1)
            t = time.perf_counter()
            (specs / "guests.yaml").write_text(new)
            wait_for(lambda m=mib: f">{m * 1024}<" in host.virsh("dumpxml", "--inactive", "web"), 10, "edit", svc)
            saves.append(time.perf_counter() - t)
        # Destroyed on this process's own connection (virsh's call, without a virsh process to
        # spawn) and polled there every 5 ms: the clock runs from the destroy's return to the
        # guest running again, as the raw create() below is timed from its call to its return.
        restarts = []
        watch = host.connect()
        try:
            web = watch.lookupByName("web")
            for _ in range(5):
                web.destroy()
                t = time.perf_counter()
                while web.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
                    assert time.perf_counter() - t < 10, "web not running again within 10 s:\n" + svc.logs()[-3000:]
                    time.sleep(0.005)
                restarts.append(time.perf_counter() - t)
        finally:
            watch.close()
        xml = tmp_path / "watched.xml"
        xml.write_text("<domain type='qemu'><name>watched</name><memory unit='MiB'>64</memory>"
                       "<os><type>hvm</type></os></domain>")
        host.virsh("define", str(xml))
        (specs / "guests.yaml").write_text((specs / "guests.yaml").read_text() + "  adopt: true\n")
        wait_for(lambda: svc.objects()["Guest/watched"]["status"] == "drift", 10, "adopted", svc)
        host.virsh("start", "watched")
        wait_for(lambda: svc.objects()["Guest/watched"]["status"] == "in-sync", 10, "in sync", svc)
        t = time.perf_counter()
        host.virsh("destroy", "watched")
        wait_for(lambda: svc.objects()["Guest/watched"]["status"] == "drift", 10, "drift", svc)
        drift_seen = time.perf_counter() - t
    finally:
        svc.stop()
    # Heal (issue 17, target 3): the same guest's raw create(), the service stopped.
    raw_creates = []
    conn = host.connect()
    try:
        dom = conn.lookupByName("web")
        for _ in range(5):
            if dom.isActive():
                dom.destroy()
            t = time.perf_counter()
            dom.create()
            raw_creates.append(time.perf_counter() - t)
    finally:
        conn.close()
    med = statistics.median(saves)
    print(f"\nspec saved → applied on the host: median {med:.3f} s, max {max(saves):.3f} s over 20 "
          f"(target median < 0.5 s; ratio {med / 0.5:.2f})")
    print(f"virsh destroy → running again: median {statistics.median(restarts):.3f} s, "
          f"max {max(restarts):.3f} s (target < 2 s); raw create() of the same guest: median "
          f"{statistics.median(raw_creates):.3f} s (heal ratio "
          f"{statistics.median(restarts) / statistics.median(raw_creates):.2f}, target ≤ 1.5)")
    print(f"out-of-band change on a report-only guest → drift in /status: {drift_seen:.3f} s (target < 1 s)")
    assert med < 0.5
    assert max(restarts) < 2.0
    assert statistics.median(restarts) <= 1.5 * statistics.median(raw_creates)
    assert drift_seen < 1.0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _busy_cores(window: float = 2.0) -> float:
    """Cores the whole machine kept busy over ``window`` seconds (/proc/stat)."""
    def sample() -> tuple[int, int]:
        cpu = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(cpu), cpu[3] + cpu[4]  # all jiffies, idle + iowait

    total0, idle0 = sample()
    time.sleep(window)
    total1, idle1 = sample()
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / max(1, total1 - total0))


def _settle_machine(limit: float = 0.3, timeout: float = 180) -> float:
    """Wait until the machine is nearly idle (what a benchmark before this one left, such as
    100 guests being torn down, is measured otherwise); the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout and _busy_cores() > limit:
        pass
    return time.monotonic() - started


def test_idle_service_with_1000_guests_is_cheap(host: HermeticHost, tmp_path: Path) -> None:
    from tests.bench.test_engine_bench import _specs

    specs = _specs(tmp_path / "s", 1000, "stopped", network=False)
    (specs / "specs.yaml").write_text((specs / "specs.yaml").read_text().replace("'qemu:///system'",
                                                                                  f"'{host.uri}'"))
    proc = subprocess.run([sys.executable, "-m", "controller", "apply", str(specs), "--yes",
                           "--concurrency", "16"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    svc = ServeProcess([str(specs)], tmp_path / "serve.log").start()
    try:
        wait_for(lambda: svc.status()["summary"]["in-sync"] >= 1000, 120, "1,000 in sync", svc)
        assert svc.proc is not None
        pid = svc.proc.pid
        daemons = host.pids_of("libvirtd")
        time.sleep(5)
        settled = _settle_machine(limit=0.3 + 0.05)  # the idle service and its libvirtd use ~0.03
        cpu0, t0 = _cpu_seconds(pid), time.monotonic()
        daemon0 = sum(_cpu_seconds(p) for p in daemons)
        time.sleep(60)
        elapsed = time.monotonic() - t0
        cpu = (_cpu_seconds(pid) - cpu0) / elapsed
        daemon_cpu = (sum(_cpu_seconds(p) for p in daemons) - daemon0) / elapsed
        rss = _rss_mb(pid)
        light = svc.status()["service"]["lightResync"]
        # A change libvirt sends no event for, on one of the 1,000: seen by the light resync.
        t = time.perf_counter()
        host.virsh("setmem", "g0500", "16M", "--config")
        wait_for(lambda: "<currentMemory unit='KiB'>32768</currentMemory>"
                 in host.virsh("dumpxml", "--inactive", "g0500"), 30, "setmem --config repaired", svc)
        repaired = time.perf_counter() - t
    finally:
        svc.stop()
    print(f"\n1,000 managed guests, idle for 60 s: {cpu * 100:.2f}% of one core (target < 2%), "
          f"RSS {rss:.0f} MB (target < 300 MB; ratio {rss / 300:.2f}); libvirtd {daemon_cpu * 100:.2f}%")
    print(f"  light resync every {light['intervalSeconds']:g} s: last pass {light['lastPassSeconds']:.3f} s "
          f"({light['lastPassCpuSeconds']:.3f} s CPU) over {light['objects']} objects")
    print(f"  setmem --config (no event) of one guest → repaired in {repaired:.1f} s (target ≤ 15 s; load "
          f"average {os.getloadavg()[0]:.1f}); measured once the machine settled, after {settled:.0f} s")
    assert cpu < 0.02
    assert rss < 300
    assert repaired <= 15
