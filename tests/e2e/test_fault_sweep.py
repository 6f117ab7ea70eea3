"""Every crash point of a scenario: virtsync is killed right after its k-th state-changing libvirt
call (VIRTSYNC_TEST_KILL_AFTER_CALLS=k, controller/hypervisor/fault_injection.py), for every k,
and the next run without faults must converge: exit 0, nothing left to plan, no object twice, no
leaked volume file, nothing unowned touched, no error printed.

The scenario, on two real hosts: a pool, a network, a guest with a linked clone of a qcow2 image
(made with qemu-img here), a guest with a blank disk, a guest moved from one host to the other,
one pruned, then a snapshot pass. A fresh CLI costs ~2 s of imports on this machine, so the runs
are forked from one process that imported virtsync once (run as ``python -m`` of this file):
each run is still its own process, and a kill is its real death (``os._exit(137)``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.e2e.engine_helpers import ROOT
from tests.e2e.service_helpers import free_port, wait_for
from tests.hosts.hermetic import HermeticHost, HostFactory

pytestmark = [pytest.mark.e2e, pytest.mark.reliability, pytest.mark.timeout(300)]

AT = "2026-12-01T03:00:00+00:00"  # the snapshot pass's time: every run of it is the same pass
POOL_FILES = {"g1-root.qcow2", "g2-root.qcow2", ".virtsync-owner-default", "stray.raw"}


# ------------------------------------------------------------------ a CLI forked per run

class Forker:
    """``python -m tests.e2e.test_fault_sweep``: imports virtsync once, then forks one child per
    request line (argv, env, output files) and answers with the child's exit status, or at once
    with its pid (``spawn``; ``reap`` waits for it later)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.e2e.test_fault_sweep"], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._read() == {"ready": True}

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the forking runner died"
        doc: dict[str, Any] = json.loads(line)
        return doc

    def _ask(self, req: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def run(self, argv: list[str], out: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        err = out.with_suffix(".err")
        code = int(self._ask({"argv": argv, "env": env or {}, "out": str(out), "err": str(err)})["code"])
        return code, out.read_text(), err.read_text()

    def spawn(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
        """A forked run left running (serve); its output (stdout and stderr) in ``log``."""
        req = {"argv": argv, "env": env or {}, "out": str(log), "err": str(log), "wait": False}
        return int(self._ask(req)["pid"])

    def reap(self, pid: int, timeout: float) -> int:
        """The exit code of a spawned run; one still running after ``timeout`` is killed (-9)."""
        return int(self._ask({"reap": pid, "timeout": timeout})["code"])

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _serve_forks() -> None:
    """The forking runner's loop (see Forker); the parent never opens a libvirt connection."""
    # what every run needs, imported once
    import controller.apply.executor
    import controller.commands
    import controller.engine
    import controller.hypervisor.observe
    import controller.hypervisor.operations
    import controller.hypervisor.snapshots
    import controller.service.git
    import controller.service.runner  # noqa: F401
    from controller.cli import main

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if "reap" in req:
            deadline = time.monotonic() + req["timeout"]
            while (done := os.waitpid(req["reap"], os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            if done[0] == 0:
                os.kill(req["reap"], 9)
                done = os.waitpid(req["reap"], 0)
            print(json.dumps({"code": os.waitstatus_to_exitcode(done[1])}), flush=True)
            continue
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                os.environ.update(req["env"])
                fd_in = os.open(os.devnull, os.O_RDONLY)
                fd_out = os.open(req["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                fd_err = fd_out if req["err"] == req["out"] else os.open(
                    req["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                for fd, std in ((fd_in, 0), (fd_out, 1), (fd_err, 2)):
                    os.dup2(fd, std)
                code = main(req["argv"])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException as exc:
                print(f"Traceback (forked run): {exc!r}", file=sys.stderr)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        if req.get("wait", True):
            _, status = os.waitpid(pid, 0)
            print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)
        else:
            print(json.dumps({"pid": pid}), flush=True)


# ------------------------------------------------------------------ the scenario

def _specs(tmp: Path, h1: HermeticHost, h2: HermeticHost, final: bool) -> Path:
    """The specs before the scenario (``final`` False: old and mover on lab) and after it."""
    root = tmp / ("final" if final else "before")
    root.mkdir(exist_ok=True)
    docs = [f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: lab}}
spec: {{uri: "{h1.uri}", storage: {{allowedDirs: ["{tmp}"]}}}}
""", f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: far}}
spec: {{uri: "{h2.uri}", storage: {{allowedDirs: ["{tmp}"]}}}}
"""]
    # keep stays: a prune of old alone is then not "more than half of lab's guests"
    docs.append(_guest("keep", "lab"))
    if not final:
        docs += [_guest("old", "lab"), _guest("mover", "lab")]
    else:
        docs += [f"""apiVersion: virtsync/v1
kind: StoragePool
metadata: {{name: images}}
spec: {{host: lab, path: "{tmp / 'pool'}"}}
""", """apiVersion: virtsync/v1
kind: Network
metadata: {name: lan}
spec: {host: lab, mode: isolated, bridge: virbr-fs}
""", _guest("g1", "lab", "running", labels="{snap: yes}", extra=f"""
  disks: [{{name: root, pool: images, from: "{tmp / 'base.qcow2'}"}}]
  interfaces: [{{network: lan, bootRom: false}}]"""),
                 _guest("g2", "lab", extra="\n  disks: [{name: root, pool: images, size: 4MiB}]"),
                 _guest("mover", "far"), """apiVersion: virtsync/v1
kind: SnapshotPolicy
metadata: {name: nightly}
spec:
  selector: {matchLabels: {snap: "yes"}}
  schedule: "0 3 * * *"
  retain: {daily: 2}
"""]
    (root / "lab.yaml").write_text("---\n".join(docs))
    return root


def _guest(name: str, host: str, state: str = "stopped", labels: str = "{}", extra: str = "") -> str:
    return f"""apiVersion: virtsync/v1
kind: Guest
metadata: {{name: {name}, labels: {labels}}}
spec:
  host: {host}
  state: {state}
  memory: 32MiB{extra}
"""


class Sweep:
    def __init__(self, tmp: Path, h1: HermeticHost, h2: HermeticHost):
        self.tmp, self.h1, self.h2 = tmp, h1, h2
        self.c1, self.c2 = h1.connect(), h2.connect()
        self.coord = f"file://{tmp / 'coord'}"
        self.before = _specs(tmp, h1, h2, final=False)
        self.final = _specs(tmp, h1, h2, final=True)
        self.pool = tmp / "pool"
        self.runs = 0
        self.spent: dict[str, float] = {}  # seconds per verb, to see where a sweep's time goes
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp / "base.qcow2"), "4M"], check=True)

    def close(self) -> None:
        for c in (self.c1, self.c2):
            c.close()

    # the steps of the scenario: (argv, specs)
    def steps(self) -> list[list[str]]:
        common = ["--coordination", self.coord]
        return [["apply", str(self.final), "--yes", "--prune", "--concurrency", "1", *common],
                ["snapshots", "run", str(self.final), "--at", AT, *common]]

    def cli(self, forker: Forker, argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
        self.runs += 1
        t = time.monotonic()
        try:
            return forker.run(argv, self.tmp / f"run{self.runs}.out", env)
        finally:
            self.spent[argv[0]] = self.spent.get(argv[0], 0.0) + time.monotonic() - t

    # ---- the host before the scenario

    def prepare(self, forker: Forker) -> None:
        """Unowned objects that must survive untouched, and the owned guests old and mover
        (made once by an apply, then kept as XML to define again for each crash point)."""
        self.c1.defineXML(_plain_domain("unowned"))
        self.pool.mkdir()
        (self.pool / "stray.raw").write_bytes(os.urandom(65536))
        code, out, err = self.cli(forker, ["apply", str(self.before), "--yes", "--coordination", self.coord])
        assert code == 0, out + err
        self.owned_xml = {n: self.c1.lookupByName(n).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
                          for n in ("keep", "old", "mover")}
        self.unowned = self.fingerprint_unowned()

    def fingerprint_unowned(self) -> tuple[str, bytes]:
        return (self.c1.lookupByName("unowned").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE),
                (self.pool / "stray.raw").read_bytes())

    def reset(self) -> None:
        """Back to the host before the scenario: everything virtsync made is removed through
        libvirt (faster than a new host), the pool's files but the stray one deleted."""
        for conn in (self.c1, self.c2):
            for dom in conn.listAllDomains():
                if dom.name() == "unowned":
                    continue
                if dom.isActive():
                    dom.destroy()
                for snap in dom.listAllSnapshots():
                    snap.delete(libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            for net in conn.listAllNetworks():
                if net.isActive():
                    net.destroy()
                net.undefine()
            for pool in conn.listAllStoragePools():
                if pool.isActive():
                    pool.destroy()
                pool.undefine()
        for f in self.pool.iterdir():
            if f.name != "stray.raw":
                f.unlink()
        for xml in self.owned_xml.values():
            self.c1.defineXML(xml)

    # ---- what a converged host looks like

    def check_converged(self, forker: Forker, what: str, snapshots: int | None = 1) -> None:
        code, out, err = self.cli(forker, ["plan", str(self.final)])
        assert code == 0 and "No changes" in out, f"{what}: plan after the repair:\n{out}\n{err}"
        lab = sorted(d.name() for d in self.c1.listAllDomains())
        far = sorted(d.name() for d in self.c2.listAllDomains())
        assert (lab, far) == (["g1", "g2", "keep", "unowned"], ["mover"]), f"{what}: guests {lab} {far}"
        assert self.c1.lookupByName("g1").isActive() and not self.c1.lookupByName("g2").isActive()
        assert [n.name() for n in self.c1.listAllNetworks()] == ["lan"], what
        assert [p.name() for p in self.c1.listAllStoragePools()] == ["images"], what
        files = {f.name for f in self.pool.iterdir()}
        assert files == POOL_FILES, f"{what}: pool files {sorted(files)}"  # nothing leaked or missing
        snaps = self.c1.lookupByName("g1").listAllSnapshots()
        names = [snap.getName() for snap in snaps]
        if snapshots is None:  # serve takes a policy's snapshot when it likes: at most one
            assert len(names) <= 1, f"{what}: snapshots of g1: {names}"
        else:
            assert len(names) == snapshots, f"{what}: snapshots of g1: {names}"
        assert self.fingerprint_unowned() == self.unowned, f"{what}: an unowned object changed"


def _plain_domain(name: str) -> str:
    return f"""<domain type='kvm'><name>{name}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type></os><devices/></domain>"""


def _no_error(what: str, code: int, out: str, err: str) -> None:
    assert code == 0, f"{what}: exit {code}\n{out}\n{err}"
    bad = re.search(r"Traceback|FAILED|[Ee]rror|: failed|[1-9]\d* failed", out + err)
    assert bad is None, f"{what}: {bad.group(0)!r} printed\n{out}\n{err}"


@pytest.fixture
def sweep(hermetic_host_factory: HostFactory, tmp_path: Path) -> Any:
    h1, h2 = hermetic_host_factory("lab"), hermetic_host_factory("far")
    s = Sweep(tmp_path, h1, h2)
    forker = Forker()
    try:
        s.prepare(forker)
        yield s, forker
    finally:
        forker.close()
        s.close()


def test_a_kill_after_any_state_changing_call_is_repaired_by_the_next_run(sweep: Any) -> None:
    s, forker = sweep
    started = time.monotonic()
    calls: list[list[str]] = []
    for i, argv in enumerate(s.steps()):
        log = s.tmp / f"calls{i}.log"
        code, out, err = s.cli(forker, argv, {"VIRTSYNC_TEST_CALL_LOG": str(log)})
        _no_error(f"step {i} without faults", code, out, err)
        calls.append(log.read_text().splitlines() if log.exists() else [])
    s.check_converged(forker, "without faults")
    total = sum(len(c) for c in calls)
    print(f"the scenario makes {total} state-changing calls: "
          + "; ".join(f"step {i}: {', '.join(c.split()[1] for c in cs)}" for i, cs in enumerate(calls)))
    assert len(calls[0]) >= 12 and len(calls[1]) >= 1, calls

    tried = 0
    for i, argv in enumerate(s.steps()):
        for k in range(1, len(calls[i]) + 1):
            s.reset()
            for earlier in s.steps()[:i]:
                _no_error(f"call {k} of step {i}: an earlier step", *s.cli(forker, earlier))
            log = s.tmp / f"kill{i}-{k}.log"
            code, out, err = s.cli(forker, argv, {"VIRTSYNC_TEST_KILL_AFTER_CALLS": str(k),
                                                  "VIRTSYNC_TEST_CALL_LOG": str(log)})
            # the order of calls on different hosts varies: name the call this run died after
            what = f"killed after call {k} of step {i} ({log.read_text().split()[-1]})"
            assert code == 137, f"{what}: the run was not killed (exit {code})\n{out}\n{err}"
            repair = s.cli(forker, argv)  # the same step again: it must finish what the kill cut
            _no_error(f"{what}: the next run", *repair)
            s.check_converged(forker, f"{what}; the repair said:\n{repair[1]}{repair[2]}\n",
                              snapshots=1 if i == 1 else 0)
            tried += 1
    print(f"tried {tried} crash points in {time.monotonic() - started:.1f}s (runs: "
          + ", ".join(f"{verb} {t:.1f}s" for verb, t in s.spent.items()) + ")")
    assert tried == total


def _status(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as resp:
            doc: dict[str, Any] = json.loads(resp.read())
            return doc
    except OSError:
        return None


def _in_sync(port: int) -> bool:
    doc = _status(port)
    if doc is None:
        return False
    objs = {f"{o['kind']}/{o['name']}": o["status"] for h in doc["hosts"] for o in h["objects"]}
    return {"Guest/g1", "Guest/g2", "Guest/keep", "Guest/mover"} <= set(objs) and all(
        v == "in-sync" for v in objs.values())


def test_the_service_killed_after_a_state_changing_call_converges_when_started_again(
    sweep: Any, tmp_path: Path,
) -> None:
    """serve, killed after call k for a few k spread over its first reconcile, then started
    again: the hosts converge, nothing unowned was touched, nothing was logged as crashed."""
    s, forker = sweep
    points = [2, 5, 8, 11, 14]
    started = time.monotonic()
    for k in points:
        s.reset()
        port = free_port()
        argv = ["serve", str(s.final), "--coordination", s.coord, "--prune", "--log-format", "json",
                "--resync", "1h", "--snapshot-interval", "1h", "--listen", f"127.0.0.1:{port}"]
        killed = tmp_path / f"serve{k}.log"
        pid = forker.spawn(argv, killed, {"VIRTSYNC_TEST_KILL_AFTER_CALLS": str(k)})
        assert forker.reap(pid, 60) == 137, killed.read_text()
        log = tmp_path / f"serve{k}-again.log"
        pid = forker.spawn(argv, log)
        try:
            wait_for(lambda port=port: _in_sync(port), 60, f"serve after a kill at call {k} in sync")
        except AssertionError:
            raise AssertionError(log.read_text()[-4000:]) from None
        finally:
            os.kill(pid, signal.SIGTERM)
            code = forker.reap(pid, 60)
        text = log.read_text()
        assert code == 0, text[-4000:]
        assert "reconcile crashed" not in text and "Traceback" not in text, text[-4000:]
        assert '"outcome": "failed"' not in text, text[-4000:]  # no action failed
        s.check_converged(forker, f"serve killed after call {k}", snapshots=None)
    print(f"serve: tried {len(points)} crash points in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    _serve_forks()
