"""The journal of libvirt calls behind the no-op memo (controller/hypervisor/read_journal.py), on
libvirt's test driver."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from controller.hypervisor.read_journal import Recorder, journals_of, replay


def _host(tmp: Path, vcpus: int = 1, names: tuple[str, ...] = ("a", "b", "c")) -> str:
    doms = "".join(f"<domain type='test'><name>{n}</name><uuid>{uuid.uuid5(uuid.NAMESPACE_DNS, n)}</uuid>"
                   f"<memory unit='MiB'>64</memory><vcpu>{vcpus}</vcpu><os><type>hvm</type></os></domain>"
                   for n in names)
    path = tmp / "host.xml"
    path.write_text(f"<node>{doms}</node>")
    return f"test://{path}"


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    rec.install()
    try:
        yield rec
    finally:
        rec.uninstall()


def _read_all(uri: str) -> None:
    conn = libvirt.open(uri)
    for dom in conn.listAllDomains(0):
        dom.XMLDesc(0)
        dom.UUIDString()
    conn.close()


def test_a_replay_of_unchanged_hosts_matches_and_any_changed_answer_stops_it(tmp_path: Path,
                                                                             recorder: Recorder) -> None:
    uri = _host(tmp_path)
    _read_all(uri)
    recorder.uninstall()
    journals = list(journals_of(recorder))
    assert not recorder.refused and len(journals) == 1
    assert [e[1] for e in journals[0]["entries"]][:2] == ["listAllDomains", "XMLDesc"]
    assert replay(journals, 10) == ""  # listed in another order by the next open: still the same
    _host(tmp_path, vcpus=2)
    assert "XMLDesc" in replay(journals, 10)
    _host(tmp_path, names=("a", "b"))
    assert "listAllDomains" in replay(journals, 10)


def test_a_call_that_is_not_a_read_refuses_the_journal(tmp_path: Path, recorder: Recorder) -> None:
    conn = libvirt.open(_host(tmp_path))
    dom = conn.lookupByName("a")
    dom.XMLDesc(0)
    assert not recorder.refused
    dom.setAutostart(1)
    assert "virDomain.setAutostart is not a read" in recorder.refused
    assert not recorder.journals  # dropped: nothing of it may be replayed
    conn.close()


def test_errors_are_answers_compared_by_code_and_message(tmp_path: Path, recorder: Recorder) -> None:
    uri = _host(tmp_path)
    conn = libvirt.open(uri)
    with pytest.raises(libvirt.libvirtError):
        conn.lookupByName("missing")
    conn.close()
    recorder.uninstall()
    journals = list(journals_of(recorder))
    assert replay(journals, 10) == ""
    _host(tmp_path, names=("a", "missing"))
    assert "lookupByName" in replay(journals, 10)  # found now: a different answer
