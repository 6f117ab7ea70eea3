"""xmlPatches on libvirt's test driver: patches land in the definition, an out-of-band change of a
patched path is drift that one apply repairs, a patch on XML a field owns is refused naming the
field, and a patched document libvirt's schema refuses never reaches the host."""

from __future__ import annotations

from pathlib import Path

import libvirt
from lxml import etree

from tests.integration.conftest import VirtsyncCli, connection, snapshot, write_host

INACTIVE = libvirt.VIR_DOMAIN_XML_INACTIVE
SYSINFO = "<sysinfo type='smbios'><chassis><entry name='manufacturer'>ACME</entry></chassis></sysinfo>"


def _specs(tmp_path: Path, uri: str, patches: str, network_patches: str = "") -> Path:
    specs = tmp_path / "specs"
    specs.mkdir(exist_ok=True)
    path = specs / "lab.yaml"
    path.write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: kvm1}}
spec: {{uri: "{uri}"}}
---
apiVersion: virtsync/v1
kind: Network
metadata: {{name: lab}}
spec:
  host: kvm1
  mode: nat
  bridge: virbr-lab
  ipv4: {{address: 192.168.150.1/24}}
{network_patches}---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: g1}}
spec:
  host: kvm1
  state: stopped
  memory: 128MiB
  interfaces: [{{network: lab, mac: "52:54:00:00:00:01"}}]
  xmlPatches:
{patches}""")
    return path


PATCHES = f"""    - {{op: set, xpath: /domain/on_crash, value: restart}}
    - op: add
      xpath: /domain
      xml: "{SYSINFO}"
    - {{op: add, xpath: /domain/os, xml: "<smbios mode='sysinfo'/>"}}
"""
NETWORK_PATCHES = """  xmlPatches:
    - {op: add, xpath: /network, xml: "<route address='10.20.0.0' prefix='24' gateway='192.168.150.2'/>"}
