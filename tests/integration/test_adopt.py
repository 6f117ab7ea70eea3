"""`virtsync adopt`: a host's objects are taken over in one safe step — those whose spec matches
exactly get this instance's ownership record, the others are named with the reason, and nothing
else changes. (Networks are adopted by redefining them with the record; the test driver keeps an
active network's old definition visible, so they are left to the end-to-end tests.)"""

from __future__ import annotations

from pathlib import Path

import libvirt

from tests.integration.conftest import (
    VirtsyncCli,
    connection,
    snapshot,
    unmanaged_domain,
    write_host,
)

OWNER_NS = "https://virtsync.dev/xmlns/owner/v1"


def _owned(conn: libvirt.virConnect, name: str) -> bool:
    return OWNER_NS in conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)


def test_adopt_takes_over_the_objects_that_match_and_names_the_others(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    names = [f"vm{i}" for i in range(10)]
    body = "".join(unmanaged_domain(n, memory_mib=64 + 16 * (i % 3), running=i % 2 == 0)
                   for i, n in enumerate(names))
    uri = write_host(tmp_path, body)
    tree = tmp_path / "tree"
    assert virtsync("export", "--connect", uri, "--host", "kvm1", "-o", f"{tree}/").code == 0
    # Two exported specs no longer match their guests: they must be left alone, with the reason.
    for name, old, new in (("vm4", "memory: 80MiB", "memory: 72MiB"), ("vm7", "autostart: false", "autostart: true")):
        path = tree / f"guest-{name}.yaml"
        assert old in path.read_text(), path.read_text()
        path.write_text(path.read_text().replace(old, new))
    conn = connection(uri)
    before = snapshot(conn)

    refused = virtsync("adopt", tree)  # no terminal, no --yes: nothing changes
    assert refused.code == 1 and "--yes" in refused.err
    assert snapshot(conn) == before

    done = virtsync("adopt", tree, "--yes")
    assert done.code == 2, done.out + done.err  # some were left alone: still drift
    assert "left alone: Guest vm4 on kvm1: drift: memory" in done.out
    assert "left alone: Guest vm7 on kvm1: drift: autostart" in done.out
    assert "Adopt: 8 adopted, 2 left alone, 0 failed." in done.err
    for name in names:
        assert _owned(conn, name) == (name not in ("vm4", "vm7")), name
    after = snapshot(conn)
    for name, (active, persistent, autostart, dom_id, _xml, _live) in before["domains"].items():
        assert after["domains"][name][:4] == (active, persistent, autostart, dom_id), name  # nothing else

    again = virtsync("adopt", tree, "--yes")
    assert "Adopt: 0 adopted, 2 left alone" in again.err  # the adopted ones are owned now
