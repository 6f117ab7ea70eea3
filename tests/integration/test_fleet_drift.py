"""Engine.drift: a fleet's drift planned host by host (only plans kept) is the whole-fleet plan.

Each host is planned as soon as it is observed unless another host's state may change its plan
(a move, a clash of names, a copy left by an interrupted move): those are planned at the end
against a summary of every host. Either way the report is the one reconcile gives.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from controller.engine import Engine, Scope
from controller.plan.actions import Move
from controller.report.drift import DriftReport, render_json, render_text
from controller.spec.loader import load_specs
from controller.spec.specset import SpecSet
from tests.integration.conftest import (
    VirtsyncCli,
    guest_doc,
    host_doc,
    unmanaged_domain,
    write_host,
    write_specs,
)


def _load(path: Path) -> SpecSet:
    result = load_specs([str(path)])
    assert not result.errors, [d.render() for d in result.errors]
    return result.specs


def _fleet(tmp_path: Path, *, moved: bool) -> tuple[Path, dict[str, str]]:
    """Five hosts: a (in sync, an unmanaged domain; with ``moved``, a guest now declared on b),
    b (in sync; the move's target), c (a guest whose name an unmanaged domain on d has), d,
    e (unreachable)."""
    uris = {"a": write_host(tmp_path, unmanaged_domain("hand-made"), name="a.xml"),
            "b": write_host(tmp_path, name="b.xml"),
            "c": write_host(tmp_path, name="c.xml"),
            "d": write_host(tmp_path, unmanaged_domain("web1", running=False), name="d.xml"),
            "e": "test:///nonexistent/e.xml"}
    docs = [host_doc(uri, name) for name, uri in uris.items()]
    docs += [guest_doc("a1", host="a", memory="64MiB", state="running"),
             guest_doc("b1", host="b", memory="64MiB", state="stopped"),
             guest_doc("cold1", host="b" if moved else "a", memory="64MiB", state="stopped"),
             guest_doc("web1", host="c", memory="64MiB", state="stopped"),
             guest_doc("e1", host="e", memory="64MiB")]
    specs_dir = tmp_path / "specs"
    write_specs(specs_dir, docs)
    return specs_dir, uris


def _same_report(streamed: DriftReport, whole: DriftReport) -> None:
    assert render_json(streamed) == render_json(whole)
    assert render_text(streamed) == render_text(whole)
    # A drift report shows no spec digest (a fleet's drift does not compute one).
    assert replace(streamed.plan, spec_digest="") == replace(whole.plan, spec_digest="")


def test_a_fleets_drift_planned_host_by_host_is_the_plan_reconcile_makes_of_the_whole_fleet(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    specs_dir, _ = _fleet(tmp_path, moved=False)
    assert virtsync("apply", specs_dir, "--host", "a", "--host", "b", "--yes").code == 0
    _fleet(tmp_path, moved=True)  # cold1 now declared on b: a move from a
    specs = _load(specs_dir)
    now = datetime.now(UTC)
    engine = Engine()
    streamed = engine.drift(specs, commit="abc", now=now)
    whole = engine.reconcile(specs, commit="abc", now=now)
    assert not streamed.obs.states  # no host's observed state is kept
    assert set(streamed.obs.failed) == {"e"} and set(whole.obs.failed) == {"e"}
    assert [(a.key.host, a.source) for a in streamed.plan.actions if isinstance(a, Move)] == [("b", "a")]
    errors = [p.message for hp in streamed.plan.hosts for p in hp.errors]
    assert any("exists on host d" in m for m in errors), errors  # c's web1: a clash with d's
    assert [h.host for h in streamed.plan.hosts] == ["a", "b", "c", "d", "e"]
    _same_report(DriftReport(streamed.plan, now, "abc"), DriftReport(whole.plan, now, "abc"))


def test_drift_reports_in_sync_unmanaged_and_unreachable_hosts_as_reconcile_does(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    specs_dir, _ = _fleet(tmp_path, moved=False)
    assert virtsync("apply", specs_dir, "--host", "a", "--host", "b", "--yes").code == 0
    specs = _load(specs_dir)
    now = datetime.now(UTC)
    engine = Engine()
    streamed = engine.drift(specs, now=now)
    whole = engine.reconcile(specs, now=now)
    by_host = {hp.host: hp for hp in streamed.plan.hosts}
    assert {o.key.name: o.status for o in by_host["a"].drift} == {"a1": "in-sync", "cold1": "in-sync"}
    assert [k.name for k in by_host["a"].unmanaged] == ["hand-made"]
    assert by_host["e"].error
    _same_report(DriftReport(streamed.plan, now), DriftReport(whole.plan, now))


def test_drift_of_some_hosts_is_the_reconcile_of_those_hosts(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    specs_dir, _ = _fleet(tmp_path, moved=False)
    assert virtsync("apply", specs_dir, "--host", "a", "--yes").code == 0
    specs = _load(specs_dir)
    now = datetime.now(UTC)
    engine = Engine()
    scope = Scope.of_hosts("a", "c")
    streamed = engine.drift(specs, scope, now=now)
    assert [h.host for h in streamed.plan.hosts][:2] == ["a", "c"]  # (and d, looked at for c's web1)
    _same_report(DriftReport(streamed.plan, now), DriftReport(engine.reconcile(specs, scope, now=now).plan, now))


def test_a_running_guests_live_state_is_its_definitions_until_it_changes_live(tmp_path: Path) -> None:
    """The test driver's live XML is the definition plus the domain id (read once, the same
    essence); a live-only change makes it differ, and then it is read on its own."""
    import libvirt

    from controller.hypervisor.observe import observe_guests

    uri = write_host(tmp_path, unmanaged_domain("g1", memory_mib=128))
    engine = Engine()
    specs = _load(write_specs(tmp_path / "specs", [host_doc(uri, "h")]).parent)
    conn = engine.connection(specs.hosts[0]).get()
    g1 = observe_guests(conn, "h")["g1"]
    assert g1.live == g1.persistent and g1.live is not None and g1.domain_id > 0
    conn.lookupByName("g1").setMemoryFlags(64 * 1024, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    g1 = observe_guests(conn, "h")["g1"]
    assert g1.live is not None and g1.persistent is not None
    assert (g1.live.memory, g1.persistent.memory) == (64 * 2**20, 128 * 2**20)


OWNED = ("<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'><name>{name}</name>"
         "<metadata><vs:owner xmlns:vs='https://virtsync.dev/xmlns/owner/v1' instance='default' kind='Guest' "
         "name='{name}' digest='sha256:0'><vs:applied>{{}}</vs:applied></vs:owner></metadata>"
         "<memory unit='MiB'>{mib}</memory><vcpu>1</vcpu><os><type>hvm</type></os>{state}</domain>")
STOPPED = "<test:runstate>5</test:runstate>"

# `virtsync ARGS…` in a fresh process, counting the processes it forks (os.fork), on stderr.
FORK_COUNTING = ("import os, sys\nforks = [0]\nfork = os.fork\n"
                 "def counted():\n    forks[0] += 1\n    return fork()\nos.fork = counted\n"
                 "from controller.cli import main\ncode = main(sys.argv[1:])\n"
                 "print(f'forks={forks[0]}', file=sys.stderr)\nsys.exit(code)\n")


def _fleet_on_disk(tmp_path: Path, *, errors: bool) -> Path:
    """The state in the hosts' XML files (a fresh process sees it): a (in sync, an unmanaged
    domain, cold1 now declared on b: a move), b, c (web1 missing; with ``errors``, d has an
    unmanaged web1: a clash), d, f (a guest whose memory drifted), and with ``errors`` e,
    unreachable."""
    hosts = {"a": OWNED.format(name="a1", mib=64, state="") + OWNED.format(name="cold1", mib=64, state=STOPPED)
             + unmanaged_domain("hand-made"),
             "b": OWNED.format(name="b1", mib=64, state=STOPPED),
             "c": "",
             "d": unmanaged_domain("web1", running=False) if errors else "",
             "f": OWNED.format(name="f1", mib=128, state="")}
    tmp_path.mkdir()
    uris = {name: write_host(tmp_path, body, name=f"{name}.xml") for name, body in hosts.items()}
    if errors:
        uris["e"] = "test:///nonexistent/e.xml"
    docs = [host_doc(uri, name) for name, uri in uris.items()]
    docs += [guest_doc("a1", host="a", memory="64MiB", state="running"),
             guest_doc("b1", host="b", memory="64MiB", state="stopped"),
             guest_doc("cold1", host="b", memory="64MiB", state="stopped"),
             guest_doc("web1", host="c", memory="64MiB", state="stopped"),
             guest_doc("f1", host="f", memory="64MiB", state="running")]
    if errors:
        docs.append(guest_doc("e1", host="e", memory="64MiB"))
    specs_dir = tmp_path / "specs"
    write_specs(specs_dir, docs)
    return specs_dir


def _drift_process(specs_dir: Path, *args: str) -> tuple[int, str, int]:
    """(exit code, report with its times left out, processes forked) of a drift in a fresh process."""
    import re
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", FORK_COUNTING, "drift", str(specs_dir), *args],
                          capture_output=True, text=True, timeout=120, check=False)
    forks = re.search(r"forks=(\d+)", proc.stderr)
    assert forks is not None, proc.stderr
    report = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[.\d]*\+00:00", "TIME", proc.stdout)
    report = re.sub(r"\(after \d+\.\ds\)", "(after Ns)", report)  # how long a host took to fail
    return proc.returncode, report, int(forks.group(1))


def test_a_drift_read_in_several_processes_reports_what_one_process_does(tmp_path: Path) -> None:
    for errors, code in ((True, 1), (False, 2)):
        specs_dir = _fleet_on_disk(tmp_path / str(errors), errors=errors)
        for fmt in ("json", "text", "markdown", "html") if errors else ("json",):
            one = _drift_process(specs_dir, "--format", fmt, "--jobs", "1")
            two = _drift_process(specs_dir, "--format", fmt, "--jobs", "2")
            # the second ran in child processes (2 at a time; one may have been replaced)
            assert one[2] == 0 and two[2] >= 2, (one[2], two[2])
            assert one[0] == two[0] == code, (one[0], two[0])
            assert one[1] == two[1], fmt
            if fmt == "json":
                import json

                doc = json.loads(two[1])
                by_host = {h["host"]: h for h in doc["hosts"]}
                assert list(by_host) == ["a", "b", "c", "d", "f", "e"][:6 if errors else 5]  # spec order
                status = {(h, o["name"]): o for h, host in by_host.items() for o in host["objects"]}
                assert [c["note"] for c in status["b", "cold1"]["changes"]] == ["cold move"]
                assert ("exists on host d" in status["c", "web1"].get("message", "")) == errors
                assert [c["path"] for c in status["f", "f1"]["changes"]] == ["/spec/memory"]
                assert status["a", "a1"]["status"] == status["b", "b1"]["status"] == "in-sync"
                assert bool(by_host.get("e", {}).get("error")) == errors
