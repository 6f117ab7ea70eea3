"""validate of 10,000 guests in 100 files (20 hosts, 50 networks): < 3 s wall, < 500 MB peak."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.bench.specgen import write_tree

pytestmark = pytest.mark.bench


def test_validate_ten_thousand_guests_is_fast_and_small(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "specs", guests=10_000, files=100, hosts=20, networks=50)
    size = sum(p.stat().st_size for p in tree.iterdir())
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "controller", "validate", str(tree)],
                              capture_output=True, text=True, timeout=60)
        runs.append(time.perf_counter() - started)
        assert proc.returncode == 0, proc.stderr
        assert "10000 Guest" in proc.stdout
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    best, worst = min(runs), max(runs)
    print(f"\nvalidate: {size / 1e6:.1f} MB of YAML, 10,000 guests / 100 files / 20 hosts / "
          f"50 networks")
    print(f"  wall: best {best:.2f} s, worst {worst:.2f} s (target < 3 s; ratio {best / 3:.2f})")
    print(f"  peak RSS: {peak_mb:.0f} MB (target < 500 MB; ratio {peak_mb / 500:.2f})")
    assert best < 3.0
    assert peak_mb < 500
