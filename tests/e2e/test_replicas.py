"""Three `serve` replicas sharing four hosts through tooz — a real etcd (Debian's etcd-server) and
the file driver: each host is held by exactly one replica, a replica killed with -9 hands its
hosts over within the membership timeout, and no two replicas ever change one host at once."""

from __future__ import annotations

import itertools
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.service_helpers import ServeProcess, wait_for
from tests.hosts.hermetic import HermeticHost, HostFactory

pytestmark = [pytest.mark.e2e, pytest.mark.fleet, pytest.mark.timeout(600)]

TTL = 3  # seconds: the members' heartbeat timeout (file driver ?timeout=, etcd lease)
REPLICAS = ("r1", "r2", "r3")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[str]:
    """A one-member etcd on loopback, stopped by its pid at teardown."""
    client, peer = _free_port(), _free_port()
    log = (tmp_path / "etcd.log").open("wb")
    proc = subprocess.Popen(
        ["etcd", "--name", "t", "--data-dir", str(tmp_path / "etcd"),
         "--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls", f"http://127.0.0.1:{client}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"t=http://127.0.0.1:{peer}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        def up() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", client)) == 0

        wait_for(up, 20, "etcd listening")
        yield f"etcd3+http://127.0.0.1:{client}?timeout={TTL}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def _tree(root: Path, hosts: dict[str, HermeticHost]) -> Path:
    root.mkdir(exist_ok=True)
    for i, (name, host) in enumerate(sorted(hosts.items())):
        (root / f"{name}.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: {name}}}
spec: {{uri: "{host.uri}", connectTimeout: 5s}}
---
apiVersion: virtsync/v1
kind: Network
metadata: {{name: net}}
spec: {{host: {name}, mode: isolated, bridge: virbr-rep{i}}}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: app-{name}}}
spec:
  host: {name}
  memory: 32MiB
  interfaces: [{{network: net, bootRom: false}}]
""")
    return root


def _holds(replicas: dict[str, ServeProcess]) -> dict[str, list[str]]:
    out = {}
    for rid, svc in replicas.items():
        doc = svc.get("/status")
        out[rid] = sorted(doc["service"]["replica"]["holds"]) if doc else []
    return out


def _exactly_once(holds: dict[str, list[str]], hosts: list[str]) -> bool:
    every = [h for held in holds.values() for h in held]
    return sorted(every) == sorted(hosts)


def _actions(svc: ServeProcess, rid: str) -> list[dict[str, Any]]:
    return [dict(e, replica=rid) for e in svc.log_events() if e.get("event") == "action"]


def _no_overlap(actions: list[dict[str, Any]]) -> None:
    """Per host, no action of one replica ran while another replica's action on that host ran."""
    spans: dict[str, list[tuple[datetime, datetime, str, str]]] = {}
    for a in actions:
        end = datetime.fromisoformat(a["timestamp"].replace("Z", "+00:00"))
        start = end - timedelta(seconds=float(a.get("seconds", 0)))
        spans.setdefault(a["host"], []).append((start, end, a["replica"], f"{a['op']} {a['name']}"))
    for host, items in spans.items():
        items.sort()
        for (s1, e1, r1, w1), (s2, e2, r2, w2) in itertools.pairwise(items):
            assert r1 == r2 or s2 >= e1, f"{host}: {r1} {w1} [{s1}..{e1}] overlaps {r2} {w2} [{s2}..{e2}]"


@pytest.mark.parametrize("backend", ["etcd", "file"])
def test_replicas_share_the_hosts_and_take_over_from_a_killed_one(
    backend: str, hermetic_host_factory: HostFactory, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    url = request.getfixturevalue("etcd") if backend == "etcd" else f"file://{tmp_path / 'coord'}?timeout={TTL}"
    hosts = {name: hermetic_host_factory(name) for name in ("h1", "h2", "h3", "h4")}
    tree = _tree(tmp_path / "specs", hosts)
    names = sorted(hosts)

    def replica(rid: str) -> ServeProcess:
        return ServeProcess([str(tree), "--replica-id", rid, "--coordination", url, "--resync", "20s"],
                            tmp_path / f"{rid}.log")

    replicas = {rid: replica(rid) for rid in REPLICAS}
    logs: dict[str, list[dict[str, Any]]] = {}
    try:
        for svc in replicas.values():
            svc.start()
        wait_for(lambda: _exactly_once(_holds(replicas), names) and len(
            {r for r, held in _holds(replicas).items() if held}) >= 2, 30, "each host held by exactly one replica")
        for name, host in hosts.items():
            wait_for(lambda h=host, n=name: h.virsh("domstate", f"app-{n}").strip() == "running", 60,
                     f"app-{name} running")
        holds = _holds(replicas)
        victim = next(rid for rid, held in holds.items() if "h1" in held)
        replicas[victim].proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        replicas[victim].stop()
        hosts["h1"].virsh("destroy", "app-h1")
        killed = time.monotonic()
        alive = {rid: svc for rid, svc in replicas.items() if rid != victim}
        wait_for(lambda: "h1" in [h for held in _holds(alive).values() for h in held], TTL + 10,
                 "another replica holds h1")
        wait_for(lambda: hosts["h1"].virsh("domstate", "app-h1").strip() == "running", TTL + 10 - (
            time.monotonic() - killed) + 10, "app-h1 repaired by the new holder")
        took = time.monotonic() - killed
        wait_for(lambda: _exactly_once(_holds(alive), names), 10, "the killed replica's hosts all taken over")
        print(f"\n{backend}: {victim} killed; h1 taken over and its guest running again after {took:.1f}s")
        # The killed replica comes back under its id: the hosts rebalance, no action fails.
        replicas[victim] = replica(victim).start()
        wait_for(lambda: _exactly_once(_holds(replicas), names) and bool(_holds(replicas)[victim]), 30,
                 f"{victim} holds hosts again")
        time.sleep(3)
        for name, host in hosts.items():
            assert host.virsh("domstate", f"app-{name}").strip() == "running"
    finally:
        for rid, svc in replicas.items():
            if svc.proc is not None:
                svc.stop()
            logs[rid] = _actions(svc, rid) if svc.log_path.exists() else []
    every = [a for acts in logs.values() for a in acts]
    failed = [a for a in every if a.get("outcome") == "failed"]
    assert not failed, failed
    _no_overlap(every)  # the restarted replica's log holds its first life's actions too


def test_agents_move_guests_between_their_hosts_live_and_cold(
    hermetic_host_factory: HostFactory, tmp_path: Path,
) -> None:
    """One agent per host (`serve --this-host`), sharing their locks: when a guest's host: changes,
    the target's agent moves it from the source — a running one live (no reboot: same boot id
    through the guest agent), a stopped one cold with its disk bytes — and the source's agent never
    deletes it."""
    import hashlib

    from tests.e2e.test_fleet import _boot_id, join
    from tests.hosts.linux_guest import ensure_test_guest, link_or_copy, wait_for_agent

    a = hermetic_host_factory("aa", listen_tcp=True)
    b = hermetic_host_factory("ab", listen_tcp=True)
    ip_a, ip_b = join(a, b, "ag", "10.97.0")
    kernel, initrd = ensure_test_guest()
    boot = tmp_path / "boot"
    kernel, initrd = link_or_copy(kernel, boot), link_or_copy(initrd, boot)
    specs = tmp_path / "specs"
    specs.mkdir()

    def write(mover: str, boxed: str) -> None:
        docs = [f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: {name}}}
spec: {{uri: "{host.uri}", hypervisor: qemu, migrationUri: "qemu+tcp://{ip}/system", migrationAddress: {ip},
       storage: {{allowedDirs: ["{boot}", /var/lib/libvirt/images]}}}}
---
apiVersion: virtsync/v1
kind: StoragePool
metadata: {{name: agpool}}
spec: {{host: {name}, path: /var/lib/libvirt/images/agpool}}
---
apiVersion: virtsync/v1
kind: Network
metadata: {{name: ag}}
spec: {{host: {name}, mode: isolated, bridge: virbr-ag}}
""" for name, host, ip in (("aa", a, ip_a), ("ab", b, ip_b))]
        docs.append(f"""apiVersion: virtsync/v1
kind: Guest
metadata: {{name: mover}}
spec:
  host: {mover}
  memory: 256MiB
  agent: true
  boot: {{kernel: "{kernel}", initrd: "{initrd}", cmdline: "console=ttyS0"}}
  interfaces: [{{network: ag, mac: "52:54:00:24:00:01", bootRom: false}}]
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: boxed}}
spec:
  host: {boxed}
  state: stopped
  memory: 64MiB
  disks: [{{name: root, pool: agpool, size: 8MiB, format: raw}}]
