"""Engine.reconcile(scope) on libvirt's test driver: failures stay with their action, moves are
planned in every scope that sees both hosts, and status after execute is observed again."""

from __future__ import annotations

from pathlib import Path

import libvirt

from controller.engine import Engine, Observation, Scope
from controller.model.state import ResourceKey
from controller.plan.actions import DeleteGuest, Move, Plan, Start, UpdateGuest
from controller.spec.loader import load_specs
from controller.spec.specset import SpecSet
from tests.integration.conftest import VirtsyncCli, connection, guest_doc, host_doc, write_host, write_specs


def _load(path: Path) -> SpecSet:
    result = load_specs([str(path)])
    assert not result.errors, [d.render() for d in result.errors]
    return result.specs


def test_an_action_whose_libvirt_call_fails_is_a_failed_outcome_and_the_hosts_other_actions_run(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs_dir = tmp_path / "specs"
    write_specs(specs_dir, [host_doc(uri), guest_doc("g1", memory="64MiB", maxMemory="128MiB"),
                            guest_doc("g2", memory="64MiB", state="stopped")])
    assert virtsync("apply", specs_dir, "--yes").code == 0
    write_specs(specs_dir, [host_doc(uri), guest_doc("g1", memory="96MiB", maxMemory="128MiB"),
                            guest_doc("g2", memory="64MiB", state="running")])
    conn = connection(uri)

    def undefine_g2_first(plan: Plan, _obs: Observation) -> Plan:
        assert any(isinstance(a, Start) and a.key.name == "g2" for a in plan.actions)
        conn.lookupByName("g2").undefine()  # another writer, between plan and execute
        return plan

    result = Engine().reconcile(_load(specs_dir), gate=undefine_g2_first)
    assert result.changes is not None
    outcomes = {(o.op, o.key.name): o for o in result.changes.outcomes}
    failed = outcomes[("start", "g2")]
    assert failed.status == "failed"
    assert "look up guest g2" in failed.detail and "not found" in failed.detail.lower()
    assert failed.retryable  # the object vanished: observe again, then retry
    assert outcomes[("update", "g1")].status == "updated"  # the host's other action still ran
    assert conn.lookupByName("g1").info()[2] == 96 * 1024  # current memory, KiB
    # The status after execute comes from observing again: g1 in sync, g2 missing.
    assert result.after is not None
    after = {d.key.name: d.status for hp in result.after.hosts for d in hp.drift}
    assert after == {"g1": "in-sync", "g2": "missing"}


def _two_hosts(tmp_path: Path, guest_host: str) -> tuple[Path, str, str]:
    uri_a = write_host(tmp_path, name="a.xml")
    uri_b = write_host(tmp_path, name="b.xml")
    specs_dir = tmp_path / "specs"
    write_specs(specs_dir, [host_doc(uri_a, "a"), host_doc(uri_b, "b"),
                            guest_doc("cold1", host=guest_host, memory="64MiB", state="stopped")])
    return specs_dir, uri_a, uri_b


def test_a_guest_moved_to_another_host_is_moved_in_the_scope_of_either_host_or_the_guest(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    specs_dir, uri_a, uri_b = _two_hosts(tmp_path, "a")
    assert virtsync("apply", specs_dir, "--yes").code == 0
    uuid = connection(uri_a, "a").lookupByName("cold1").UUIDString()
    _two_hosts(tmp_path, "b")
    specs = _load(specs_dir)
    engine = Engine()
    for scope in (Scope.of_hosts("a"), Scope.of_hosts("b"), Scope.of_object(ResourceKey("b", "Guest", "cold1"))):
        plan = engine.reconcile(specs, scope, prune=True).plan
        moves = [a for a in plan.actions if isinstance(a, Move)]
        assert [(m.key.host, m.source) for m in moves] == [("b", "a")], (scope, [a.label for a in plan.actions])
        assert not [a for a in plan.actions if isinstance(a, DeleteGuest)], scope  # never pruned on a
    result = engine.reconcile(specs, Scope.of_object(ResourceKey("b", "Guest", "cold1")),
                              gate=lambda plan, _obs: plan)
    assert result.changes is not None and not result.changes.failed, result.changes.as_json()
    assert connection(uri_b, "b").lookupByName("cold1").UUIDString() == uuid  # the same guest
    names_a = [d.name() for d in connection(uri_a, "a").listAllDomains(0)]
    assert "cold1" not in names_a
    assert result.after is not None and not result.after.has_changes


def test_a_move_is_left_out_while_another_writer_holds_its_source_host(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    """The move is an action of the target host but empties the source: a writer holding only the
    target must not take the guest from under the source's writer."""
    from controller.coordination import HostLocks

    specs_dir, uri_a, uri_b = _two_hosts(tmp_path, "a")
    assert virtsync("apply", specs_dir, "--yes").code == 0
    _two_hosts(tmp_path, "b")
    specs = _load(specs_dir)
    url = f"file://{tmp_path / 'coord'}"
    other = HostLocks(url, holder="virtsync apply")
    engine = Engine(locks=HostLocks(url, holder="virtsync serve", timeout=1))
    scope = Scope.of_object(ResourceKey("b", "Guest", "cold1"))
    with other.holding({"a": uri_a}):
        result = engine.reconcile(specs, scope, gate=lambda plan, _obs: plan)
    assert result.busy == {"a": result.busy["a"]} and result.busy["a"].startswith("virtsync apply pid ")
    assert result.changes is not None and not result.changes.outcomes  # nothing was carried out
    assert "cold1" in [d.name() for d in connection(uri_a, "a").listAllDomains(0)]
    # Free again, the same reconcile moves it.
    result = engine.reconcile(specs, scope, gate=lambda plan, _obs: plan)
    assert not result.busy and result.changes is not None and not result.changes.failed
    assert connection(uri_b, "b").lookupByName("cold1").name() == "cold1"


def test_lookups_on_other_hosts_are_narrowed_by_their_domain_names_and_forgotten_on_events(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    """A guest missing on its host is looked up only where a domain of its name is (the list of
    names kept from observing each host); a host's lifecycle event makes it list them again."""
    specs_dir, _, _ = _two_hosts(tmp_path, "b")
    specs = _load(specs_dir)
    engine = Engine()
    scope = Scope.of_object(ResourceKey("b", "Guest", "cold1"))
    engine.observe(specs)  # both hosts listed: no cold1 anywhere
    plan = engine.reconcile(specs, scope).plan
    assert [a.op for a in plan.actions] == ["define"]  # to be created on b
    # It appears on a (another writer), after a's names were listed…
    conn_a = engine.connection(specs.host("a")).get()  # type: ignore[arg-type]
    conn_a.defineXML("<domain type='test'><name>cold1</name><memory>65536</memory>"
                     "<os><type>hvm</type></os></domain>")
    # … until a's lifecycle event (the service forgets a's names on it): then it is found there
    # and, not being this instance's, refused rather than created a second time.
    engine.forget_names("a")
    plan = engine.reconcile(specs, scope).plan
    assert not plan.actions
    assert any("exists on host a" in p.message for hp in plan.hosts for p in hp.problems), plan


def test_a_guest_declared_for_a_host_that_is_down_is_not_pruned_from_its_old_host(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    specs_dir, uri_a, _ = _two_hosts(tmp_path, "a")
    assert virtsync("apply", specs_dir, "--yes").code == 0
    write_specs(specs_dir, [host_doc(uri_a, "a"), host_doc("test:///nonexistent/host.xml", "b"),
                            guest_doc("cold1", host="b", memory="64MiB", state="stopped")])
    plan = Engine().reconcile(_load(specs_dir), Scope.of_hosts("a"), prune=True).plan
    assert not [a for a in plan.actions if isinstance(a, DeleteGuest | UpdateGuest)]
    assert connection(uri_a, "a").lookupByName("cold1").isPersistent()


def test_an_unexpected_error_in_an_action_is_mapped_in_one_place() -> None:
    from controller.errors import ObjectNotFound, OperationFailed
    from controller.hypervisor.errors import as_virtsync_error

    err = libvirt.libvirtError("Domain not found")
    err.err = (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_FROM_DOMAIN, "Domain not found: g", 2, "g", None, None,
               -1, -1)
    mapped = as_virtsync_error(err, "h1", "start Guest g")
    assert isinstance(mapped, ObjectNotFound) and mapped.retryable and "start Guest g" in str(mapped)
    bug = as_virtsync_error(KeyError("x"), "h1", "update Guest g")
    assert isinstance(bug, OperationFailed) and not bug.retryable and "internal error: KeyError" in str(bug)


def test_a_guest_is_never_created_where_another_managed_host_has_one_of_its_name(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    from tests.integration.conftest import unmanaged_domain

    uri_a = write_host(tmp_path, unmanaged_domain("web1", running=False), name="a.xml")
    uri_b = write_host(tmp_path, name="b.xml")
    specs_dir = tmp_path / "specs"
    write_specs(specs_dir, [host_doc(uri_a, "a"), host_doc(uri_b, "b"),
                            guest_doc("web1", host="b", memory="64MiB", state="stopped")])
    for scope in (Scope.everything(), Scope.of_object(ResourceKey("b", "Guest", "web1"))):
        plan = Engine().reconcile(_load(specs_dir), scope).plan
        assert not [a for a in plan.actions if a.key.name == "web1"], scope
        errors = [p.message for hp in plan.hosts for p in hp.errors]
        assert any("exists on host a" in m and "second one on b" in m for m in errors), errors
    assert virtsync("apply", specs_dir, "--yes").code == 1
    assert [d.name() for d in connection(uri_b, "b").listAllDomains(0)] == []
