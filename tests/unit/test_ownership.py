"""The ownership record: in <metadata>, or in <description> for drivers that drop metadata."""

from __future__ import annotations

from controller.fields.xmlutil import parse, tostring
from controller.hypervisor import ownership
from controller.model.state import Owner

OWNER = Owner("lab", "Guest", "web1", "sha256:ab", "3f2a", {"memory": "2GiB"}, ("p/web1-root.qcow2",))


def test_ownership_round_trips_through_metadata() -> None:
    root = parse("<domain><name>web1</name></domain>")
    ownership.set_owner(root, OWNER)
    assert ownership.find_owner(parse(tostring(root))) == OWNER
    assert ownership.find_owner(parse(tostring(root))).applied == {"memory": "2GiB"}  # type: ignore[union-attr]


def test_ownership_falls_back_to_the_description_when_metadata_is_dropped() -> None:
    root = parse("<domain><name>web1</name><uuid>u</uuid></domain>")
    ownership.owner_into_description(root, OWNER)
    text = tostring(root)
    assert "<metadata" not in text and "virtsync-owner:" in text
    found = ownership.find_owner(parse(text))
    assert found == OWNER and found is not None and found.volumes == ("p/web1-root.qcow2",)


def test_a_description_written_by_a_person_is_not_an_ownership_record() -> None:
    assert ownership.find_owner(parse("<domain><description>my vm</description></domain>")) is None
    assert ownership.find_owner(parse("<domain><description>virtsync-owner:&lt;broken</description></domain>")) is None
