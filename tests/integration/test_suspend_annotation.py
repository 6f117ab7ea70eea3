"""`virtsync/suspend: "true"` leaves any object alone — guests, networks and pools alike: its drift is
reported (as suspended), nothing of it is changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.conftest import VirtsyncCli, guest_doc, host_doc, network_doc, write_host, write_specs

SUSPEND = {"virtsync/suspend": "true"}


def _suspended(doc: dict[str, Any]) -> dict[str, Any]:
    doc["metadata"]["annotations"] = dict(SUSPEND)
    return doc


def _pool_doc(name: str, path: str) -> dict[str, Any]:
    return {"apiVersion": "virtsync/v1", "kind": "StoragePool", "metadata": {"name": name},
            "spec": {"host": "kvm1", "path": path}}


def test_suspended_networks_pools_and_guests_are_reported_and_never_changed(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = tmp_path / "specs"
    net = network_doc("lab", mode="nat", bridge="vs-sus0",
                      ipv4={"address": "192.168.170.1/24", "dhcp": {"start": "192.168.170.10",
                                                                   "end": "192.168.170.50"}})
    write_specs(specs, [host_doc(uri), _suspended(net), _suspended(_pool_doc("imgs", "/var/lib/libvirt/images/s")),
                        _suspended(guest_doc("g1", memory="64MiB"))])
    plan = virtsync("plan", specs, "--format", "json")
    assert plan.code == 0, plan.out + plan.err  # nothing to do: suspended objects are only reported
    assert all(not h["actions"] for h in plan.json()["hosts"])
    drift = virtsync("drift", specs, "--format", "json")
    assert drift.code == 2, drift.err
    objects = {o["name"]: o for h in drift.json()["hosts"] for o in h["objects"]}
    for name in ("lab", "imgs", "g1"):
        assert objects[name]["status"] == "missing" and objects[name]["reconcile"] == "suspended", objects[name]
    assert virtsync("apply", specs, "--yes").code == 0
    listed = virtsync("drift", specs, "--format", "json").json()
    assert {o["name"]: o["status"] for h in listed["hosts"] for o in h["objects"]} == {
        "lab": "missing", "imgs": "missing", "g1": "missing"}


def test_a_suspended_network_keeps_its_out_of_band_change(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    from tests.integration.conftest import connection

    uri = write_host(tmp_path)
    specs = tmp_path / "specs"
    net = network_doc("lab", mode="nat", bridge="vs-sus1", autostart=True,
                      ipv4={"address": "192.168.171.1/24"})
    write_specs(specs, [host_doc(uri), net])
    assert virtsync("apply", specs, "--yes").code == 0
    connection(uri).networkLookupByName("lab").setAutostart(0)  # out of band
    write_specs(specs, [host_doc(uri), _suspended(net)])
    assert virtsync("apply", specs, "--yes").code == 0
    assert connection(uri).networkLookupByName("lab").autostart() == 0  # left alone
    drift = virtsync("drift", specs, "--format", "json").json()
    lab = next(o for h in drift["hosts"] for o in h["objects"] if o["name"] == "lab")
    assert lab["status"] == "drift" and lab["reconcile"] == "suspended"
    assert [c["path"] for c in lab["changes"]] == ["/spec/autostart"]
