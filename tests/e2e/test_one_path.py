"""One path: the same five-step fleet scenario, driven by `virtsync apply` and by `virtsync serve`.

DESIGN.md: "plan, apply, drift and the service all call the same load → observe → plan →
(execute) functions"; "cross-host moves are planned in every scope that sees both hosts". So
one scenario on two hermetic hosts A and B (joined by a veth pair, libvirtd listening on TCP
for live migration) must end in the same state, through the same kinds of actions, whether
each step is followed by ``virtsync apply --yes --prune`` or a running ``virtsync serve
--prune`` reacts to the edited spec file:

1. create: on A a NAT network, a dir pool, a stopped guest ``cold1`` with a raw data disk
   (known bytes are written into it afterwards), a running diskless guest ``web1`` and the
   running Linux test guest ``lin1`` (direct kernel boot, TCG); the same network name (another
   subnet) and the same pool (name and path) on B;
2. web1: memory 64MiB → 96MiB (maxMemory 128MiB), vCPUs 1 → 2 (maxVcpus 2), both live;
3. cold1's host becomes B: a cold move with its disk, under its UUID;
4. lin1's host becomes B: a live migration, without a reboot (same boot id);
5. web1 leaves the specs: pruned.

After each step both runs are compared with the state the step declares (and, once both ran
in this process, with each other): per host the defined guests (UUID relative to the ones
recorded at step 1, state, memory, vCPUs), networks and pools (with their volumes), and the
multiset of (op, name) of the actions taken: the apply ChangeSet's outcomes (``--format json``)
and the service's ``"event": "action"`` log lines.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import libvirt
import pytest
from lxml import etree

from tests.e2e.engine_helpers import ok, virtsync
from tests.e2e.service_helpers import ServeProcess
from tests.e2e.test_fleet import _boot_id, join
from tests.hosts.hermetic import HermeticHost, HostFactory
from tests.hosts.linux_guest import ensure_test_guest, link_or_copy, wait_for_agent

pytestmark = [pytest.mark.e2e, pytest.mark.fleet, pytest.mark.timeout(900)]

NET, BRIDGE = "onenet", "virbr-one"
SUBNETS = {"a": "192.168.231", "b": "192.168.232"}  # the same network name, another subnet
POOL, POOL_PATH = "onepool", "/var/lib/libvirt/images/onepool"
COLD_VOLUME = "cold1-data.img"  # disk "data" of cold1, format raw, in POOL
SERVE_STEP_TIMEOUT = 120.0  # seconds for the service to reach a step's state
# Both drivers run with --force: at step 5 web1 is the last managed guest on A, and the
# mass-deletion guard refuses to delete "1 of 1 managed guests on a (more than half)". The
# service takes the flag once, at its start, so apply takes it at every step as well: the two
# runs act under the same rules.
FORCE = "--force"
QUIET = 3.0  # seconds without a new action (and an empty queue) that end a serve step
# A service whose /status is all in sync with an empty queue, that takes no action for this
# long while the hosts still differ from the declaration, will not get there: fail at once.
STUCK = 20.0

Ops = Counter[tuple[str, str]]  # (op, name) → how many times


# ---------------------------------------------------------------- the scenario, declared once


@dataclass(frozen=True)
class GuestDecl:
    """One guest as a step declares it; both its spec document and its expected state."""

    name: str
    host: str
    kind: str  # cold | web | lin
    running: bool
    memory: int  # MiB
    vcpus: int = 1
    max_memory: int | None = None  # MiB
    max_vcpus: int | None = None


COLD1 = GuestDecl("cold1", "a", "cold", running=False, memory=64)
WEB1 = GuestDecl("web1", "a", "web", running=True, memory=64, max_memory=128, max_vcpus=2)
LIN1 = GuestDecl("lin1", "a", "lin", running=True, memory=256)
WEB1_BIGGER = replace(WEB1, memory=96, vcpus=2)
COLD1_ON_B = replace(COLD1, host="b")
LIN1_ON_B = replace(LIN1, host="b")


@dataclass(frozen=True)
class Step:
    title: str
    guests: tuple[GuestDecl, ...]
    volumes: dict[str, tuple[str, ...]]  # host → volumes of POOL
    # Ops each run must show at this step, whatever else it does (the semantic minimum), and
    # ops it must not show. The full multisets of the two runs are compared with each other.
    must: tuple[tuple[str, str], ...] = ()
    must_not: tuple[tuple[str, str], ...] = ()


STEPS = (
    Step("create", (COLD1, WEB1, LIN1), {"a": (COLD_VOLUME,), "b": ()},
         must=(("define", "cold1"), ("define", "web1"), ("define", "lin1"), ("start", "web1"),
               ("start", "lin1"))),
    Step("update web1 memory and vCPUs", (COLD1, WEB1_BIGGER, LIN1), {"a": (COLD_VOLUME,), "b": ()},
         must=(("update", "web1"),)),
    # The source keeps the moved guest's volumes (DESIGN: a move undefines, keeps the data).
    Step("move stopped cold1 to B", (COLD1_ON_B, WEB1_BIGGER, LIN1),
         {"a": (COLD_VOLUME,), "b": (COLD_VOLUME,)},
         must=(("move", "cold1"),), must_not=(("define", "cold1"), ("delete", "cold1"))),
    Step("live-migrate running lin1 to B", (COLD1_ON_B, WEB1_BIGGER, LIN1_ON_B),
         {"a": (COLD_VOLUME,), "b": (COLD_VOLUME,)},
         must=(("migrate", "lin1"),), must_not=(("define", "lin1"), ("delete", "lin1"))),
    Step("prune web1", (COLD1_ON_B, LIN1_ON_B), {"a": (COLD_VOLUME,), "b": (COLD_VOLUME,)},
         must=(("delete", "web1"),)),
)


@dataclass
class Env:
    a: HermeticHost
    b: HermeticHost
    addrs: dict[str, str]  # host → its veth address (migration)
    kernel: Path
    initrd: Path
    specs: Path
    uuids: dict[str, str] = field(default_factory=dict)  # guest → UUID recorded at step 1

    @property
    def hosts(self) -> dict[str, HermeticHost]:
        return {"a": self.a, "b": self.b}


def _guest_doc(env: Env, g: GuestDecl) -> str:
    lines = [f"host: {g.host}", f"state: {'running' if g.running else 'stopped'}",
             f"memory: {g.memory}MiB", f"vcpus: {g.vcpus}"]
    if g.max_memory:
        lines.append(f"maxMemory: {g.max_memory}MiB")
    if g.max_vcpus:
        lines.append(f"maxVcpus: {g.max_vcpus}")
    if g.kind == "cold":
        lines.append(f"disks: [{{name: data, pool: {POOL}, size: 8MiB, format: raw}}]")
    elif g.kind == "web":
        lines.append(f'interfaces: [{{network: {NET}, mac: "52:54:00:31:00:01", bootRom: false}}]')
    else:
        lines += ["agent: true",
                  f'boot: {{kernel: "{env.kernel}", initrd: "{env.initrd}", cmdline: "console=ttyS0"}}',
                  f'interfaces: [{{network: {NET}, mac: "52:54:00:31:00:02", bootRom: false}}]']
    body = "".join(f"  {line}\n" for line in lines)
    return f"apiVersion: virtsync/v1\nkind: Guest\nmetadata: {{name: {g.name}}}\nspec:\n{body}"


def spec_text(env: Env, step: Step | None) -> str:
    """The whole spec tree (one file); step None: the Host documents only."""
    docs = []
    for name, host in env.hosts.items():
        ip = env.addrs[name]
        docs.append(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: {name}}}
spec: {{uri: "{host.uri}", hypervisor: qemu, migrationUri: "qemu+tcp://{ip}/system", migrationAddress: {ip},
       storage: {{allowedDirs: ["{env.kernel.parent}", /var/lib/libvirt/images]}}}}
""")
        if step is None:
            continue
        net = SUBNETS[name]
        docs.append(f"""apiVersion: virtsync/v1
kind: StoragePool
metadata: {{name: {POOL}}}
spec: {{host: {name}, path: {POOL_PATH}}}
---
apiVersion: virtsync/v1
kind: Network
metadata: {{name: {NET}}}
spec: {{host: {name}, mode: nat, bridge: {BRIDGE},
        ipv4: {{address: {net}.1/24, dhcp: {{start: {net}.10, end: {net}.99}}}}}}
""")
    docs += [_guest_doc(env, g) for g in (step.guests if step else ())]
    return "---\n".join(docs)


