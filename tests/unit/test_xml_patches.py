"""xmlPatches, the pure parts: applying, telling which are satisfied, the owned-XML rule, and the
validation that refuses (with file:line) a patch on owned XML or one libvirt's schema rejects."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from pydantic import ValidationError

from controller.fields.applied import declared
from controller.fields.base import Facts
from controller.fields.guest import GUEST_FIELDS
from controller.fields.network import NETWORK_FIELDS
from controller.fields.patches import apply_patches, conflict, owned_paths, unsatisfied
from controller.fields.xmlutil import parse, tostring
from controller.hypervisor.domain_xml import WriteContext, new_guest_xml, update_guest_xml
from controller.hypervisor.network_xml import network_xml
from controller.model.state import Owner
from controller.spec.loader import load_specs
from controller.spec.models import Guest, Network
from controller.spec.patches import XmlPatch

SYSINFO = "<sysinfo type='smbios'><chassis><entry name='manufacturer'>ACME</entry></chassis></sysinfo>"
OWNER = Owner("default", "Guest", "g")
needs_tool = pytest.mark.skipif(shutil.which("virt-xml-validate") is None or shutil.which("xmllint") is None,
                                reason="virt-xml-validate (libvirt-clients, libxml2-utils) is not installed")


def _p(**kw: Any) -> XmlPatch:
    return XmlPatch.model_validate(kw)


def _guest(**spec: Any) -> Guest:
    return Guest.model_validate({"apiVersion": "virtsync/v1", "kind": "Guest", "metadata": {"name": "g"},
                                 "spec": {"host": "h", "memory": "128MiB", **spec}})


def _doc() -> etree._Element:
    return parse("<domain><name>g</name><os><type>hvm</type></os><on_crash>destroy</on_crash>"
                 "<devices><disk type='file'/></devices></domain>")


# ------------------------------------------------------------------ the model


@pytest.mark.parametrize(("patch", "field", "words"), [
    ({"op": "set", "xpath": "domain/on_crash", "value": "x"}, "xpath", "absolute"),
    ({"op": "set", "xpath": "//on_crash", "value": "x"}, "xpath", "absolute"),
    ({"op": "set", "xpath": "/domain/../x", "value": "x"}, "xpath", "not a child element"),
    ({"op": "set", "xpath": "/domain/*", "value": "x"}, "xpath", "not a child element"),
    ({"op": "set", "xpath": "/domain/a[@@]", "value": "x"}, "xpath", "does not compile"),
    ({"op": "set", "xpath": "/domain/@a/b", "value": "x"}, "xpath", "only be the last step"),
    ({"op": "set", "xpath": "/domain/x:y", "value": "x"}, "xpath", "unknown prefix"),
    ({"op": "set", "xpath": "/domain", "value": "x"}, "xpath", "root element itself"),
    ({"op": "set", "xpath": "/domain/devices/controller[1]/@model", "value": "x"}, "xpath", "attribute tests"),
    ({"op": "set", "xpath": "/domain/on_crash"}, "value", "needs 'value'"),
    ({"op": "add", "xpath": "/domain"}, "xml", "needs 'xml'"),
    ({"op": "add", "xpath": "/domain", "xml": "<a/><b/>"}, "xml", "one well-formed element"),
    ({"op": "add", "xpath": "/domain", "xml": "<a>"}, "xml", "one well-formed element"),
    ({"op": "add", "xpath": "/domain", "xml": "<!DOCTYPE a [<!ENTITY e 'x'>]><a>&e;</a>"}, "xml", "DOCTYPE"),
    ({"op": "add", "xpath": "/domain/@a", "xml": "<a/>"}, "xpath", "not an attribute"),
    ({"op": "remove", "xpath": "/domain/a", "value": "x"}, "value", "for op set"),
])
def test_a_patch_that_cannot_be_applied_is_refused_by_the_model(patch: dict[str, Any], field: str,
                                                                words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        XmlPatch.model_validate(patch)


def test_remove_may_use_any_predicate() -> None:
    assert _p(op="remove", xpath="/domain/devices/controller[2]").op == "remove"
    assert _p(op="set", xpath="/domain/devices/controller[@type='usb']/@model", value="qemu-xhci")


# ------------------------------------------------------------------ applying and comparing


def test_set_edits_text_and_attributes_and_makes_what_is_missing() -> None:
    root = _doc()
    apply_patches(root, [
        _p(op="set", xpath="/domain/on_crash", value="restart"),
        _p(op="set", xpath="/domain/features/kvm/hidden/@state", value="on"),
        _p(op="set", xpath="/domain/devices/controller[@type='usb']/@model", value="qemu-xhci"),
        _p(op="set", xpath="/domain/os/type/@arch", value="x86_64"),
    ])
    assert root.findtext("on_crash") == "restart"
    assert root.find("features/kvm/hidden").get("state") == "on"  # type: ignore[union-attr]
    usb = root.find("devices/controller")
    assert usb is not None and usb.attrib == {"type": "usb", "model": "qemu-xhci"}
    assert root.find("os/type").get("arch") == "x86_64"  # type: ignore[union-attr]


def test_add_is_idempotent_and_matches_what_libvirt_adds_to_it() -> None:
    root = _doc()
    patches = [_p(op="add", xpath="/domain", xml=SYSINFO),
               _p(op="add", xpath="/domain/os", xml="<smbios mode='sysinfo'/>")]
    apply_patches(root, patches)
    once = tostring(root)
    apply_patches(root, patches)
    assert tostring(root) == once, "adding the same element twice must not duplicate it"
    assert len(root.findall("sysinfo")) == 1 and unsatisfied(root, patches) == []
    # libvirt adds to what it is given (an attribute, another entry): still the same element
    root.find("sysinfo").set("extra", "1")  # type: ignore[union-attr]
    etree.SubElement(root.find("sysinfo/chassis"), "entry", name="serial").text = "42"  # type: ignore[arg-type]
    apply_patches(root, patches)
    assert len(root.findall("sysinfo")) == 1 and unsatisfied(root, patches) == []
    # a different value is another element: drift, and the add appends it
    root.find("sysinfo/chassis/entry").text = "Other"  # type: ignore[union-attr]
    [miss] = unsatisfied(root, patches)
    assert (miss.index, miss.pointer, miss.want, miss.have, miss.note) == (
        0, "/spec/xmlPatches/0", "present", "missing", "add /domain")


def test_unsatisfied_names_each_patch_that_differs() -> None:
    root = _doc()
    patches = [_p(op="set", xpath="/domain/on_crash", value="restart"),
               _p(op="set", xpath="/domain/os/type", value="hvm"),
               _p(op="remove", xpath="/domain/devices/disk"),
               _p(op="remove", xpath="/domain/devices/watchdog"),
               _p(op="set", xpath="/domain/os/@firmware", value="efi")]
    got = [(m.index, m.want, m.have, m.note) for m in unsatisfied(root, patches)]
    assert got == [(0, "restart", "destroy", "set /domain/on_crash = restart"),
                   (2, "absent", "present", "remove /domain/devices/disk"),
                   (4, "efi", None, "set /domain/os/@firmware = efi")]
    apply_patches(root, patches)
    assert unsatisfied(root, patches) == []
    assert root.find("devices/disk") is None and root.find("os").get("firmware") == "efi"  # type: ignore[union-attr]


def test_the_writers_apply_patches_on_new_definitions_and_on_every_update() -> None:
    guest = _guest(xmlPatches=[{"op": "set", "xpath": "/domain/on_crash", "value": "restart"},
                               {"op": "add", "xpath": "/domain", "xml": SYSINFO}])
    ctx = WriteContext("kvm", {}, OWNER)
    xml = new_guest_xml("g", guest.spec, ctx)
    assert "<on_crash>restart</on_crash>" in xml and "ACME" in xml
    # an update of another field (memory) re-applies them to a definition that lost them
    lost = xml.replace("<on_crash>restart</on_crash>", "<on_crash>destroy</on_crash>")
    again = update_guest_xml(lost, "g", guest.spec, ctx, ("memory",))
    assert "<on_crash>restart</on_crash>" in again and again.count("<sysinfo") == 1
    net = Network.model_validate({"apiVersion": "virtsync/v1", "kind": "Network", "metadata": {"name": "n"},
                                  "spec": {"host": "h", "mode": "nat", "xmlPatches": [
                                      {"op": "set", "xpath": "/network/dns/@enable", "value": "no"}]}})
    base = network_xml("n", net.spec, OWNER)
    assert "enable=\"no\"" in base
    assert network_xml("n", net.spec, OWNER, base=base.replace('enable="no"', 'enable="yes"')).count(
        'enable="no"') == 1


# ------------------------------------------------------------------ owned XML


def _owned(guest: Guest, virt_type: str = "kvm") -> dict[str, str]:
    return owned_paths(GUEST_FIELDS, guest.spec, Facts("g", virt_type), declared(guest.spec))


def test_fields_own_their_xml_when_the_spec_gives_them_a_value() -> None:
    owned = _owned(_guest())
    # always written (a default or the keyed device lists) …
    for path in ("/domain/memory", "/domain/currentMemory", "/domain/vcpu", "/domain/os/@firmware",
                 "/domain/devices/disk", "/domain/devices/interface"):
        assert path in owned, path
    # … while onCrash, cpu, boot, graphics and machine leave their XML to patches until declared
    for path in ("/domain/on_crash", "/domain/cpu", "/domain/os/boot", "/domain/devices/graphics",
                 "/domain/os/type/@machine"):
        assert path not in owned, path
    declared_spec = _owned(_guest(onCrash="restart", cpu={"mode": "host-model"}, machine="q35"))
    assert declared_spec["/domain/on_crash"] == "onCrash" and declared_spec["/domain/cpu"] == "cpu"
    assert "/domain/os/@firmware" not in _owned(_guest(), "test"), "firmware does not exist on the test driver"


def test_every_field_with_xml_in_the_registries_declares_what_it_owns() -> None:
    for f in GUEST_FIELDS + NETWORK_FIELDS:
        if f.write is not None or f.read is not None:
            assert f.xpaths or f.name in ("xmlPatches", "cloudInit"), f"{f.name} owns no xpaths"


@pytest.mark.parametrize(("patch", "hit"), [
    ({"op": "set", "xpath": "/domain/memory", "value": "1"}, "/domain/memory"),
    ({"op": "remove", "xpath": "/domain/devices/disk[2]/driver/@cache"}, "/domain/devices/disk"),
    ({"op": "remove", "xpath": "/domain/os"}, "/domain/os/@firmware"),  # an ancestor of owned XML
    ({"op": "add", "xpath": "/domain/os", "xml": "<loader readonly='yes'>/x</loader>"}, "/domain/os/loader"),
    ({"op": "add", "xpath": "/domain", "xml": "<devices><disk type='file'/></devices>"}, "/domain/devices/disk"),
    ({"op": "set", "xpath": "/domain/os/type/@arch", "value": "x86_64"}, None),
    ({"op": "add", "xpath": "/domain/os", "xml": "<smbios mode='sysinfo'/>"}, None),
    ({"op": "add", "xpath": "/domain", "xml": SYSINFO}, None),
    ({"op": "set", "xpath": "/domain/on_crash", "value": "restart"}, None),
])
def test_a_patch_on_owned_xml_conflicts(patch: dict[str, Any], hit: str | None) -> None:
    found = conflict(_p(**patch), _owned(_guest()))
    assert (found[0] if found else None) == hit


def test_an_added_element_conflicts_only_where_it_holds_owned_xml() -> None:
    owned = {"/domain/sysinfo/system": "sysinfo"}
    system = "<sysinfo type='smbios'><system><entry name='serial'>1</entry></system></sysinfo>"
    assert conflict(_p(op="add", xpath="/domain", xml=system), owned) == ("/domain/sysinfo/system", "sysinfo")
    assert conflict(_p(op="add", xpath="/domain", xml=SYSINFO), owned) is None
    # an add brings a new element: an owned attribute of its kind's first one is not touched
    net = {"/network/ip/@address": "address"}
    assert conflict(_p(op="add", xpath="/network", xml="<ip family='ipv6' address='fd00::1' prefix='64'/>"),
                    net) is None
    assert conflict(_p(op="set", xpath="/network/ip/@address", value="10.0.0.1"), net) is not None


# ------------------------------------------------------------------ validation, with file:line


def _spec_file(tmp_path: Path, patches: str, uri: str = "test:///default") -> Path:
    path = tmp_path / "g.yaml"
    path.write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: h}}
spec: {{uri: "{uri}"}}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: g}}
spec:
  host: h
  memory: 128MiB
  xmlPatches:
    - {{op: set, xpath: /domain/on_crash, value: restart}}
{patches}""")
    return path


