"""Adopting hosts full of guests that other tools made (issue 20): tests/corpus/adoption/.

Every corpus definition (virt-install/virt-manager, terraform-provider-libvirt, kcli, OpenStack
Nova, a Windows guest, a hand-written BIOS guest, a guest with the devices virtsync models) is
defined on one hermetic host, and started where it runs here without an OS; then
``export --all -o DIR/`` → ``validate`` → ``plan`` (exit 0) → ``adopt --yes`` → ``apply --yes``
must leave each persistent definition as it was, apart from virtsync's ownership element. The
virt-install UEFI guest is defined as made (type kvm: OVMF does not run under this machine's
nested KVM) and, as a second case, run as a TCG copy (type qemu), which boots OVMF with an NVRAM.
The host gets what the corpus refers to first: a dir pool ``default`` with the guests' images
(one a pool volume, two cloud-init/installer ISOs), a NAT network ``default``, a host bridge
``br-corp`` and a veth ``vcorp0`` for the bridge and direct (macvtap) NICs, all inside the host's
namespaces. A second host holds ten mixed guests, three of whose exported specs are edited
before ``adopt``: those are named with the reason and left untouched, the seven others adopted.

The Xen PV shape of the issue is left out here: the Xen test host boots Xen under TCG (minutes),
see tests/e2e/test_xen.py.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from lxml import etree

from tests.e2e.engine_helpers import ok, virtsync
from tests.hosts.hermetic import HermeticHost, HermeticHostError, HostFactory

pytestmark = [pytest.mark.e2e, pytest.mark.networks]

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "adoption"
OWNER_NS = "https://virtsync.dev/xmlns/owner/v1"
IMAGES = "/var/lib/libvirt/images"


@dataclass(frozen=True)
class Case:
    file: str
    guest: str
    run: bool  # started: it runs here in firmware (SeaBIOS, OVMF under TCG) without an OS
    tcg: str | None = None  # run a TCG copy under this name: domain type qemu, a disk and MAC of its own


CASES = [
    Case("virt-install-q35-uefi.xml", "vi-uefi", run=False),  # OVMF does not run under nested KVM
    Case("virt-install-q35-uefi.xml", "vi-uefi-tcg", run=True, tcg="vi-uefi"),  # OVMF runs under TCG
    Case("terraform-volume-cloudinit.xml", "tf-web", run=True),
    Case("kcli-metadata.xml", "kcli-vm", run=False),  # host-model CPU aborts QEMU on this machine
    Case("nova-block-rbd.xml", "instance-0000002a", run=False),  # no Ceph cluster, no iSCSI LUN
    Case("windows-sata-hyperv-tpm.xml", "win10", run=False),  # nested KVM refuses the Hyper-V clock MSR
    Case("plain-bios-bridge-direct.xml", "legacy", run=True),
    Case("modelled-devices.xml", "appliance", run=True),
]

# (volume, format, size) made in pool default, and ISO images written into it
VOLUMES = [("vi-uefi.qcow2", "qcow2", "64M"), ("vi-uefi-tcg.qcow2", "qcow2", "64M"),
           ("tf-web-root.qcow2", "qcow2", "64M"), ("kcli-vm_0.img", "qcow2", "64M"), ("win10.qcow2", "qcow2", "64M"),
           ("legacy.img", "raw", "16M"), ("appliance.qcow2", "qcow2", "64M"), ("hand-vol.qcow2", "qcow2", "16M")]
ISOS = ["tf-web-commoninit.iso", "kcli-vm.ISO", "win10-install.iso"]
CEPH_SECRET = "3f2e1d0c-9b8a-4766-a5b4-c3d2e1f0a9b8"
CEPH_VALUE_B64 = "QVFCMmJrMWtBQUFBQUJBQWN0bHRlc3RrZXlmb3J2aXJ0c3luYQ=="  # a made-up cephx key, base64


def canonical(xml: str) -> str:
    """The definition without virtsync's ownership element (and the <metadata> it alone made),
    re-serialised without whitespace: what must not change. (Not C14N: kcli's xmlns:kvirt="kvirt"
    is a relative namespace URI, which C14N refuses; libvirt writes attributes in a fixed order.)"""
    root = etree.fromstring(xml.encode(), etree.XMLParser(remove_blank_text=True))
    for meta in root.findall("metadata"):
        for owner in meta.findall(f"{{{OWNER_NS}}}*"):
            meta.remove(owner)
        if len(meta) == 0:
            root.remove(meta)
    return etree.tostring(root, encoding="unicode")


def _netns(host: HermeticHost, *argv: str) -> None:
    done = host.run_in_netns(list(argv))
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr}"


def prepare(host: HermeticHost, tmp: Path) -> None:
    """The pool, images, network, bridge and veth the corpus guests name."""
    pool = tmp / "pool-default.xml"
    pool.write_text(f"<pool type='dir'><name>default</name><target><path>{IMAGES}</path></target></pool>")
    host.virsh("pool-define", str(pool))
    host.virsh("pool-build", "default")
    host.virsh("pool-start", "default")
    for name, fmt, size in VOLUMES:
        host.virsh("vol-create-as", "default", name, size, "--format", fmt)
    seed = tmp / "seed"
    seed.mkdir()
    (seed / "user-data").write_text("#cloud-config\nhostname: tf-web\n")
    (seed / "meta-data").write_text("instance-id: tf-web\n")
    for iso in ISOS:
        _netns(host, "genisoimage", "-quiet", "-o", f"{IMAGES}/{iso}", "-V", "cidata", "-J", "-r", str(seed))
    host.virsh("pool-refresh", "default")
    net = tmp / "net-default.xml"
    net.write_text("<network><name>default</name><forward mode='nat'/><bridge name='virbr0' stp='on' delay='0'/>"
                   "<ip address='192.168.122.1' netmask='255.255.255.0'><dhcp>"
                   "<range start='192.168.122.2' end='192.168.122.254'/></dhcp></ip></network>")
    host.virsh("net-define", str(net))
    host.virsh("net-start", "default")
    # the Ceph secret Nova's rbd disk names (libvirt's usage name as Nova writes it), with a value
    sec = tmp / "secret-ceph.xml"
    sec.write_text(f"<secret ephemeral='no' private='no'><uuid>{CEPH_SECRET}</uuid>"
                   "<usage type='ceph'><name>client.nova secret</name></usage></secret>")
    host.virsh("secret-define", str(sec))
    host.virsh("secret-set-value", CEPH_SECRET, CEPH_VALUE_B64)
    _netns(host, "ip", "link", "add", "br-corp", "type", "bridge")
    _netns(host, "ip", "link", "set", "br-corp", "up")
    _netns(host, "ip", "link", "add", "vcorp0", "type", "veth", "peer", "name", "vcorp1")
    for dev in ("vcorp0", "vcorp1"):
        _netns(host, "ip", "link", "set", dev, "up")


def define(host: HermeticHost, case: Case, tmp: Path) -> None:
    """Define (and start) the corpus guest; then define libvirt's own dump of it once more.

    libvirt's first define adds controllers in an order that its next define of the same XML
    re-sorts (kcli's sdz CD-ROM makes SATA controllers, which then move ahead of pcie-root): the
    baseline is that fixed point, so that any later difference is virtsync's doing.
    """
    source = CORPUS / case.file
    if case.tcg:
        source = tmp / f"{case.guest}.xml"
        source.write_text(_tcg_copy((CORPUS / case.file).read_text(), case.tcg, case.guest))
    host.virsh("define", str(source))
    again = tmp / f"{case.guest}.inactive.xml"
    again.write_text(host.virsh("dumpxml", "--inactive", case.guest))
    host.virsh("define", str(again))
    if case.run:
        host.virsh("start", case.guest)


def _tcg_copy(xml: str, old: str, new: str) -> str:
    """The definition as it would be on a host without usable KVM (type qemu, the default CPU
    model: a host CPU mode needs KVM), under another name, UUID, MAC and disk, with 256 MiB for
    OVMF."""
    root = etree.fromstring(xml.encode())
    root.set("type", "qemu")
    root.find("name").text = new  # type: ignore[union-attr]
    root.remove(root.find("uuid"))  # type: ignore[arg-type]
    for cpu in root.findall("cpu"):
        root.remove(cpu)
    for tag in ("memory", "currentMemory"):
        el = root.find(tag)
        if el is not None:
            el.set("unit", "MiB")
            el.text = "256"
    for src in root.iterfind("devices/disk/source"):
        src.set("file", src.get("file", "").replace(old, new))
    for mac in root.iterfind("devices/interface/mac"):
        mac.set("address", mac.get("address", "")[:-2] + "ff")
    return etree.tostring(root, encoding="unicode")


def remove_guests(host: HermeticHost) -> None:
    """Destroy and undefine every guest (the host is stopped afterwards anyway)."""
    for name in host.virsh("list", "--all", "--name").split():
        with contextlib.suppress(HermeticHostError):
            host.virsh("destroy", name)
        with contextlib.suppress(HermeticHostError):
            host.virsh("undefine", name, "--nvram", "--tpm")


@dataclass
class Adoption:
    host: HermeticHost
    tree: Path
    before: dict[str, str]
    after: dict[str, str] = field(default_factory=dict)
    steps: dict[str, str] = field(default_factory=dict)  # verb -> output
    codes: dict[str, int] = field(default_factory=dict)


def _run(a: Adoption, verb: str, *args: str) -> str:
    proc = virtsync(verb, *args)
    a.codes[verb] = proc.returncode
    a.steps[verb] = proc.stdout + proc.stderr
    return a.steps[verb]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, hermetic_session: None) -> Iterator[Adoption]:
    """One host with every corpus guest, exported, planned, adopted and applied once."""
    factory = HostFactory(tmp_path_factory.mktemp("hh"))
    tmp = tmp_path_factory.mktemp("corpus")
    try:
        host = factory("corpus")
        try:
            prepare(host, tmp)
            for case in CASES:
                define(host, case, tmp)
            a = Adoption(host, tmp / "tree", {c.guest: host.virsh("dumpxml", "--inactive", c.guest) for c in CASES})
            _run(a, "export", "--connect", host.uri, "--host", "lab", "--all", "-o", f"{a.tree}/")
            for verb in ("validate", "plan", "adopt", "apply"):
                if a.codes["export"] != 0:
                    a.codes[verb], a.steps[verb] = -1, f"{verb}: not run, export failed"
                else:
                    _run(a, verb, str(a.tree), *(["--yes"] if verb in ("adopt", "apply") else []))
            a.after = {c.guest: host.virsh("dumpxml", "--inactive", c.guest) for c in CASES}
            yield a
        finally:
            remove_guests(host)
    finally:
        factory.close()


def _guest_lines(out: str, guest: str) -> list[str]:
    return [line for line in out.splitlines() if re.search(rf"\b{re.escape(guest)}\b", line)]


def test_the_whole_host_exports_validates_and_plans_nothing(corpus: Adoption) -> None:
    assert corpus.codes["export"] == 0, corpus.steps["export"]
    files = sorted(p.name for p in corpus.tree.iterdir())
    assert {f"guest-{c.guest}.yaml" for c in CASES} <= set(files), files
    assert "storagepool-default.yaml" in files and "network-default.yaml" in files, files
    assert corpus.codes["validate"] == 0, corpus.steps["validate"]
    assert corpus.codes["plan"] == 0, corpus.steps["plan"]
    assert "No changes" in corpus.steps["plan"], corpus.steps["plan"]
    assert corpus.codes["adopt"] == 0, corpus.steps["adopt"]
    assert corpus.codes["apply"] == 0, corpus.steps["apply"]
    assert "Apply: 0 created, 0 updated" in corpus.steps["apply"], corpus.steps["apply"]


@pytest.mark.parametrize("case", CASES, ids=[c.guest for c in CASES])
def test_a_corpus_guest_is_adopted_and_apply_changes_nothing(corpus: Adoption, case: Case) -> None:
    spec = corpus.tree / f"guest-{case.guest}.yaml"
    assert spec.exists(), corpus.steps["export"]
    assert not _guest_lines(corpus.steps["plan"], case.guest), corpus.steps["plan"]
    assert "left alone: Guest " + case.guest not in corpus.steps["adopt"], corpus.steps["adopt"]
    assert not _guest_lines(corpus.steps["apply"], case.guest), corpus.steps["apply"]
    assert OWNER_NS in corpus.after[case.guest], "not adopted:\n" + corpus.steps["adopt"]
    assert canonical(corpus.after[case.guest]) == canonical(corpus.before[case.guest])
    state = corpus.host.virsh("domstate", case.guest).strip()
    assert state == ("running" if case.run else "shut off"), state


def _spec(corpus: Adoption, guest: str) -> str:
    return (corpus.tree / f"guest-{guest}.yaml").read_text()


def test_regression_a_volume_disk_guest_keeps_its_disk_through_export_adopt_and_apply(corpus: Adoption) -> None:
    """terraform's <disk type='volume'> was exported as disks: [] and then detached."""
    text = _spec(corpus, "tf-web")
    assert f"path: {IMAGES}/tf-web-root.qcow2" in text, text  # the volume, by its pool's file
    assert f"path: {IMAGES}/tf-web-commoninit.iso" in text and "device: cdrom" in text, text
    assert "ignore" not in text, text  # the disks are compared, not left alone
    for xml in (corpus.after["tf-web"], corpus.host.virsh("dumpxml", "tf-web")):
        assert "<source pool='default' volume='tf-web-root.qcow2'" in xml, xml
        assert "tf-web-commoninit.iso" in xml, xml
    blk = corpus.host.virsh("domblklist", "tf-web").split()
    assert "vda" in blk and "hdd" in blk, blk


def test_regression_a_bridge_nic_guest_keeps_its_nics_through_export_adopt_and_apply(corpus: Adoption) -> None:
    """a <interface type='bridge'> NIC was exported as interfaces: [] and then unplugged live."""
    text = _spec(corpus, "legacy")
    assert "- bridge: br-corp\n    mac: 52:54:00:4e:50:01" in text, text
    assert "direct:\n      dev: vcorp0\n      mode: bridge\n    mac: 52:54:00:4e:50:02" in text, text
    assert "ignore" not in text, text
    live = corpus.host.virsh("domiflist", "legacy")
    assert "52:54:00:4e:50:01" in live and "br-corp" in live, live
    assert "52:54:00:4e:50:02" in live and "vcorp0" in live, live
    nova = _spec(corpus, "instance-0000002a")
    assert "- bridge: br-corp\n    mac: fa:16:3e:5b:2a:01" in nova, nova  # its tap target dev stays libvirt's
    assert "<target dev='tap1a2b3c4d-5e'/>" in corpus.after["instance-0000002a"]


def test_what_a_spec_cannot_hold_is_kept_under_ignore_and_foreign_metadata_survives(corpus: Adoption) -> None:
    nova = _spec(corpus, "instance-0000002a")
    assert "# disk vda (disk on network storage rbd:vms/6f1d2c3b-8e4a-4d5f-9a0b-1c2d3e4f5a06_disk" in nova, nova
    assert "# disk vdb (disk on block device /dev/disk/by-path/ip-192.0.2.21" in nova, nova
    assert "  ignore:\n  - /spec/disks" in nova and "/dev/disk" not in _spec_body(nova), nova
    host = (corpus.tree / "host-lab.yaml").read_text()
    assert "/dev" not in host, host
    after = corpus.after
    assert "<kvirt:plan>lab-plan</kvirt:plan>" in after["kcli-vm"], after["kcli-vm"]
    assert "<nova:name>db-1</nova:name>" in after["instance-0000002a"]
    assert '<libosinfo:os id="http://debian.org/debian/12"/>' in after["vi-uefi"]
    assert "<entry name='product'>OpenStack Nova</entry>" in after["instance-0000002a"]
    assert "<secret type='ceph' uuid='3f2e1d0c-9b8a-4766-a5b4-c3d2e1f0a9b8'/>" in after["instance-0000002a"]


def _spec_body(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


HANDMADE = {
    "hand-diskless": "<domain type='kvm'><name>hand-diskless</name><memory unit='MiB'>32</memory>"
                     "<os><type arch='x86_64'>hvm</type></os></domain>",
    "hand-net": "<domain type='kvm'><name>hand-net</name><memory unit='MiB'>48</memory><os><type>hvm</type></os>"
                "<devices><interface type='network'><mac address='52:54:00:ee:00:01'/><source network='default'/>"
                "<model type='virtio'/><rom enabled='no'/></interface></devices></domain>",
    "hand-vol": "<domain type='kvm'><name>hand-vol</name><memory unit='MiB'>48</memory><os><type>hvm</type></os>"
                "<devices><disk type='volume' device='disk'><driver name='qemu' type='qcow2'/>"
                "<source pool='default' volume='hand-vol.qcow2'/><target dev='vda' bus='virtio'/></disk>"
                "</devices></domain>",
}
# (guest, spec text, edited text, the field adopt names): the specs that then differ from the host
EDITS = [("legacy", "  memory: 96MiB\n", "  memory: 80MiB\n", "memory"),
         ("tf-web", "  autostart: false\n", "  autostart: true\n", "autostart"),
         ("hand-vol", "  memory: 48MiB\n", "  memory: 40MiB\n", "memory")]


def test_adopt_on_a_host_with_ten_mixed_guests_adopts_the_matching_ones_names_the_others_and_changes_nothing(
        hermetic_host: HermeticHost, tmp_path: Path) -> None:
    host = hermetic_host
    try:
        prepare(host, tmp_path)
        cases = [c for c in CASES if not c.tcg]  # no OVMF under TCG here: keep the host idle
        for case in cases:
            define(host, case, tmp_path)
        for name, xml in HANDMADE.items():
            path = tmp_path / f"{name}.xml"
            path.write_text(xml)
            host.virsh("define", str(path))
        host.virsh("start", "hand-net")
        names = [c.guest for c in cases] + list(HANDMADE)
        assert len(names) == 10
        running = {n: host.virsh("domid", n).strip() for n in names if host.virsh("domstate", n).strip() == "running"}
        assert set(running) == {"tf-web", "legacy", "appliance", "hand-net"}, running
        tree = tmp_path / "tree"
        ok(virtsync("export", "--connect", host.uri, "--host", "lab", "--all", "-o", f"{tree}/"))
        for guest, old, new, _field in EDITS:
            spec = tree / f"guest-{guest}.yaml"
            text = spec.read_text()
            assert text.count(old) == 1, (old, text)
            spec.write_text(text.replace(old, new))
        before = {n: host.virsh("dumpxml", "--inactive", n) for n in names}

        proc = virtsync("adopt", str(tree), "--yes")
        ok(proc, 2)  # exit 2: some were left alone
        out = proc.stdout + proc.stderr

        edited = {guest: why for guest, _o, _n, why in EDITS}
        for guest, why in edited.items():
            assert f"left alone: Guest {guest} on lab: drift: {why}" in out, out
        for name in names:
            after = host.virsh("dumpxml", "--inactive", name)
            if name in edited:
                assert after == before[name], f"{name} was changed although it was left alone"
                assert OWNER_NS not in after
            else:
                assert f"adopt Guest {name} on lab" in out, out
                assert OWNER_NS in after, name
                assert canonical(after) == canonical(before[name]), name
        assert "adopt Network default on lab" in out and "adopt StoragePool default on lab" in out, out
        assert "Adopt: 9 adopted, 3 left alone, 0 failed" in out, out  # 7 guests, the pool, the network
        # nothing else changed: the same guests run, none restarted, none started
        now = {n: host.virsh("domid", n).strip() for n in names if host.virsh("domstate", n).strip() == "running"}
        assert now == running
        # the three left alone are still drift; the adopted ones plan nothing
        plan = ok(virtsync("plan", str(tree)), 2)
        changed = {m.group(1) for m in re.finditer(r"~ update Guest (\S+)", plan)}
        assert changed == set(edited), plan
    finally:
        remove_guests(host)


def test_a_running_uefi_guest_is_exported_as_uefi_and_keeps_its_nvram(corpus: Adoption) -> None:
    text = _spec(corpus, "vi-uefi-tcg")
    assert "firmware: uefi" in text and "state: running" in text, text
    assert "firmware: uefi" in _spec(corpus, "vi-uefi")
    assert "<os firmware='efi'>" in corpus.after["vi-uefi-tcg"]  # libvirt 9.0 picks the firmware at start
    live = corpus.host.virsh("dumpxml", "vi-uefi-tcg")  # it runs on OVMF, with its NVRAM
    assert "<loader" in live and "<nvram" in live and "vi-uefi-tcg_VARS.fd" in live, live


def test_what_libvirt_keeps_beyond_the_devices_is_exported_as_fields(corpus: Adoption) -> None:
    """SMBIOS mode, SeaBIOS options, boot menu, RNG rate, video vram/heads, NIC MTU and tap name
    are fields (issue 20): exported, compared, and the plan above was still empty."""
    legacy = _spec(corpus, "legacy")
    assert "smbios: emulate" in legacy and "useSerial: true" in legacy and "rebootTimeout: 0" in legacy, legacy
    assert "bootMenu:\n    enable: true\n    timeout: 3000" in legacy, legacy
    nova = _spec(corpus, "instance-0000002a")
    assert "    mtu: 1450\n" in nova and "    targetDev: tap1a2b3c4d-5e\n" in nova, nova
    assert "rate:\n      bytes: 2048\n      period: 1000" in nova and "smbios: sysinfo" in nova, nova
    assert "vram: 16384" in _spec(corpus, "appliance") and "vram: 65536" in _spec(corpus, "win10")
    assert "bootMenu:\n    enable: true\n    timeout: 60" in _spec(corpus, "kcli-vm")
    # a running guest's tap is libvirt's own name (vnetN): never exported
    assert "targetDev" not in _spec(corpus, "tf-web") and "vnet" in corpus.host.virsh("domiflist", "tf-web")


def test_a_hosts_libvirt_secret_is_exported_as_a_reference_and_its_value_is_left_alone(corpus: Adoption) -> None:
    """export --all writes the Ceph secret Nova's disk names as a kind: Secret reference (usage and
    id, optional, a value file to fill in); the value is in no exported file, and validate, plan,
    adopt and apply of the tree left the host's secret and its value as they were."""
    path = corpus.tree / "secret-ceph-client.nova-secret.yaml"
    assert path.exists(), sorted(p.name for p in corpus.tree.iterdir())
    text = path.read_text()
    assert f"# libvirt secret {CEPH_SECRET} on host lab (ceph 'client.nova secret')" in text, text
    assert "fromFile: ceph-client.nova-secret.secret\n  optional: true\n" in text, text
    assert "libvirt:\n    usage: ceph\n    id: client.nova secret\n" in text, text
    assert not (corpus.tree / "ceph-client.nova-secret.secret").exists()
    for f in corpus.tree.iterdir():
        assert CEPH_VALUE_B64 not in f.read_text(), f
    assert corpus.host.virsh("secret-get-value", CEPH_SECRET).strip() == CEPH_VALUE_B64
    assert "client.nova secret" in corpus.host.virsh("secret-list")