def write_specs(env: Env, step: Step | None) -> None:
    """Replaced by rename, as an editor saves: the service never reads half a file."""
    env.specs.mkdir(exist_ok=True)
    tmp = env.specs / ".fleet.yaml.tmp"  # dot files are not spec files
    tmp.write_text(spec_text(env, step))
    os.replace(tmp, env.specs / "fleet.yaml")


# ----------------------------------------------------------------------- observed state

_STATES = {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
           libvirt.VIR_DOMAIN_PAUSED: "paused"}


def _kib(root: Any, path: str) -> int | None:
    el = root.find(path)
    if el is None:
        return None
    scale = {"KiB": 1, "k": 1, "MiB": 1024, "M": 1024, "GiB": 1024**2, "G": 1024**2, "b": 1 / 1024,
             "bytes": 1 / 1024}[el.get("unit", "KiB")]
    return int(int(el.text or 0) * scale)


def host_state(host: HermeticHost, uuids: dict[str, str]) -> dict[str, Any]:
    """What `virsh dominfo`/`dumpxml --inactive`, `net-dumpxml` and `vol-list` show, normalised.

    UUIDs read as ``step1:NAME`` (the UUID NAME had at step 1) or ``new:UUID``; before the
    UUIDs are recorded (during step 1) every guest reads as its own.
    """
    conn = host.connect()
    try:
        guests: dict[str, Any] = {}
        for dom in conn.listAllDomains():
            name = dom.name()
            uuid = dom.UUIDString()
            if uuids:
                label = next((f"step1:{n}" for n, u in uuids.items() if u == uuid), f"new:{uuid}")
            else:
                label = f"step1:{name}"
            state, _max_kib, live_kib, live_vcpus, _ = dom.info()
            xml = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            vcpu = xml.find("vcpu")
            max_vcpus = int(vcpu.text or 0) if vcpu is not None else None
            vcpus = int(vcpu.get("current") or max_vcpus or 0) if vcpu is not None else None
            running = state == libvirt.VIR_DOMAIN_RUNNING
            guests[name] = {
                "uuid": label,
                "state": _STATES.get(state, str(state)),
                "memory": _kib(xml, "memory"),  # the ceiling (maxMemory)
                "currentMemory": _kib(xml, "currentMemory"),
                "vcpus": vcpus,
                "maxVcpus": max_vcpus,
                "liveVcpus": live_vcpus if running else None,
                # Information only (compared between the runs, not with the declaration):
                # a guest without a balloon driver keeps its maximum (DESIGN.md).
                "liveMemory": live_kib if running else None,
            }
        networks: dict[str, Any] = {}
        for net in conn.listAllNetworks():
            xml = etree.fromstring(net.XMLDesc(0))
            ip, bridge = xml.find("ip"), xml.find("bridge")
            networks[net.name()] = {
                "active": bool(net.isActive()),
                "address": ip.get("address") if ip is not None else None,
                "bridge": bridge.get("name") if bridge is not None else None,
            }
        pools: dict[str, Any] = {}
        for pool in conn.listAllStoragePools():
            xml = etree.fromstring(pool.XMLDesc(0))
            active = bool(pool.isActive())
            pools[pool.name()] = {
                "active": active,
                "path": xml.findtext("target/path"),
                # without the pool's ownership record (.virtsync-owner-INSTANCE: pools have no
                # <metadata>, DESIGN.md)
                "volumes": sorted(v for v in pool.listVolumes() if not v.startswith(".virtsync-"))
                if active else [],
            }
        return {"guests": guests, "networks": networks, "pools": pools}
    finally:
        conn.close()