"""


def _defined(conn: libvirt.virConnect) -> etree._Element:
    return etree.fromstring(conn.lookupByName("g1").XMLDesc(INACTIVE).encode())


def test_patches_land_drift_is_named_and_one_apply_repairs_it(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = _specs(tmp_path, uri, PATCHES, NETWORK_PATCHES)
    assert virtsync("validate", specs).code == 0
    applied = virtsync("apply", specs, "--yes")
    assert applied.code == 0, applied.out + applied.err
    conn = connection(uri)
    root = _defined(conn)
    assert root.findtext("on_crash") == "restart"
    assert root.findtext("sysinfo/chassis/entry[@name='manufacturer']") == "ACME"
    assert root.find("os/smbios").get("mode") == "sysinfo"  # type: ignore[union-attr]
    net = etree.fromstring(conn.networkLookupByName("lab").XMLDesc(0).encode())
    assert net.find("route").get("gateway") == "192.168.150.2"  # type: ignore[union-attr]
    # What libvirt read back satisfies every patch: no endless drift, and a second apply adds nothing.
    plan = virtsync("plan", specs)
    assert plan.code == 0 and "No changes" in plan.out, plan.out
    assert virtsync("apply", specs, "--yes").code == 0
    assert len(_defined(conn).findall("sysinfo")) == 1

    # Out of band: the crash action back to destroy, the SMBIOS block gone, by hand with libvirt.
    root = _defined(conn)
    root.find("on_crash").text = "destroy"  # type: ignore[union-attr]
    root.remove(root.find("sysinfo"))  # type: ignore[arg-type]
    conn.defineXML(etree.tostring(root, encoding="unicode"))
    drift = virtsync("drift", specs)
    assert drift.code == 2, drift.out + drift.err
    assert "xmlPatches/0 (set /domain/on_crash = restart)" in drift.out, drift.out
    assert "xmlPatches/1 (add /domain)" in drift.out, drift.out
    assert "xmlPatches/2" not in drift.out, "a satisfied patch is not drift"
    report = virtsync("drift", specs, "--format", "json")
    assert report.code == 2
    paths = {c["path"]: c for h in report.json()["hosts"] for obj in h["objects"] for c in obj.get("changes", [])}
    assert paths["/spec/xmlPatches/0"]["desired"] == "restart"
    assert paths["/spec/xmlPatches/0"]["defined"] == "destroy"
    assert paths["/spec/xmlPatches/0"]["impact"] == "next-boot"

    repaired = virtsync("apply", specs, "--yes")
    assert repaired.code == 0, repaired.out + repaired.err
    root = _defined(conn)
    assert root.findtext("on_crash") == "restart"
    assert root.findtext("sysinfo/chassis/entry[@name='manufacturer']") == "ACME"
    assert len(root.findall("sysinfo")) == 1 and len(root.findall("os/smbios")) == 1
    assert virtsync("drift", specs).code == 0


def test_a_network_patch_changed_out_of_band_is_recreated(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = _specs(tmp_path, uri, PATCHES, NETWORK_PATCHES)
    assert virtsync("apply", specs, "--yes").code == 0
    conn = connection(uri)
    net = conn.networkLookupByName("lab")
    root = etree.fromstring(net.XMLDesc(0).encode())
    root.remove(root.find("route"))  # type: ignore[arg-type]
    net.destroy()
    net.undefine()
    conn.networkDefineXML(etree.tostring(root, encoding="unicode")).create()
    drift = virtsync("drift", specs)
    assert drift.code == 2 and "xmlPatches/0 (add /network)" in drift.out, drift.out
    plan = virtsync("plan", specs)
    assert "recreate" in plan.out, plan.out
    assert virtsync("apply", specs, "--yes").code == 0
    root = etree.fromstring(conn.networkLookupByName("lab").XMLDesc(0).encode())
    assert root.find("route").get("gateway") == "192.168.150.2"  # type: ignore[union-attr]
    assert virtsync("drift", specs).code == 0


def test_a_patch_on_xml_a_field_owns_is_refused_naming_the_field(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = _specs(tmp_path, uri, PATCHES + "    - {op: set, xpath: /domain/memory, value: '262144'}\n")
    before = snapshot(connection(uri))
    for verb in ("validate", "plan", "apply"):
        run = virtsync(verb, specs, *(("--yes",) if verb == "apply" else ()))
        assert run.code == 1, (verb, run.out, run.err)
        out = run.out + run.err
        # the 4th patch of the guest: line 34 of the file
        assert f"{specs}:29:7: error: xmlPatch set /domain/memory = 262144: /domain/memory is the field " \
               "maxMemory: set spec.maxMemory instead" in out, out
    assert snapshot(connection(uri)) == before


def test_a_patched_document_libvirt_refuses_never_reaches_the_host(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = _specs(tmp_path, uri, PATCHES + "    - {op: add, xpath: /domain/devices, xml: '<bogus/>'}\n")
    before = snapshot(connection(uri))
    for verb in ("validate", "apply"):
        run = virtsync(verb, specs, *(("--yes",) if verb == "apply" else ()))
        assert run.code == 1, (verb, run.out, run.err)
        out = run.out + run.err
        assert f"{specs}:29:7: error: with xmlPatch add /domain/devices the domain definition fails " \
               "libvirt's schema (virt-xml-validate)" in out, out
        assert "Relax-NG validity error" in out, out
    after = snapshot(connection(uri))
    assert after == before and "g1" not in after["domains"] and "lab" not in after["networks"]


def test_pool_patches_land_and_an_out_of_band_change_is_drift(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = tmp_path / "pool"
    specs.mkdir()
    (specs / "p.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: kvm1}}
spec: {{uri: "{uri}", storage: {{allowedDirs: [/srv]}}}}
---
apiVersion: virtsync/v1
kind: StoragePool
metadata: {{name: p}}
spec:
  host: kvm1
  path: /srv/p
  xmlPatches: [{{op: set, xpath: /pool/target/permissions/mode, value: '0711'}}]
""")
    assert virtsync("apply", specs, "--yes").code == 0
    pool = connection(uri).storagePoolLookupByName("p")

    def mode() -> str | None:
        return etree.fromstring(pool.XMLDesc(0).encode()).findtext(
            "target/permissions/mode")

    assert mode() == "0711"
    assert virtsync("plan", specs).code == 0
    xml = pool.XMLDesc(0).replace("<mode>0711</mode>", "<mode>0755</mode>")
    pool.destroy()  # the test driver shows an active pool's running definition only
    pool = connection(uri).storagePoolDefineXML(xml)
    pool.create()
    drift = virtsync("drift", specs)
    assert drift.code == 2 and "xmlPatches/0" in drift.out and "/pool/target/permissions/mode" in drift.out
    # The repair (the definition written again) is shown on a real libvirtd: the test driver keeps
    # no separate persistent definition of an active pool (tests/e2e/test_xml_patches.py).
