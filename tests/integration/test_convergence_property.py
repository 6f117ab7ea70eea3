"""Property: for any valid spec set, apply converges (plan empty) and a second apply is a no-op."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.engine import Engine
from controller.hypervisor.connection import ConnectionPool
from controller.spec.loader import load_specs
from tests.integration.conftest import guest_doc, host_doc, network_doc, write_host, write_specs

MEMORY_MIB = [64, 96, 128, 192, 256]
SpecPair = tuple[list[dict[str, Any]], list[dict[str, Any]]]  # (networks, guests)


@st.composite
def networks(draw: st.DrawFn, at_least: int = 0) -> list[dict[str, Any]]:
    count = draw(st.integers(at_least, 2))
    out = []
    for i in range(count):
        third = draw(st.integers(0, 255))
        base = f"10.{100 + i}.{third}"  # distinct second octets: subnets never overlap
        out.append({"name": f"net{i}", "base": base, "autostart": draw(st.booleans()),
                    "dhcp": draw(st.booleans())})
    return out


@st.composite
def guests(draw: st.DrawFn, nets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    count = draw(st.integers(0, 6))
    out = []
    for i in range(count):
        vcpus = draw(st.integers(1, 4))
        memory = draw(st.sampled_from(MEMORY_MIB))
        spec: dict[str, Any] = {"vcpus": vcpus, "memory": f"{memory}MiB",
                                "state": draw(st.sampled_from(["running", "stopped", "paused"])),
                                "autostart": draw(st.booleans())}
        if draw(st.booleans()):
            spec["maxVcpus"] = vcpus + draw(st.integers(0, 3))
        if draw(st.booleans()):
            ceiling = draw(st.sampled_from([m for m in MEMORY_MIB if m >= memory]))
            spec["maxMemory"] = f"{ceiling}MiB"
        nics = []
        for j, net in enumerate(nets):
            for k in range(draw(st.integers(0, 2))):
                nic = {"network": net["name"]}
                if draw(st.integers(0, 3)):  # mostly with a MAC; else libvirt makes one
                    nic["mac"] = f"52:54:00:{i:02x}:{j:02x}:{k:02x}"
                if draw(st.booleans()):
                    nic["model"] = draw(st.sampled_from(["virtio", "e1000"]))
                nics.append(nic)
        if nics:
            spec["interfaces"] = draw(st.permutations(nics))
        out.append(spec)
    return out


@st.composite
def spec_sets(draw: st.DrawFn, at_least: int = 0) -> SpecPair:
    nets = draw(networks(at_least))
    return nets, draw(guests(nets))


@st.composite
def transitions(draw: st.DrawFn) -> tuple[SpecPair, SpecPair]:
    """Two spec sets; the second keeps the first's networks (a network still in use by a
    running guest is refused deletion, by design, until its guests let go of it)."""
    before = draw(spec_sets())
    return before, draw(spec_sets(at_least=len(before[0])))


def _documents(uri: str, nets: list[dict[str, Any]], gspecs: list[dict[str, Any]],
               leases: list[bool]) -> list[dict[str, Any]]:
    docs = [host_doc(uri)]
    for n in nets:
        ipv4: dict[str, Any] = {"address": f"{n['base']}.1/24"}
        if n["dhcp"]:
            hosts = []
            nics = [nic for g in gspecs for nic in g.get("interfaces", [])
                    if nic["network"] == n["name"] and "mac" in nic]
            for k, (nic, wanted) in enumerate(zip(nics, leases, strict=False)):
                if wanted:
                    hosts.append({"mac": nic["mac"], "ip": f"{n['base']}.{100 + k}"})
            ipv4["dhcp"] = {"start": f"{n['base']}.10", "end": f"{n['base']}.99", "hosts": hosts}
        docs.append(network_doc(n["name"], mode="nat", bridge=f"vsprop{n['name'][-1]}",
                                ipv4=ipv4, autostart=n["autostart"]))
    for i, spec in enumerate(gspecs):
        docs.append(guest_doc(f"g{i}", **spec))
    return docs


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(specs=spec_sets(), leases=st.lists(st.booleans(), min_size=24, max_size=24))
def test_apply_converges_and_a_second_apply_changes_nothing(
        specs: SpecPair, leases: list[bool]) -> None:
    nets, gspecs = specs
    with tempfile.TemporaryDirectory(prefix="virtsync-prop-") as tmp:
        root = Path(tmp)
        uri = write_host(root)  # a fresh host per example
        path = write_specs(root / "specs", _documents(uri, nets, gspecs, leases))
        loaded = load_specs([path])
        assert not loaded.errors, [d.render() for d in loaded.errors]
        spec_set = loaded.specs
        engine = Engine(pool=ConnectionPool())  # a fresh connection: a fresh test-driver state
        try:
            obs = engine.observe(spec_set)
            assert not obs.failed
            plan = engine.plan(spec_set, obs)
            assert not plan.has_errors, [p.message for h in plan.hosts for p in h.problems]
            first = engine.execute(plan, spec_set, obs)
            assert not first.failed, [(o.op, o.key.name, o.detail) for o in first.failed]

            obs2 = engine.observe(spec_set)
            again = engine.plan(spec_set, obs2)
            leftover = [(a.op, a.key.name, [c.as_json() for c in a.changes]) for a in again.actions]
            assert not again.has_changes, leftover
            assert not again.has_errors
            assert not any(h.pending for h in again.hosts), "a fresh apply leaves nothing pending"
            assert all(o.status == "in-sync" for h in again.hosts for o in h.drift)

            second = engine.execute(again, spec_set, obs2)
            counts = second.counts()
            assert counts["created"] == counts["updated"] == counts["deleted"] == 0, counts
            assert counts["failed"] == counts["skipped"] == 0, counts
            assert counts["unchanged"] == len(nets) + len(gspecs)
            fingerprint = engine.observe(spec_set).states["kvm1"].fingerprint
            assert fingerprint == obs2.states["kvm1"].fingerprint, "second apply touched nothing"
        finally:
            engine.close()


def _converge(engine: Engine, path: Path, prune: bool = False) -> None:
    loaded = load_specs([path])
    assert not loaded.errors, [d.render() for d in loaded.errors]
    spec_set = loaded.specs
    obs = engine.observe(spec_set)
    plan = engine.plan(spec_set, obs, prune=prune)
    assert not plan.has_errors, [p.message for h in plan.hosts for p in h.problems]
    changes = engine.execute(plan, spec_set, obs)
    assert not changes.failed, [(o.op, o.key.name, o.detail) for o in changes.failed]


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(pair=transitions(), leases=st.lists(st.booleans(), min_size=24, max_size=24))
def test_any_spec_set_converges_from_any_other(pair: tuple[SpecPair, SpecPair],
                                               leases: list[bool]) -> None:
    before, after = pair
    with tempfile.TemporaryDirectory(prefix="virtsync-prop-") as tmp:
        root = Path(tmp)
        uri = write_host(root)
        engine = Engine(pool=ConnectionPool())
        try:
            first = write_specs(root / "a", _documents(uri, *before, leases))
            _converge(engine, first)
            nets, gspecs = after
            # Restarts allowed, so nothing may stay pending.
            gspecs = [{**g, "restartPolicy": "onChange", "shutdownTimeout": "1s"} for g in gspecs]
            second = write_specs(root / "b", _documents(uri, nets, gspecs, leases))
            _converge(engine, second, prune=True)
            spec_set = load_specs([second]).specs
            again = engine.plan(spec_set, engine.observe(spec_set), prune=True)
            leftover = [(a.op, a.key.name, [c.as_json() for c in a.changes]) for a in again.actions]
            assert not again.has_changes, leftover
            pending = [(p.key.name, [c.as_json() for c in p.changes])
                       for h in again.hosts for p in h.pending]
            assert not pending
        finally:
            engine.close()
