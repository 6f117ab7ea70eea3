"""A host with many domains is read over several of its connections at once (libvirt's test
driver: two connections to one host file hold the same domains, by UUID)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import libvirt

from controller.hypervisor.deadline import CallRunner, bounded
from controller.hypervisor.observe import PARALLEL_FROM, observe_guests


class _Counting(CallRunner):
    calls = 0

    def call(self, what: str, fn: Callable[..., object], *args: object, **kwargs: object) -> object:
        self.calls += 1
        return super().call(what, fn, *args, **kwargs)


STOPPED = "<test:runstate xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>5</test:runstate>"


def _host(tmp_path: Path, n: int) -> str:
    doms = "".join(f"<domain type='test'><name>g{i:03d}</name><uuid>{uuid.UUID(int=i + 1)}</uuid>"
                   f"<memory>65536</memory><os><type>hvm</type></os>{STOPPED if i % 2 else ''}</domain>"
                   for i in range(n))
    (tmp_path / "host.xml").write_text(f"<node>{doms}</node>")
    return f"test://{tmp_path / 'host.xml'}"


def test_many_domains_read_over_several_connections_are_the_guests_one_connection_reads(tmp_path: Path) -> None:
    uri = _host(tmp_path, PARALLEL_FROM + 50)
    runners = [_Counting("h", uri, 30) for _ in range(3)]
    conns = [bounded(libvirt.open(uri), r) for r in runners]
    # One defined on the first connection only: the others do not list it, the first reads it.
    conns[0].defineXML("<domain type='test'><name>late</name><memory>65536</memory><os><type>hvm</type></os></domain>")
    one = observe_guests(conns[0], "h")
    for r in runners:
        r.calls = 0
    many = observe_guests(conns[0], "h", lanes=lambda k: conns[k])
    assert list(many) == list(one) and many == one  # the same guests, in the order listed
    assert "late" in many and {g.state for g in many.values()} == {"running", "stopped"}
    assert all(r.calls for r in runners)  # every connection read its share
    few = observe_guests(conns[0], "h", lanes=lambda k: conns[0])  # a host with one lane: one connection
    assert few == one
    for c in conns:
        c.close()
