"""Fleet drift: 100 hosts (libvirt test driver, a private XML file each) × 100 guests.

Target: a full fleet `drift` under 10 s wall and under 1 GiB peak memory.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.bench, pytest.mark.timeout(600)]

OWNER = ("<metadata><vs:owner xmlns:vs='https://virtsync.dev/xmlns/owner/v1' instance='default' kind='Guest' "
         "name='{name}' digest='sha256:0'><vs:applied>{{}}</vs:applied></vs:owner></metadata>")


def _fleet(root: Path, hosts: int, guests: int) -> Path:
    specs = root / "specs"
    specs.mkdir(parents=True)
    for h in range(hosts):
        doms = "".join(
            f"<domain type='test'><name>h{h}g{g}</name>{OWNER.format(name=f'h{h}g{g}')}"
            f"<memory unit='MiB'>64</memory><currentMemory unit='MiB'>64</currentMemory><vcpu>1</vcpu>"
            f"<os><type>hvm</type></os></domain>" for g in range(guests))
        xml = root / f"host{h}.xml"
        xml.write_text(f"<node>{doms}</node>")
        docs = [f"apiVersion: virtsync/v1\nkind: Host\nmetadata: {{name: host{h}}}\nspec: {{uri: 'test://{xml}'}}\n"]
        docs += [f"apiVersion: virtsync/v1\nkind: Guest\nmetadata: {{name: h{h}g{g}}}\n"
                 f"spec: {{host: host{h}, state: running, vcpus: 1, memory: 64MiB}}\n" for g in range(guests)]
        (specs / f"host{h}.yaml").write_text("---\n".join(docs))
    return specs


def test_fleet_drift_of_100_hosts_by_100_guests(tmp_path: Path) -> None:
    specs = _fleet(tmp_path, 100, 100)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "controller", "drift", str(specs), "--format", "json"],
                          capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    doc = json.loads(proc.stdout)
    assert len(doc["hosts"]) == 100 and doc["summary"]["in-sync"] == 10_000
    print(f"\nfleet drift, 100 hosts × 100 guests: {wall:.2f} s wall (target < 10 s; ratio {wall / 10:.2f}), "
          f"peak {peak_mb:.0f} MB (target < 1024 MB; ratio {peak_mb / 1024:.2f})")
    assert wall < 10
    assert peak_mb < 1024


def _drift_run(specs: Path) -> tuple[float, float, dict[str, object]]:
    """(wall seconds, peak RSS in MB of that process alone, the drift document)."""
    import os

    out_path = specs.parent / "drift.json"
    started = time.perf_counter()
    with out_path.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "controller", "drift", str(specs), "--format", "json"],
                                stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, out_path.read_text()[-2000:]
    return wall, usage.ru_maxrss / 1024, json.loads(out_path.read_text())


@pytest.mark.timeout(1800)
def test_fleet_drift_of_1000_hosts_by_100_guests_and_how_it_scales_from_100(tmp_path: Path) -> None:
    # Issue 17, target 5: 1,000 hosts × 100 guests under 30 s wall and 2 GiB peak (each run's own
    # peak, from wait4).
    figures = {}
    for hosts in (100, 1000):
        specs = _fleet(tmp_path / f"f{hosts}", hosts, 100)
        wall, peak_mb, doc = _drift_run(specs)
        assert len(doc["hosts"]) == hosts and doc["summary"]["in-sync"] == hosts * 100  # type: ignore[index]
        figures[hosts] = (wall, peak_mb)
    (w1, m1), (w2, m2) = figures[100], figures[1000]
    import os

    print(f"\nfleet drift × 100 guests per host (load average {os.getloadavg()[0]:.1f}):")
    print(f"  100 hosts:   {w1:.2f} s wall, peak {m1:.0f} MB")
    print(f"  1,000 hosts: {w2:.2f} s wall (target < 30 s; ratio {w2 / 30:.2f}), peak {m2:.0f} MB "
          f"(target < 2048 MB; ratio {m2 / 2048:.2f})")
    print(f"  scaling 100 → 1,000 hosts: wall ×{w2 / w1:.1f}, memory ×{m2 / m1:.1f} (linear: ×10)")
    assert w2 < 30
    assert m2 < 2048
