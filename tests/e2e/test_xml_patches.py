"""xmlPatches on a real libvirtd host: a firmware-only KVM guest gets its crash action and an SMBIOS
<sysinfo> from patches, QEMU runs it, an out-of-band `virsh define` of a patched path is drift
(exit 2, the patch named) and one apply repairs it; the XML outside the patches is left alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from tests.e2e.engine_helpers import drift_json, objects, ok, virtsync
from tests.hosts.hermetic import HermeticHost

pytestmark = [pytest.mark.e2e, pytest.mark.devices]

SYSINFO = "<sysinfo type='smbios'><chassis><entry name='manufacturer'>ACME</entry></chassis></sysinfo>"


def _specs(host: HermeticHost, tmp: Path) -> Path:
    specs = tmp / "specs"
    specs.mkdir()
    (specs / "lab.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: lab}}
spec:
  uri: "{host.uri}"
  storage: {{allowedDirs: ["{tmp}"]}}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: g1}}
spec:
  host: lab
  state: running
  vcpus: 1
  memory: 64MiB
  firmware: bios
  restartPolicy: onChange
  shutdownTimeout: 2s
  xmlPatches:
    - {{op: set, xpath: /domain/on_crash, value: restart}}
    - op: add
      xpath: /domain
      xml: "{SYSINFO}"
    - {{op: add, xpath: /domain/os, xml: "<smbios mode='sysinfo'/>"}}
""")
    return specs


def _defined(host: HermeticHost) -> etree._Element:
    return etree.fromstring(host.virsh("dumpxml", "--inactive", "g1").encode())


def _patched(root: etree._Element) -> None:
    assert root.findtext("on_crash") == "restart", etree.tostring(root, encoding="unicode")
    assert root.findtext("sysinfo/chassis/entry[@name='manufacturer']") == "ACME"
    assert len(root.findall("sysinfo")) == 1
    smbios = root.find("os/smbios")
    assert smbios is not None and smbios.get("mode") == "sysinfo"


def test_patches_land_on_a_real_host_and_one_apply_repairs_their_drift(
    tmp_path: Path, hermetic_host: HermeticHost,
) -> None:
    host = hermetic_host
    specs = _specs(host, tmp_path)
    ok(virtsync("apply", str(specs), "--yes"))
    assert host.virsh("domstate", "g1").strip() == "running", "QEMU runs the patched definition"
    _patched(_defined(host))
    # QEMU got the SMBIOS strings: libvirt passes them as -smbios type=3 on its command line
    live = etree.fromstring(host.virsh("dumpxml", "g1").encode())
    assert live.findtext("sysinfo/chassis/entry[@name='manufacturer']") == "ACME"
    plan = ok(virtsync("plan", str(specs)))
    assert "No changes" in plan, plan

    # out of band: the crash action back to libvirt's default, the SMBIOS block gone
    root = _defined(host)
    root.find("on_crash").text = "destroy"  # type: ignore[union-attr]
    root.remove(root.find("sysinfo"))  # type: ignore[arg-type]
    etree.SubElement(root.find("devices"), "watchdog", model="i6300esb", action="reset")  # type: ignore[arg-type]
    path = tmp_path / "g1.xml"
    path.write_text(etree.tostring(root, encoding="unicode"))
    host.virsh("define", str(path))

    report = drift_json(specs, host.uri)
    changes = {c["path"]: c for c in objects(report)["Guest/g1"]["changes"]}
    assert changes["/spec/xmlPatches/0"]["note"] == "set /domain/on_crash = restart", changes
    assert (changes["/spec/xmlPatches/0"]["desired"], changes["/spec/xmlPatches/0"]["defined"]) == (
        "restart", "destroy")
    assert changes["/spec/xmlPatches/1"]["note"] == "add /domain", changes
    assert "/spec/xmlPatches/2" not in changes, "a satisfied patch is not drift"
    text = ok(virtsync("drift", str(specs)), 2)
    assert "xmlPatches/0 (set /domain/on_crash = restart)" in text, text

    # one apply: the definition is written again (with the patches), the guest restarted
    ok(virtsync("apply", str(specs), "--yes"))
    root = _defined(host)
    _patched(root)
    assert root.find("devices/watchdog") is not None, "XML outside the patches is left alone"
    assert host.virsh("domstate", "g1").strip() == "running"
    ok(virtsync("drift", str(specs)))
    assert "No changes" in ok(virtsync("plan", str(specs)))


def test_a_pool_patch_lands_and_an_out_of_band_change_is_repaired_on_a_real_host(
    tmp_path: Path, hermetic_host: HermeticHost,
) -> None:
    host = hermetic_host
    specs = tmp_path / "pool"
    specs.mkdir()
    (specs / "p.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: lab}}
spec:
  uri: "{host.uri}"
  storage: {{allowedDirs: ["{tmp_path}"]}}
---
apiVersion: virtsync/v1
kind: StoragePool
metadata: {{name: patched}}
spec:
  host: lab
  path: {tmp_path}/patched
  xmlPatches: [{{op: set, xpath: /pool/target/permissions/mode, value: "0711"}}]
""")

    def mode() -> str | None:
        root = etree.fromstring(host.virsh("pool-dumpxml", "--inactive", "patched").encode())
        return root.findtext("target/permissions/mode")

    ok(virtsync("apply", str(specs), "--yes"))
    assert mode() == "0711"
    assert oct((tmp_path / "patched").stat().st_mode & 0o777) == "0o711", "libvirt built the directory so"
    assert "No changes" in ok(virtsync("plan", str(specs)))
    xml = host.virsh("pool-dumpxml", "--inactive", "patched").replace("<mode>0711</mode>", "<mode>0755</mode>")
    (tmp_path / "p.xml").write_text(xml)
    host.virsh("pool-define", str(tmp_path / "p.xml"))
    assert "xmlPatches/0" in ok(virtsync("drift", str(specs)), 2)
    ok(virtsync("apply", str(specs), "--yes"))
    assert mode() == "0711", "the definition is written again with the patch"
    assert "No changes" in ok(virtsync("plan", str(specs)))

