"""`virtsync place` on test-driver hosts: capacity-based choices in a lock file every run uses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controller", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def _tree(tmp: Path, guest_memory: str = "1GiB", extra: str = "") -> Path:
    specs = tmp / "specs"
    specs.mkdir(exist_ok=True)
    docs = []
    for name, zone in (("h1", "a"), ("h2", "a"), ("h3", "b")):
        xml = tmp / f"{name}.xml"
        xml.write_text("<node/>")
        docs.append(f"apiVersion: virtsync/v1\nkind: Host\nmetadata: {{name: {name}, labels: {{zone: {zone}}}}}\n"
                    f"spec: {{uri: 'test://{xml}'}}\n")
    for i in range(4):
        docs.append(f"apiVersion: virtsync/v1\nkind: Guest\nmetadata: {{name: g{i}}}\n"
                    f"spec: {{hostSelector: {{matchLabels: {{zone: a}}}}, memory: {guest_memory}}}\n")
    (specs / "fleet.yaml").write_text("---\n".join(docs) + extra)
    return specs


def test_place_spreads_guests_over_matching_hosts_and_writes_the_lock(tmp_path: Path) -> None:
    specs = _tree(tmp_path)
    proc = _run("validate", str(specs))
    assert proc.returncode == 1 and "has no host yet: run `virtsync place`" in proc.stderr
    proc = _run("place", str(specs))
    assert proc.returncode == 0, proc.stderr
    lock = (specs / "placement.lock.yaml").read_text()
    chosen = {line.split(":")[0].strip(): line.split(":")[1].strip() for line in lock.splitlines()
              if line.startswith("  g")}
    assert set(chosen) == {"g0", "g1", "g2", "g3"}
    assert set(chosen.values()) == {"h1", "h2"}  # zone a only, and spread by room left
    assert sorted(chosen.values()).count("h1") == 2
    assert _run("validate", str(specs)).returncode == 0
    plan = _run("plan", str(specs))
    assert plan.returncode == 2 and "define Guest g0" in plan.stdout
    again = _run("place", str(specs))  # stable: nothing new to place, the lock is kept
    assert again.returncode == 0 and "every guest has a host" in again.stdout
    assert (specs / "placement.lock.yaml").read_text() == lock


def test_place_refuses_a_guest_that_would_overcommit_memory(tmp_path: Path) -> None:
    specs = _tree(tmp_path, guest_memory="2TiB")
    proc = _run("place", str(specs))
    assert proc.returncode == 1
    assert "REFUSED g0" in proc.stderr and "overcommit 1" in proc.stderr
    assert not (specs / "placement.lock.yaml").exists()