def test_a_patch_on_owned_xml_is_a_validation_error_at_its_line(tmp_path: Path) -> None:
    path = _spec_file(tmp_path, "    - {op: set, xpath: /domain/memory, value: '1'}\n"
                                "    - {op: remove, xpath: /domain/name}\n"
                                "    - {op: set, xpath: /network/bridge/@name, value: x}\n")
    msgs = [d.render() for d in load_specs([path]).errors]
    assert msgs == [
        f"{path}:14:7: error: xmlPatch set /domain/memory = 1: /domain/memory is the field maxMemory: "
        "set spec.maxMemory instead (xmlPatches are for the XML no field models)",
        f"{path}:15:7: error: xmlPatch remove /domain/name: /domain/name is the object's name: set "
        "metadata.name instead (xmlPatches are for the XML no field models)",
        f"{path}:16:24: error: xpath '/network/bridge/@name' must start at this object's root element: /domain/…",
    ], msgs


def test_on_crash_is_a_patch_until_the_spec_declares_it(tmp_path: Path) -> None:
    assert load_specs([_spec_file(tmp_path, "")]).errors == []
    path = tmp_path / "g.yaml"
    path.write_text(path.read_text().replace("  memory: 128MiB\n", "  memory: 128MiB\n  onCrash: destroy\n"))
    [err] = load_specs([path]).errors
    assert "/domain/on_crash is the field onCrash: set spec.onCrash instead" in err.message


@needs_tool
def test_a_patched_document_libvirt_refuses_is_an_error_at_the_patch_that_broke_it(tmp_path: Path) -> None:
    path = _spec_file(tmp_path, f'    - {{op: add, xpath: /domain, xml: "{SYSINFO}"}}\n'
                                "    - {op: add, xpath: /domain/devices, xml: '<bogus/>'}\n"
                                "    - {op: set, xpath: /domain/on_poweroff, value: explode}\n")
    [err] = load_specs([path]).errors
    assert (err.line, err.column) == (15, 7), err.render()
    assert err.message.startswith("with xmlPatch add /domain/devices the domain definition fails libvirt's "
                                  "schema (virt-xml-validate): Relax-NG validity error"), err.message
