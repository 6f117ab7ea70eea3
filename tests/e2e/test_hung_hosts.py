"""A libvirtd that stops answering (SIGSTOP: what a daemon stuck on a dead NFS mount looks like)
fails its own host's work within the host's deadlines and never holds up the other hosts, the
process's exit, or the service's endpoints."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from controller.engine import Engine
from controller.hypervisor.connection import ConnectionPool
from controller.spec.loader import load_specs
from tests.e2e.engine_helpers import ok, virtsync
from tests.e2e.service_helpers import ServeProcess, wait_for
from tests.hosts.hermetic import HermeticHost, HostFactory

pytestmark = [pytest.mark.e2e, pytest.mark.reliability, pytest.mark.timeout(600)]

CONNECT, CALL = 4, 5  # the Host specs' connectTimeout and callTimeout, in seconds


def _tree(root: Path, hosts: dict[str, HermeticHost], memory: str = "64MiB") -> Path:
    root.mkdir(exist_ok=True)
    for i, (name, host) in enumerate(sorted(hosts.items())):
        (root / f"{name}.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: {name}}}
spec: {{uri: "{host.uri}", connectTimeout: {CONNECT}s, callTimeout: {CALL}s}}
---
apiVersion: virtsync/v1
kind: Network
metadata: {{name: net}}
spec:
  host: {name}
  mode: isolated
  bridge: virbr-hung{i}
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


@contextmanager
def stopped(host: HermeticHost) -> Iterator[None]:
    """The host's libvirtd stopped with SIGSTOP (its sockets stay open, nothing answers); always
    continued afterwards, also when the test fails."""
    pids = host.pids_of("libvirtd")
    assert pids, "libvirtd is not running"
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def test_apply_with_a_stopped_libvirtd_ends_in_time_and_converges_the_other_hosts(
    hermetic_host_factory: HostFactory, tmp_path: Path,
) -> None:
    hosts = {name: hermetic_host_factory(name) for name in ("a", "b", "c")}
    tree = _tree(tmp_path / "specs", hosts)
    ok(virtsync("apply", str(tree), "--yes"))
    _tree(tmp_path / "specs", hosts, memory="80MiB")
    with stopped(hosts["b"]):
        started = time.monotonic()
        proc = virtsync("apply", str(tree), "--yes", timeout=120)
        took = time.monotonic() - started
        ok(proc, 1)
        assert took < CONNECT + CALL + 10, f"apply took {took:.1f}s with one hung host"
        assert "Host b" in proc.stdout and "no answer from" in proc.stdout, proc.stdout
        for name in ("a", "c"):
            assert "81920" in hosts[name].virsh("dumpxml", "--inactive", f"app-{name}")
    # Continued, the host converges on the next run.
    ok(virtsync("apply", str(tree), "--yes"))
    assert "81920" in hosts["b"].virsh("dumpxml", "--inactive", "app-b")


def test_a_call_to_a_daemon_that_stopped_answering_fails_within_the_call_timeout(
    hermetic_host_factory: HostFactory, tmp_path: Path,
) -> None:
    """The connection is open (observed once) when the daemon stops: the next calls on it, not the
    connect, are what must be bounded; afterwards the engine reconnects by itself."""
    hosts = {name: hermetic_host_factory(name) for name in ("a", "b")}
    specs = load_specs([str(_tree(tmp_path / "specs", hosts))]).specs
    engine = Engine(pool=ConnectionPool())
    try:
        first = engine.observe(specs)
        assert not first.failed, first.failed
        with stopped(hosts["b"]):
            started = time.monotonic()
            obs = engine.observe(specs)
            took = time.monotonic() - started
            assert "a" in obs.states and "b" in obs.failed
            # The call deadline or libvirt's keepalive (set below it), whichever is first.
            assert "no answer from" in obs.failed["b"], obs.failed["b"]
            assert took < CALL + 3, f"observe took {took:.1f}s"
            # While it stays stopped, asking again costs at most the connect timeout.
            started = time.monotonic()
            assert "b" in engine.observe(specs).failed
            assert time.monotonic() - started < CONNECT + 3
        wait_for(lambda: not engine.observe(specs).failed, 30, "host b answers again after SIGCONT")
    finally:
        engine.close()


def test_serve_keeps_answering_and_repairing_other_hosts_while_one_libvirtd_is_stopped(
    hermetic_host_factory: HostFactory, tmp_path: Path,
) -> None:
    hosts = {name: hermetic_host_factory(name) for name in ("a", "b", "c")}
    tree = _tree(tmp_path / "specs", hosts)
    serve = ServeProcess([str(tree), "--resync", "8s", "--log-format", "console"], tmp_path / "serve.log")
    try:
        serve.start()
        for name, host in hosts.items():
            wait_for(lambda h=host, n=name: h.virsh("domstate", f"app-{n}").strip() == "running", 60,
                     f"app-{name} running", serve)
        with stopped(hosts["b"]):
            time.sleep(1)
            hosts["a"].virsh("destroy", "app-a")
            destroyed = time.monotonic()
            worst = 0.0
            while time.monotonic() - destroyed < 15:
                t = time.monotonic()
                with urllib.request.urlopen(serve.url + "/healthz", timeout=5) as resp:
                    assert resp.read() == b"ok\n"
                worst = max(worst, time.monotonic() - t)
                if hosts["a"].virsh("domstate", "app-a").strip() == "running":
                    break
                time.sleep(0.2)
            repaired = time.monotonic() - destroyed
            assert repaired < 5, f"app-a was running again only after {repaired:.1f}s"
            assert worst < 1, f"/healthz took {worst:.2f}s"
            wait_for(lambda: "no answer from" in str(serve.status()), 30, "b reported as not answering", serve)
        # Continued: b converges on the next resync (an out-of-band change made while it was away).
        hosts["b"].virsh("destroy", "app-b")
        wait_for(lambda: hosts["b"].virsh("domstate", "app-b").strip() == "running", 40,
                 "app-b repaired after SIGCONT", serve)
    finally:
        assert serve.stop() == 0, serve.logs()


def test_exit_is_never_held_by_a_hung_host(hermetic_host_factory: HostFactory, tmp_path: Path) -> None:
    """`virtsync drift` with the only host stopped: reported and exited, not waited on forever."""
    hosts = {"a": hermetic_host_factory("a")}
    tree = _tree(tmp_path / "specs", hosts)
    with stopped(hosts["a"]):
        started = time.monotonic()
        try:
            proc = virtsync("drift", str(tree), timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("drift did not exit within 60s of a hung host")
        ok(proc, 1)
        assert time.monotonic() - started < CONNECT + CALL + 10
        assert "UNREACHABLE" in proc.stdout and "no answer from" in proc.stdout, proc.stdout