def fleet_state(env: Env) -> dict[str, Any]:
    return {name: host_state(host, env.uuids) for name, host in env.hosts.items()}


def expected_state(step: Step) -> dict[str, Any]:
    """The observed state (without the live memory) that step declares."""
    out: dict[str, Any] = {}
    for host in ("a", "b"):
        guests = {}
        for g in step.guests:
            if g.host != host:
                continue
            guests[g.name] = {
                "uuid": f"step1:{g.name}",
                "state": "running" if g.running else "shut off",
                "memory": (g.max_memory or g.memory) * 1024,
                "currentMemory": g.memory * 1024,
                "vcpus": g.vcpus,
                "maxVcpus": g.max_vcpus or g.vcpus,
                "liveVcpus": g.vcpus if g.running else None,
            }
        out[host] = {
            "guests": guests,
            "networks": {NET: {"active": True, "address": f"{SUBNETS[host]}.1", "bridge": BRIDGE}},
            "pools": {POOL: {"active": True, "path": POOL_PATH, "volumes": sorted(step.volumes[host])}},
        }
    return out


def _without_live_memory(state: dict[str, Any]) -> dict[str, Any]:
    return {h: {**s, "guests": {n: {k: v for k, v in g.items() if k != "liveMemory"}
                                for n, g in s["guests"].items()}} for h, s in state.items()}