""")
        tmp = specs / ".fleet.yaml.tmp"
        tmp.write_text("---\n".join(docs))
        tmp.replace(specs / "fleet.yaml")  # one change, as a commit lands

    write("aa", "aa")
    coord = f"file://{tmp_path / 'coord'}"
    agents = {name: ServeProcess([str(specs), "--this-host", name, "--coordination", coord, "--prune"],
                                 tmp_path / f"agent-{name}.log") for name in ("aa", "ab")}
    try:
        for svc in agents.values():
            svc.start()
        wait_for(lambda: "boxed" in a.virsh("list", "--all", "--name").split(), 60, "boxed defined on aa")
        wait_for_agent(a, "mover", timeout=120)
        before = _boot_id(a, "mover")
        src = a.path_outside("/var/lib/libvirt/images/agpool/boxed-root.img")
        with src.open("r+b") as f:
            f.write(b"moved by an agent\n" * 1000)
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
        uuid = a.virsh("domuuid", "boxed").strip()

        write("aa", "ab")  # the stopped guest: cold
        wait_for(lambda: "boxed" in b.virsh("list", "--all", "--name").split()
                 and "boxed" not in a.virsh("list", "--all", "--name").split(), 60, "boxed moved to ab")
        assert b.virsh("domuuid", "boxed").strip() == uuid
        dst = b.path_outside("/var/lib/libvirt/images/agpool/boxed-root.img")
        assert hashlib.sha256(dst.read_bytes()).hexdigest() == digest

        write("ab", "ab")  # the running guest: live
        wait_for(lambda: "mover" not in a.virsh("list", "--all", "--name").split()
                 and b.virsh("domstate", "mover").strip() == "running", 120, "mover migrated to ab")
        wait_for_agent(b, "mover", timeout=60)
        assert _boot_id(b, "mover") == before, "the guest rebooted"
        time.sleep(2)  # late reconciles of either agent must change nothing more
        assert b.virsh("domstate", "mover").strip() == "running"
    finally:
        for svc in agents.values():
            svc.stop()
    ops = {name: [(e["op"], e["name"], e.get("outcome")) for e in svc.log_events() if e.get("event") == "action"]
           for name, svc in agents.items()}
    assert ("migrate", "mover", "updated") in [(o, n, s) for o, n, s in ops["ab"]] or any(
        o == "migrate" and n == "mover" for o, n, _ in ops["ab"]), ops["ab"]
    assert any(o == "move" and n == "boxed" for o, n, _ in ops["ab"]), ops["ab"]
    assert not [x for x in ops["aa"] if x[0] == "delete"], ops["aa"]  # the source's agent never deleted one
    assert not [x for name in ops for x in ops[name] if x[2] == "failed"], ops
