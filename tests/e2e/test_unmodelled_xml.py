"""XML virtsync does not model survives its changes, on a real libvirtd host.

Networks, guests and pools are edited in place (never rebuilt from the spec): what an operator
added out of band — a DNS host, a second IPv4 and an IPv6 <ip>, a watchdog and an RNG device,
pool target permissions — is still in the definitions after virtsync recreated or updated them,
and the next plan is empty (no endless drift).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lxml import etree

from tests.e2e.engine_helpers import ok, virtsync
from tests.hosts.hermetic import HermeticHost

pytestmark = [pytest.mark.e2e, pytest.mark.networks]

OWNER_NS = "https://virtsync.dev/xmlns/owner/v1"


def _host_doc(host: HermeticHost, tmp: Path) -> str:
    return f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: lab}}
spec:
  uri: "{host.uri}"
  storage: {{allowedDirs: ["{tmp}"]}}
"""


def _network_doc(address: str, start: str, end: str) -> str:
    return f"""---
apiVersion: virtsync/v1
kind: Network
metadata: {{name: lab}}
spec:
  host: lab
  mode: nat
  bridge: virbr-lab
  ipv4:
    address: {address}
    dhcp:
      start: {start}
      end: {end}
  autostart: true
"""


def _write(specs: Path, *docs: str) -> Path:
    specs.mkdir(exist_ok=True)
    (specs / "lab.yaml").write_text("".join(docs))
    return specs


def _apply_then_no_changes(specs: Path) -> str:
    out = ok(virtsync("apply", str(specs), "--yes"))
    plan = ok(virtsync("plan", str(specs)))  # exit 0: nothing left to do
    assert "No changes" in plan, plan
    return out


def _redefine(host: HermeticHost, tmp: Path, kind: str, name: str, xml: str) -> None:
    """`virsh KIND-define` of a definition edited by hand (as an operator would)."""
    path = tmp / f"{kind}-{name}.xml"
    path.write_text(xml)
    host.virsh({"net": "net-define", "dom": "define", "pool": "pool-define"}[kind], str(path))


def _insert(xml: str, before: str, fragment: str) -> str:
    assert before in xml, before
    return xml.replace(before, fragment + before, 1)


# -------------------------------------------------------------------------------- networks

def test_a_recreated_network_keeps_its_dns_host_and_extra_ips(
    tmp_path: Path, hermetic_host: HermeticHost,
) -> None:
    host = hermetic_host
    specs = _write(tmp_path / "specs", _host_doc(host, tmp_path),
                   _network_doc("192.168.150.1/24", "192.168.150.10", "192.168.150.99"))
    _apply_then_no_changes(specs)
    uuid = host.virsh("net-uuid", "lab").strip()

    # out of band: a DNS host (live and persistent), then a second IPv4 and an IPv6 <ip>
    host.virsh("net-update", "lab", "add", "dns-host",
               "<host ip='192.168.150.5'><hostname>printer</hostname></host>", "--config", "--live")
    xml = host.virsh("net-dumpxml", "--inactive", "lab")
    xml = _insert(xml, "</network>", "  <ip address='10.9.0.1' prefix='24'/>\n"
                                     "  <ip family='ipv6' address='fd00:150::1' prefix='64'/>\n")
    _redefine(host, tmp_path, "net", "lab", xml)
    assert "No changes" in ok(virtsync("plan", str(specs))), "unmodelled XML shows as drift"

    # the subnet moves: a recreate, from the observed definition
    _write(specs, _host_doc(host, tmp_path),
           _network_doc("192.168.151.1/24", "192.168.151.10", "192.168.151.99"))
    plan = ok(virtsync("plan", str(specs)), 2)
    assert "recreate" in plan and "192.168.151.1/24" in plan, plan
    _apply_then_no_changes(specs)
    defined = host.virsh("net-dumpxml", "--inactive", "lab")
    assert "<hostname>printer</hostname>" in defined, defined
    assert "address='10.9.0.1'" in defined and "address='fd00:150::1'" in defined, defined
    assert "address='192.168.151.1'" in defined and "start='192.168.151.10'" in defined, defined
    assert "192.168.150.1'" not in defined
    assert host.virsh("net-uuid", "lab").strip() == uuid
    assert re.search(r"Active:\s+yes", host.virsh("net-info", "lab"))
    # the restarted network really carries all three addresses
    addrs = host.run_in_netns(["ip", "-br", "addr", "show", "virbr-lab"]).stdout
    assert "192.168.151.1/24" in addrs and "10.9.0.1/24" in addrs and "fd00:150::1/64" in addrs, addrs

    # a DHCP range change alone is live (networkUpdate): it keeps them too
    _write(specs, _host_doc(host, tmp_path),
           _network_doc("192.168.151.1/24", "192.168.151.100", "192.168.151.200"))
    out = _apply_then_no_changes(specs)
    assert "update-network Network lab (live)" in out and "recreate Network" not in out, out
    for flags in (("--inactive",), ()):
        xml = host.virsh("net-dumpxml", *flags, "lab")
        assert "start='192.168.151.100'" in xml and "end='192.168.151.200'" in xml, xml
        assert "<hostname>printer</hostname>" in xml and "address='10.9.0.1'" in xml, xml
        assert "address='fd00:150::1'" in xml, xml


