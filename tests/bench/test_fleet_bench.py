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
