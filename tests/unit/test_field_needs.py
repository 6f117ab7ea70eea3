"""A field's ``needs`` (the tags without which it reads as on an empty element, unread) hold:
strip those tags from every golden domain document, and from every document the registry's
samples write, and the field's reader then gives exactly its empty reading. And the skip
changes nothing: read_all's merged reading equals every reader run on its own."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from controller.fields.base import Field, empty_reading, read_all
from controller.fields.devices import DISK_FIELDS, NIC_FIELDS
from controller.fields.guest import GUEST_FIELDS
from controller.fields.xmlutil import parse
from controller.hypervisor.domain_xml import WriteContext, new_guest_xml
from controller.model.state import Owner
from controller.spec.models import Guest

TESTS = Path(__file__).resolve().parents[1]
GOLDEN = sorted([*TESTS.glob("unit/golden/*.xml"), *TESTS.glob("corpus/adoption/*.xml")])
# What some fields' samples need of the guest beside them.
EXTRA: dict[str, dict[str, Any]] = {"topology": {"vcpus": 2}, "iothread": {"iothreads": 2}}
DISK = {"name": "data", "path": "/var/lib/libvirt/images/data.qcow2"}
# A NIC is on one source: a sample of a source field itself fits the base without one.
NICS: tuple[dict[str, Any], ...] = ({"network": "lab", "mac": "52:54:00:00:00:0a"},
                                    {"direct": {"dev": "eth0", "mode": "passthrough"}, "mac": "52:54:00:00:00:0a"},
                                    {"mac": "52:54:00:00:00:0a"})


def _written(spec: dict[str, Any]) -> str | None:
    """A new KVM guest's XML as the writer makes it; None where the spec is not valid."""
    try:
        guest = Guest.model_validate({"apiVersion": "virtsync/v1", "kind": "Guest", "metadata": {"name": "g"},
                                      "spec": {"host": "h1", "memory": "128MiB", **spec}})
    except ValueError:
        return None
    return new_guest_xml("g", guest.spec, WriteContext("kvm", {}, Owner("default", "Guest", "g"), None))


def _sample_documents() -> list[tuple[str, str]]:
    """(id, XML) per sample of each guest, disk and NIC field, as the writer makes it."""
    out = []
    for f in GUEST_FIELDS:
        if f.planned_by or not f.exists_on("kvm"):
            continue
        for i, sample in enumerate(f.samples):
            spec: dict[str, Any] = dict(EXTRA.get(f.name, {}))
            parts = f.path.removeprefix("/spec/").split("/")
            doc = spec
            for part in parts[:-1]:
                doc = doc.setdefault(part, {})
            doc[parts[-1]] = copy.deepcopy(sample)
            xml = _written(spec)
            assert xml is not None, (f.name, sample)
            out.append((f"{f.name}-sample{i}", xml))
    for key, fields, bases in (("disks", DISK_FIELDS, (DISK,)), ("interfaces", NIC_FIELDS, NICS)):
        for f in fields:
            for i, sample in enumerate(f.samples):
                xml = next((x for base in bases
                            if (x := _written({key: [{**base, f.name: sample}], **EXTRA.get(f.name, {})}))), None)
                assert xml is not None, (key, f.name, sample)
                out.append((f"{key}-{f.name}-sample{i}", xml))
    return out


def _documents() -> list[tuple[str, etree._Element]]:
    docs = [(p.name, parse(p.read_text())) for p in GOLDEN]
    docs += [(name, parse(xml)) for name, xml in _sample_documents()]
    return [(name, root) for name, root in docs if root.tag == "domain"]


DOCUMENTS = _documents()
# Each registry, with the elements of a domain document its fields read.
REGISTRIES: dict[str, tuple[tuple[Field[Any], ...], str]] = {
    "guest": (GUEST_FIELDS, "."), "disk": (DISK_FIELDS, "devices/disk"), "nic": (NIC_FIELDS, "devices/interface")}


def _elements(where: str) -> list[tuple[str, etree._Element]]:
    return [(name, el) for name, root in DOCUMENTS for el in ([root] if where == "." else root.findall(where))]


def _gated() -> list[Any]:
    return [pytest.param(f, where, id=f"{kind}-{f.name}")
            for kind, (fields, where) in REGISTRIES.items() for f in fields if f.needs and f.read is not None]


def _stripped(el: etree._Element, tags: tuple[str, ...]) -> etree._Element:
    out = copy.deepcopy(el)
    for found in [e for e in out.iter() if e.tag in tags]:
        parent = found.getparent()
        if parent is not None:  # the element itself is never one of its own needs
            parent.remove(found)
    return out


def test_the_corpus_holds_guests_disks_and_nics() -> None:
    assert len(DOCUMENTS) >= 40
    assert len(_elements("devices/disk")) >= 10 and len(_elements("devices/interface")) >= 10


@pytest.mark.parametrize(("field", "where"), _gated())
def test_a_field_reads_as_empty_once_the_tags_it_needs_are_gone(field: Field[Any], where: str) -> None:
    assert field.read is not None
    elements = _elements(where)
    read_something = 0
    for name, el in elements:
        empty = empty_reading(field, el.tag)
        if field.read(el) != empty:
            read_something += 1
        assert field.read(_stripped(el, field.needs)) == empty, (name, field.name)
    # The check above is not vacuous: some document has what the field reads.
    assert read_something, f"{field.name}: no document in the corpus has what it reads"


@pytest.mark.parametrize("field", [p.values[0] for p in _gated()], ids=[p.id for p in _gated()])
def test_an_empty_reading_is_immutable_and_so_safe_to_share(field: Field[Any]) -> None:
    for tag in ("domain", "disk", "interface"):
        reading = empty_reading(field, tag)
        hash(tuple(reading.items()))


@pytest.mark.parametrize("kind", REGISTRIES)
def test_read_all_with_its_skips_equals_every_reader_run(kind: str) -> None:
    fields, where = REGISTRIES[kind]
    skipped = 0
    for name, el in _elements(where):
        full: dict[str, Any] = {}
        for f in fields:
            if f.read is not None:
                full.update(f.read(el))
        tags = {e.tag for e in el.iter()}
        skipped += sum(1 for f in fields if f.needs and tags.isdisjoint(f.needs))
        assert read_all(fields, el) == full, name
    assert skipped, "no reading skipped a field: the comparison would not show a skip's effect"


@pytest.mark.parametrize("kind", REGISTRIES)
def test_no_two_fields_of_a_registry_read_the_same_attribute(kind: str) -> None:
    # read_all merges the skipped fields' empty readings before the others' readings
    fields, where = REGISTRIES[kind]
    for name, el in [("empty", etree.Element("domain")), *_elements(where)]:
        seen: dict[str, str] = {}
        for f in fields:
            if f.read is None:
                continue
            for attr in f.read(el):
                assert attr not in seen, f"{name}: {f.name} and {seen[attr]} both read {attr}"
                seen[attr] = f.name