def test_mode_changes_keep_port_groups_and_other_tools_metadata(
    tmp_path: Path, hermetic_host: HermeticHost,
) -> None:
    host = hermetic_host
    specs = _write(tmp_path / "specs", _host_doc(host, tmp_path),
                   _network_doc("192.168.150.1/24", "192.168.150.10", "192.168.150.99"))
    _apply_then_no_changes(specs)
    xml = host.virsh("net-dumpxml", "--inactive", "lab")
    xml = _insert(xml, "</metadata>", "<other:tag xmlns:other='http://example.com/other/1'>keep</other:tag>")
    xml = _insert(xml, "</network>", "<portgroup name='engineering' default='yes'/>\n")
    _redefine(host, tmp_path, "net", "lab", xml)
    host.run_in_netns(["ip", "link", "add", "br0", "type", "bridge"], check=True)
    host.run_in_netns(["ip", "link", "set", "br0", "up"], check=True)
    ipv4 = "  ipv4: {address: 192.168.150.1/24, dhcp: {start: 192.168.150.10, end: 192.168.150.99}}\n"
    for mode in ("route", "open", "isolated", "bridge", "nat"):
        body = f"  mode: {mode}\n" + ("  bridge: br0\n" if mode == "bridge" else "  bridge: virbr-lab\n" + ipv4)
        doc = f"---\napiVersion: virtsync/v1\nkind: Network\nmetadata: {{name: lab}}\nspec:\n  host: lab\n{body}"
        _write(specs, _host_doc(host, tmp_path), doc)
        out = _apply_then_no_changes(specs)
        assert "recreate-network Network lab" in out, out
        defined = host.virsh("net-dumpxml", "--inactive", "lab")
        assert "<portgroup name='engineering' default='yes'" in defined, f"{mode}:\n{defined}"
        assert re.search(r"<other:tag xmlns:other=.http://example.com/other/1.>keep</other:tag>", defined), \
            f"{mode}:\n{defined}"
        assert re.search(r"Active:\s+yes", host.virsh("net-info", "lab")), mode


# ---------------------------------------------------------------------------------- guests

def _guest_doc(memory: str, *, state: str = "running", firmware: str = "bios") -> str:
    return f"""---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: g1}}
spec:
  host: lab
  state: {state}
  vcpus: 1
  memory: {memory}
  maxMemory: 128MiB
  firmware: {firmware}
  interfaces:
    - {{network: lab, bootRom: false}}
  restartPolicy: onChange
  shutdownTimeout: 2s
"""


def _devices(host: HermeticHost) -> tuple[etree._Element, str]:
    xml = host.virsh("dumpxml", "--inactive", "g1")
    return etree.fromstring(xml.encode()), xml


