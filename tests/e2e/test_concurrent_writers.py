"""Two writers at once on one host: the second waits for the host's lock, observes again and
finds the work done — no failed action, no duplicate object."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.engine_helpers import ROOT, ok, virtsync
from tests.e2e.service_helpers import ServeProcess, wait_for
from tests.hosts.hermetic import HermeticHost

pytestmark = [pytest.mark.e2e, pytest.mark.reliability, pytest.mark.timeout(600)]

GUESTS = 20


def _tree(root: Path, host: HermeticHost, pool: Path) -> Path:
    root.mkdir(exist_ok=True)
    docs = [f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: lab}}
spec: {{uri: "{host.uri}", storage: {{allowedDirs: ["{pool.parent}"]}}}}
---
apiVersion: virtsync/v1
kind: StoragePool
metadata: {{name: guests}}
spec: {{host: lab, path: "{pool}"}}
---
apiVersion: virtsync/v1
kind: Network
metadata: {{name: lan}}
spec: {{host: lab, mode: isolated, bridge: virbr-cw}}
"""]
    docs += [f"""apiVersion: virtsync/v1
kind: Guest
metadata: {{name: g{i:02d}}}
spec:
  host: lab
  memory: 32MiB
  disks: [{{name: root, size: 8MiB, pool: guests, format: qcow2}}]
  interfaces: [{{network: lan, bootRom: false}}]
""" for i in range(GUESTS)]
    (root / "lab.yaml").write_text("---\n".join(docs))
    return root


def _apply(tree: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "controller", "apply", str(tree), "--yes", "--format", "json"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)


def _converged_without_duplicates(host: HermeticHost, pool: Path) -> None:
    names = host.virsh("list", "--all", "--name").split()
    assert sorted(names) == [f"g{i:02d}" for i in range(GUESTS)]
    assert all(host.virsh("domstate", n).strip() == "running" for n in names)
    vols = [v for v in host.virsh("vol-list", "guests").split() if v.endswith(".qcow2") and "/" not in v]
    assert sorted(vols) == [f"g{i:02d}-root.qcow2" for i in range(GUESTS)], vols
    files = sorted(p.name for p in host.path_outside(pool).iterdir() if not p.name.startswith("."))
    assert files == sorted(vols)  # no leaked volume file
    assert host.virsh("net-list", "--all", "--name").split().count("lan") == 1


def test_two_applies_of_one_tree_started_together_both_succeed_one_after_the_other(
    hermetic_host: HermeticHost, tmp_path: Path,
) -> None:
    pool = tmp_path / "pool"
    tree = _tree(tmp_path / "specs", hermetic_host, pool)
    first, second = _apply(tree), _apply(tree)
    outs = [p.communicate(timeout=400) for p in (first, second)]
    for p, (out, err) in zip((first, second), outs, strict=True):
        assert p.returncode == 0, f"exit {p.returncode}\n{out}\n{err}"
        assert "FAILED" not in err and "Traceback" not in err, err
    waited = [err for _, err in outs if "waiting for its lock, held by virtsync apply pid" in err]
    assert len(waited) == 1, [err for _, err in outs]
    assert "waited" in waited[0]
    _converged_without_duplicates(hermetic_host, pool)
    assert "No changes" in ok(virtsync("plan", str(tree)))


@pytest.mark.service  # a serve test: runs in the service area (see scripts/run_tests.py)
def test_a_manual_apply_beside_serve_waits_for_the_service_and_both_converge(
    hermetic_host: HermeticHost, tmp_path: Path,
) -> None:
    pool = tmp_path / "pool"
    tree = _tree(tmp_path / "specs", hermetic_host, pool)
    serve = ServeProcess([str(tree), "--log-format", "console"], tmp_path / "serve.log")
    try:
        serve.start()
        time.sleep(0.5)  # the service's first reconcile of the host is under way
        manual = _apply(tree)
        out, err = manual.communicate(timeout=400)
        assert manual.returncode == 0, f"exit {manual.returncode}\n{out}\n{err}\n{serve.logs()}"
        assert "FAILED" not in err and "Traceback" not in err, err
        wait_for(lambda: all(o["status"] == "in-sync" for o in serve.objects().values())
                 and len(serve.objects()) >= GUESTS + 2, 60, "the service sees everything in sync", serve)
        _converged_without_duplicates(hermetic_host, pool)
        failed = [line for line in serve.logs().splitlines() if "outcome=failed" in line]
        assert not failed, failed
    finally:
        assert serve.stop() == 0, serve.logs()