def state_diff(actual: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Readable differences, one line each: HOST kind NAME: field actual != expected."""
    out = []
    for host in sorted(set(actual) | set(expected)):
        for kind in ("guests", "networks", "pools"):
            have = actual.get(host, {}).get(kind, {})
            want = expected.get(host, {}).get(kind, {})
            for name in sorted(set(have) | set(want)):
                if name not in want:
                    out.append(f"host {host} {kind} {name}: present {have[name]}, not expected")
                elif name not in have:
                    out.append(f"host {host} {kind} {name}: missing (expected {want[name]})")
                else:
                    for k in sorted(set(have[name]) | set(want[name])):
                        if have[name].get(k) != want[name].get(k):
                            out.append(f"host {host} {kind} {name}: {k} is {have[name].get(k)!r}, "
                                       f"expected {want[name].get(k)!r}")
    return out


def reached(env: Env, step: Step) -> list[str]:
    """Empty once the hosts show what step declares; else what still differs."""
    return state_diff(_without_live_memory(fleet_state(env)), expected_state(step))


# --------------------------------------------------------------------------------- drivers


class Driver(Protocol):
    name: str

    def start(self, env: Env, log_dir: Path) -> None: ...

    def converge(self, env: Env, step: Step) -> Ops:
        """Write the spec file of step, bring the hosts there; the (op, name) taken."""
        ...

    def stop(self) -> None: ...


class ApplyDriver:
    name = "apply"

    def start(self, env: Env, log_dir: Path) -> None:
        return

    def converge(self, env: Env, step: Step) -> Ops:
        write_specs(env, step)
        out = ok(virtsync("apply", str(env.specs), "--yes", "--prune", FORCE, "--format", "json",
                          timeout=300))
        changes = json.loads(out)
        failed = [o for o in changes["outcomes"] if o["status"] == "failed"]
        assert not failed, f"apply at step {step.title!r}: failed outcomes {failed}"
        # converged: a second look plans nothing
        assert "No changes" in ok(virtsync("plan", str(env.specs), "--prune"))
        return Counter((o["op"], o["name"]) for o in changes["outcomes"])

    def stop(self) -> None:
        return


class Stuck(Exception):
    """The service rests, content, in a state the step does not declare."""


class ServeDriver:
    name = "serve"

    def __init__(self) -> None:
        self.svc: ServeProcess | None = None

    def start(self, env: Env, log_dir: Path) -> None:
        # The service starts on the Host documents alone: every step is an edit it reacts to.
        write_specs(env, None)
        self.svc = ServeProcess([str(env.specs), "--prune", FORCE, "--resync", "1h"], log_dir / "serve.log")
        self.svc.start()
        self._wait(lambda: (self.svc is not None and self.svc.get("/readyz", raw=True) == b"ready\n"),
                   60, "the service ready on the Host documents")

    def _actions(self) -> list[dict[str, Any]]:
        assert self.svc is not None
        return [e for e in self.svc.log_events() if e.get("event") == "action"]

    def _wait(self, cond: Callable[[], Any], timeout: float, what: str,
              detail: Callable[[], str] = lambda: "") -> None:
        assert self.svc is not None and self.svc.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                if cond():
                    return
            except (OSError, libvirt.libvirtError, AssertionError, KeyError, TypeError):
                pass  # a host or the service may not answer yet
            if self.svc.proc.poll() is not None:
                raise AssertionError(f"virtsync serve exited ({self.svc.proc.returncode}) waiting for "
                                     f"{what}\n{self.svc.logs()[-6000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"serve: timed out after {timeout:.0f}s waiting for {what}\n{detail()}")
            time.sleep(0.5)

    def _not_in_sync(self, step: Step) -> list[str]:
        """Empty once /status shows exactly the step's objects, all in sync, no host errors."""
        assert self.svc is not None
        doc = self.svc.status()
        want = {(h, "Network", NET) for h in ("a", "b")} | {(h, "StoragePool", POOL) for h in ("a", "b")}
        want |= {(g.host, "Guest", g.name) for g in step.guests}
        have = {}
        problems = []
        for h in doc["hosts"]:
            if h.get("error"):
                problems.append(f"host {h['host']}: error {h['error']}")
            for o in h["objects"]:
                have[(o["host"], o["kind"], o["name"])] = o
        for key in sorted(set(have) | want):
            o = have.get(key)
            if o is None:
                problems.append(f"/status lacks {key}")
            elif key not in want:
                problems.append(f"/status shows {key} (not in the specs): {o['status']} {o.get('message', '')}")
            elif o["status"] != "in-sync":
                problems.append(f"/status {key}: {o['status']} {o.get('message', '')} "
                                f"changes={o.get('changes')}")
        if doc["service"]["queueDepth"]:
            problems.append(f"queue depth {doc['service']['queueDepth']}")
        return problems

    def converge(self, env: Env, step: Step) -> Ops:
        svc = self.svc
        assert svc is not None
        seen = len(self._actions())  # counted before the edit: all that follows is this step's
        logged = len(svc.log_events())
        write_specs(env, step)

        def explain() -> str:
            try:
                diff = reached(env, step)
            except Exception as exc:
                diff = [f"(cannot read the hosts: {exc!r})"]
            try:
                status = self._not_in_sync(step)
            except Exception as exc:
                status = [f"(no /status: {exc!r})"]
            acts = [str({k: e.get(k) for k in ("host", "op", "name", "outcome", "detail")})
                    for e in self._actions()[seen:]]
            return ("host state differs from the step's declaration:\n  " + "\n  ".join(diff or ["(none)"])
                    + "\n/status:\n  " + "\n  ".join(status or ["(in sync)"])
                    + "\naction log lines of this step:\n  " + "\n  ".join(acts or ["(none)"])
                    + "\nlog tail:\n" + svc.logs()[-4000:])

        stuck = {"actions": -1, "since": time.monotonic()}

        def done() -> bool:
            # An internal error of the service (a bug, not a host failure) is retried with
            # backoff for ever: no use waiting for it.
            crashes = [e for e in svc.log_events()[logged:] if e.get("event") == "reconcile crashed"]
            if crashes:
                raise Stuck(f"serve: step {step.title!r}: reconcile crashed: {crashes[0]}\n{explain()}")
            diff, status = reached(env, step), self._not_in_sync(step)
            if not diff and not status:
                return True
            n = len(self._actions())
            if status or n != stuck["actions"]:  # still working (or says it is)
                stuck.update(actions=n, since=time.monotonic())
            elif time.monotonic() - stuck["since"] > STUCK:
                raise Stuck(f"serve: step {step.title!r}: /status says all is in sync and nothing happened "
                            f"for {STUCK:.0f}s, but the hosts differ from the declaration\n{explain()}")
            return False

        self._wait(done, SERVE_STEP_TIMEOUT,
                   f"step {step.title!r}: the hosts in the declared state and /status in sync", explain)
        # Quiet: no new action for QUIET seconds with an empty queue (late event-driven
        # reconciles must change nothing, and their actions would count for this step).
        last, since = len(self._actions()), time.monotonic()
        deadline = time.monotonic() + 60
        while time.monotonic() - since < QUIET:
            assert time.monotonic() < deadline, f"serve never settles after step {step.title!r}\n{explain()}"
            time.sleep(0.5)
            n = len(self._actions())
            if n != last or svc.status()["service"]["queueDepth"]:
                last, since = n, time.monotonic()
        assert not reached(env, step) and not self._not_in_sync(step), (
            f"serve: step {step.title!r} undone after it was reached\n{explain()}")
        mine = self._actions()[seen:]
        failed = [e for e in mine if e.get("outcome") == "failed"]
        assert not failed, f"serve at step {step.title!r}: failed actions {failed}"
        return Counter((str(e["op"]), str(e["name"])) for e in mine)

    def stop(self) -> None:
        if self.svc is not None:
            self.svc.stop()  # SIGTERM to its pid, then SIGKILL after 60 s


# ------------------------------------------------------------------------------- the runs


@dataclass
class StepRecord:
    title: str
    state: dict[str, Any]
    ops: Ops


# driver name → its steps, so the second run of this process is compared with the first.
RUNS: dict[str, list[StepRecord]] = {}


def _compare_with_other_runs(driver: str, i: int, rec: StepRecord) -> None:
    for other, steps in RUNS.items():
        if other == driver or len(steps) <= i:
            continue
        theirs = steps[i]
        diff = state_diff(rec.state, theirs.state)
        assert not diff, (f"step {i + 1} ({rec.title}): {driver} and {other} reached different states:\n  "
                          + "\n  ".join(diff))
        # No step legitimately differs: the service's extra reconciles (libvirt events after
        # a start, a migration or an undefine) must find nothing to do.
        assert rec.ops == theirs.ops, (
            f"step {i + 1} ({rec.title}): actions differ: {driver} {sorted(rec.ops.elements())} vs "
            f"{other} {sorted(theirs.ops.elements())}")


def run_scenario(driver: Driver, env: Env, log_dir: Path) -> None:
    records: list[StepRecord] = RUNS.setdefault(driver.name, [])
    records.clear()
    digest = boot_id = ""
    driver.start(env, log_dir)
    try:
        for i, step in enumerate(STEPS):
            started = time.monotonic()
            ops = driver.converge(env, step)
            took = time.monotonic() - started
            print(f"[{driver.name}] step {i + 1} ({step.title}): {took:.1f}s, ops {sorted(ops.elements())}")
            if i == 0:
                env.uuids = {g: env.a.virsh("domuuid", g).strip() for g in ("cold1", "web1", "lin1")}
            diff = reached(env, step)
            assert not diff, (f"[{driver.name}] step {i + 1} ({step.title}): the hosts are not in the "
                              "declared state:\n  " + "\n  ".join(diff))
            missing = [op for op in step.must if not ops[op]]
            unwanted = [op for op in step.must_not if ops[op]]
            assert not missing and not unwanted, (
                f"[{driver.name}] step {i + 1} ({step.title}): actions {sorted(ops.elements())}; "
                f"missing {missing}, unwanted {unwanted}")
            rec = StepRecord(step.title, fleet_state(env), ops)
            _compare_with_other_runs(driver.name, i, rec)
            records.append(rec)
            if i == 0:
                # known bytes in cold1's data disk, written where the host keeps the volume
                disk = env.a.path_outside(f"{POOL_PATH}/{COLD_VOLUME}")
                with disk.open("r+b") as f:
                    f.write(os.urandom(4096) + b"virtsync one path\n" * 1000)
                digest = hashlib.sha256(disk.read_bytes()).hexdigest()
                wait_for_agent(env.a, "lin1", timeout=120)
                boot_id = _boot_id(env.a, "lin1")
            if step.title.startswith("live-migrate"):
                wait_for_agent(env.b, "lin1", timeout=60)
                assert _boot_id(env.b, "lin1") == boot_id, "lin1 rebooted: the migration was not live"
    finally:
        driver.stop()
    # the end: each guest once, on B, under its UUID of step 1; web1 nowhere
    a_names = env.a.virsh("list", "--all", "--name").split()
    b_names = env.b.virsh("list", "--all", "--name").split()
    assert a_names == [], f"guests left on A: {a_names}"
    assert sorted(b_names) == ["cold1", "lin1"], b_names
    for name in ("cold1", "lin1"):
        assert env.b.virsh("domuuid", name).strip() == env.uuids[name], f"{name} has a new UUID on B"
    moved = env.b.path_outside(f"{POOL_PATH}/{COLD_VOLUME}")
    assert hashlib.sha256(moved.read_bytes()).hexdigest() == digest, "cold1's disk on B lost its bytes"
    assert env.b.virsh("domstate", "lin1").strip() == "running"
    wait_for_agent(env.b, "lin1", timeout=60)
    assert _boot_id(env.b, "lin1") == boot_id, "lin1 rebooted"


@pytest.fixture
def env(hermetic_host_factory: HostFactory, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Env]:
    a = hermetic_host_factory("a", listen_tcp=True)
    b = hermetic_host_factory("b", listen_tcp=True)
    driver = request.node.callspec.params["driver"]
    tag, subnet = {"apply": ("opa", "10.97.1"), "serve": ("ops", "10.97.2")}[driver]
    addr_a, addr_b = join(a, b, tag, subnet)
    assert a.run_in_netns(["ping", "-c", "1", "-W", "2", addr_b]).returncode == 0
    kernel, initrd = ensure_test_guest()  # the suite's cached build (scripts/build-test-guest.sh)
    boot = tmp_path / "boot"
    yield Env(a, b, {"a": addr_a, "b": addr_b}, link_or_copy(kernel, boot), link_or_copy(initrd, boot),
              tmp_path / "specs")


DRIVERS: dict[str, Callable[[], Driver]] = {"apply": ApplyDriver, "serve": ServeDriver}


@pytest.mark.parametrize("driver", ["apply", "serve"])  # apply first: serve is compared with it
def test_one_scenario_reaches_the_same_states_through_apply_and_serve(
    driver: str, env: Env, tmp_path: Path,
) -> None:
    run_scenario(DRIVERS[driver](), env, tmp_path)