def test_a_guests_out_of_band_devices_survive_a_memory_change_and_a_firmware_recreate(
    tmp_path: Path, hermetic_host: HermeticHost,
) -> None:
    host = hermetic_host
    net = _network_doc("192.168.150.1/24", "192.168.150.10", "192.168.150.99")
    specs = _write(tmp_path / "specs", _host_doc(host, tmp_path), net, _guest_doc("64MiB"))
    _apply_then_no_changes(specs)
    assert host.virsh("domstate", "g1").strip() == "running"
    uuid = host.virsh("domuuid", "g1").strip()

    # out of band: a watchdog and an RNG, in the persistent definition
    xml = host.virsh("dumpxml", "--inactive", "g1")
    xml = _insert(xml, "</devices>", "<watchdog model='i6300esb' action='reset'/>\n"
                  "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>\n")
    _redefine(host, tmp_path, "dom", "g1", xml)
    root, _ = _devices(host)
    assert root.find(f"metadata/{{{OWNER_NS}}}owner") is not None, "ownership lost by the define"
    assert "No changes" in ok(virtsync("plan", str(specs))), "unmodelled devices show as drift"

    def still_there(label: str) -> None:
        root, text = _devices(host)
        dog = root.find("devices/watchdog")
        rng = root.find("devices/rng")
        assert dog is not None and (dog.get("model"), dog.get("action")) == ("i6300esb", "reset"), \
            f"{label}: watchdog lost\n{text}"
        assert rng is not None and rng.get("model") == "virtio", f"{label}: rng lost\n{text}"
        assert rng.findtext("backend") == "/dev/urandom", f"{label}: rng backend lost\n{text}"
        assert root.find(f"metadata/{{{OWNER_NS}}}owner") is not None, f"{label}: ownership lost"
        assert root.findtext("uuid") == uuid

    # memory within maxMemory: live (balloon) and the definition, edited in place
    _write(specs, _host_doc(host, tmp_path), net, _guest_doc("96MiB"))
    _apply_then_no_changes(specs)
    root, _ = _devices(host)
    assert root.findtext("currentMemory") == str(96 * 1024)
    still_there("memory change")

    # BIOS → UEFI is a recreate (undefine + define under the same UUID). Stopped: OVMF under
    # the nested KVM of this machine dies, so the UEFI guest is never started here.
    _write(specs, _host_doc(host, tmp_path), net, _guest_doc("96MiB", state="stopped", firmware="uefi"))
    plan = ok(virtsync("plan", str(specs)), 2)
    assert "recreate" in plan and "firmware: bios → uefi" in plan, plan
    _apply_then_no_changes(specs)
    assert host.virsh("domstate", "g1").strip() == "shut off"
    root, text = _devices(host)
    os_el = root.find("os")
    assert os_el is not None and os_el.get("firmware") == "efi", text
    still_there("firmware recreate")


# ----------------------------------------------------------------------------------- pools

def _pool_doc(path: Path, autostart: bool) -> str:
    return f"""---
apiVersion: virtsync/v1
kind: StoragePool
metadata: {{name: images}}
spec:
  host: lab
  type: dir
  path: "{path}"
  autostart: {str(autostart).lower()}
"""


def test_a_pool_keeps_its_out_of_band_permissions_when_autostart_changes(
    tmp_path: Path, hermetic_host: HermeticHost,
) -> None:
    host = hermetic_host
    pool_dir = tmp_path / "pool"
    specs = _write(tmp_path / "specs", _host_doc(host, tmp_path), _pool_doc(pool_dir, True))
    _apply_then_no_changes(specs)
    assert re.search(r"Autostart:\s+yes", host.virsh("pool-info", "images"))
    uuid = host.virsh("pool-uuid", "images").strip()

    # out of band: the target directory's mode, in the persistent definition
    root = etree.fromstring(host.virsh("pool-dumpxml", "--inactive", "images").encode())
    target = root.find("target")
    assert target is not None
    perms = target.find("permissions")
    if perms is None:
        perms = etree.SubElement(target, "permissions")
    mode = perms.find("mode")
    if mode is None:
        mode = etree.SubElement(perms, "mode")
    mode.text = "0711"
    _redefine(host, tmp_path, "pool", "images", etree.tostring(root, encoding="unicode"))
    assert "No changes" in ok(virtsync("plan", str(specs)))

    _write(specs, _host_doc(host, tmp_path), _pool_doc(pool_dir, False))
    out = _apply_then_no_changes(specs)
    assert "update-pool StoragePool images" in out, out
    info = host.virsh("pool-info", "images")
    assert re.search(r"Autostart:\s+no", info) and re.search(r"State:\s+running", info), info
    defined = etree.fromstring(host.virsh("pool-dumpxml", "--inactive", "images").encode())
    assert defined.findtext("target/permissions/mode") == "0711"
    assert defined.findtext("target/path") == str(pool_dir)
    assert host.virsh("pool-uuid", "images").strip() == uuid
