"""Fleets: one spec tree across several hosts; a host that fails never holds up the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.engine_helpers import ok, virtsync
from tests.hosts.hermetic import HermeticHost, HostFactory

pytestmark = [pytest.mark.e2e, pytest.mark.fleet, pytest.mark.timeout(600)]


def _tree(root: Path, hosts: dict[str, HermeticHost], memory: str = "64MiB") -> Path:
    root.mkdir(exist_ok=True)
    for i, (name, host) in enumerate(sorted(hosts.items())):
        (root / f"{name}.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: {name}, labels: {{rack: r{i % 2}}}}}
spec: {{uri: "{host.uri}", connectTimeout: 5s}}
---
apiVersion: virtsync/v1
kind: Network
metadata: {{name: net}}
spec:
  host: {name}
  mode: nat
  bridge: virbr-fleet
  ipv4: {{address: 192.168.22{i}.1/24, dhcp: {{start: 192.168.22{i}.10, end: 192.168.22{i}.99}}}}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: app-{name}}}
spec:
  host: {name}
  memory: {memory}
  interfaces: [{{network: net, bootRom: false}}]
""")
    return root


def test_three_hosts_converge_and_a_dead_host_never_stops_the_others(
    hermetic_host_factory: HostFactory, tmp_path: Path,
) -> None:
    hosts = {name: hermetic_host_factory(name) for name in ("a", "b", "c")}
    tree = _tree(tmp_path / "specs", hosts)
    ok(virtsync("apply", str(tree), "--yes"))
    for name, host in hosts.items():
        assert host.virsh("domstate", f"app-{name}").strip() == "running"
    assert "No changes" in ok(virtsync("plan", str(tree)))
    hosts["b"].kill_libvirtd()
    _tree(tmp_path / "specs", hosts, memory="80MiB")
    proc = virtsync("apply", str(tree), "--yes")
    ok(proc, 1)  # a host could not be reached: an error, after the others converged
    assert "Host b" in proc.stdout and "unreachable" in proc.stdout
    for name in ("a", "c"):
        assert "81920" in hosts[name].virsh("dumpxml", "--inactive", f"app-{name}")
    drift = virtsync("drift", str(tree))
    ok(drift, 1)
    assert "Host b: UNREACHABLE" in drift.stdout
    hosts["b"].restart_libvirtd()
    ok(virtsync("apply", str(tree), "--yes"))
    assert "81920" in hosts["b"].virsh("dumpxml", "--inactive", "app-b")
    assert "No changes" in ok(virtsync("plan", str(tree)))
    # filters: one rack only
    out = ok(virtsync("plan", str(tree), "--host-selector", "rack=r1"))
    assert "Host b" in out and "Host a" not in out and "Host c" not in out
