"""libvirt's state reason through observe, plan and apply on the test driver: a pause a user
asked for is still resumed; observe names a pause libvirt did not ask for, and no reason for a
running guest."""

from __future__ import annotations

from pathlib import Path

import libvirt

from controller.hypervisor.observe import observe_guests
from tests.integration.conftest import VirtsyncCli, connection, guest_doc, host_doc, write_host, write_specs


def _plan_ops(virtsync: VirtsyncCli, specs: Path) -> dict[str, dict[str, object]]:
    run = virtsync("plan", specs, "--format", "json")
    assert run.code == 2, run.err
    return {a["name"]: a for h in run.json()["hosts"] for a in h["actions"]}


def test_a_pause_a_user_asked_for_is_still_resumed(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = write_specs(tmp_path / "specs", [host_doc(uri), guest_doc("a", memory="64MiB")])
    assert virtsync("apply", specs, "--yes").code == 0
    conn = connection(uri)
    conn.lookupByName("a").suspend()  # VIR_DOMAIN_PAUSED_USER
    ops = _plan_ops(virtsync, specs)
    assert ops["a"]["op"] == "resume", ops
    assert virtsync("apply", specs, "--yes").code == 0
    assert conn.lookupByName("a").state()[0] == 1
    assert virtsync("plan", specs).code == 0


def test_observe_names_the_state_reason_of_a_guest_libvirt_did_not_pause(tmp_path: Path) -> None:
    """A domain the test driver loads paused (runstate 3) has reason PAUSED_UNKNOWN."""
    ns = "http://libvirt.org/schemas/domain/test/1.0"
    uri = write_host(tmp_path, f"<domain type='test' xmlns:test='{ns}'><name>odd</name><memory unit='MiB'>64"
                               "</memory><os><type>hvm</type></os><test:runstate>3</test:runstate></domain>"
                               f"<domain type='test'><name>fine</name><memory unit='MiB'>64</memory>"
                               "<os><type>hvm</type></os></domain>")
    conn = libvirt.open(uri)
    try:
        guests = observe_guests(conn, "h")
    finally:
        conn.close()
    assert guests["odd"].state == "paused" and guests["odd"].fault == "unknown-pause"
    assert "a reason libvirt does not know" in guests["odd"].reason
    assert guests["fine"].state == "running" and guests["fine"].fault is None and guests["fine"].reason == ""
