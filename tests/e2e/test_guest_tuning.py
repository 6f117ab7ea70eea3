"""Guest tuning on a real libvirtd host (firmware-only guests: no disk, no NIC; KVM, TCG without
/dev/kvm).

vCPU and emulator pinning of a running guest change live through a spec change (the same domain
id; `virsh vcpupin` and `virsh emulatorpin` show the new sets), a two-cell NUMA guest starts (its
live XML has both cells: QEMU took them), and a guest backed by 2 MiB huge pages starts: the test
allocates a few pages (/sys/kernel/mm/hugepages) and mounts a hugetlbfs that the host's libvirtd
is told of (qemu.conf hugetlbfs_mount) before the host starts (its mount namespace is a copy);
both are undone at teardown. Where the machine gives no huge pages, the hugepage test checks
the written XML and the plan-time refusal instead, and says so.

The hermetic hosts run libvirt without cgroups (tests/hosts/hermetic.py), so pinning is made
with sched_setaffinity there; cputune (cgroup cpu.shares and bandwidth) cannot run on them and
is covered on the test driver only (tests/integration/test_guest_tuning.py).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.engine_helpers import ok, virtsync
from tests.hosts.hermetic import HermeticHost

pytestmark = [pytest.mark.e2e, pytest.mark.devices, pytest.mark.timeout(300)]

HUGEPAGES = Path("/sys/kernel/mm/hugepages/hugepages-2048kB")
PAGES = 48  # 96 MiB: the 64 MiB guest and some room


class HugetlbfsHost(HermeticHost):
    """A hermetic host whose QEMU driver backs guests' huge pages with ``mount`` (a hugetlbfs)."""

    def __init__(self, base_dir: Path, mount: Path | None) -> None:
        super().__init__(base_dir, "tune")
        self.mount = mount

    def _prepare(self) -> None:
        super()._prepare()
        if self.mount is not None:
            conf = self.root / "etc" / "qemu.conf"
            conf.write_text(conf.read_text() + f'hugetlbfs_mount = "{self.mount}"\n')


@dataclass
class Tuning:
    host: HermeticHost
    work: Path
    hugepages: str | None  # why the machine gives none (None: it gave PAGES of 2 MiB)


def _pages() -> int:
    return int((HUGEPAGES / "nr_hugepages").read_text())


def _free_pages() -> int:
    return int((HUGEPAGES / "free_hugepages").read_text())


@pytest.fixture(scope="module")
def tuning(hermetic_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuning]:
    work = tmp_path_factory.mktemp("tune")
    mount: Path | None = None
    before: int | None = None
    why: str | None = None
    host: HugetlbfsHost | None = None
    try:
        if not HUGEPAGES.is_dir():
            why = f"{HUGEPAGES} does not exist (no 2 MiB huge pages in this kernel)"
        else:
            before = _pages()
            try:
                (HUGEPAGES / "nr_hugepages").write_text(str(before + PAGES))
            except OSError as e:
                why = f"cannot allocate huge pages: {e}"
            if why is None and _pages() < before + PAGES:
                why = f"the kernel gave {_pages() - before} of {PAGES} huge pages (memory too fragmented)"
            if why is None:
                mount = work / "hugepages"
                mount.mkdir()
                done = subprocess.run(["mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "hugetlbfs", str(mount)],
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    why, mount = f"cannot mount hugetlbfs: {done.stderr.strip()}", None
        host = HugetlbfsHost(work, mount)
        host.start()  # from the test thread, which outlives the module (the kernel ties the host to it)
        yield Tuning(host, work, why)
    finally:
        if host is not None:
            host.stop()
        if mount is not None:
            subprocess.run(["umount", str(mount)], check=False)
        if before is not None:
            with contextlib.suppress(OSError):
                (HUGEPAGES / "nr_hugepages").write_text(str(before))


def _specs(t: Tuning, name: str, guest: str) -> Path:
    specs = t.work / name
    specs.mkdir(exist_ok=True)
    (specs / "lab.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: lab}}
spec: {{uri: "{t.host.uri}"}}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: {name}}}
spec:
  host: lab
  state: running
  restartPolicy: never
{guest}""")
    return specs


def _pinned(virsh_out: str) -> dict[str, str]:
    """`virsh vcpupin` / `emulatorpin` output as {vCPU or '*': CPU list}."""
    return dict(re.findall(r"^\s*(\d+|\*):?\s+(\S+)\s*$", virsh_out, re.M))


def test_vcpu_and_emulator_pinning_change_live(tuning: Tuning) -> None:
    host = tuning.host
    guest = """  vcpus: 2
  memory: 64MiB
  cpu:
    pinning: {vcpus: {0: "0", 1: "1"}, emulator: "0"}
"""
    specs = _specs(tuning, "pinned", guest)
    ok(virtsync("apply", str(specs), "--yes"))
    dom_id = host.virsh("domid", "pinned").strip()
    assert _pinned(host.virsh("vcpupin", "pinned")) == {"0": "0", "1": "1"}
    assert _pinned(host.virsh("emulatorpin", "pinned")) == {"*": "0"}
    assert "No changes" in ok(virtsync("plan", str(specs)))

    swapped = guest.replace('{0: "0", 1: "1"}, emulator: "0"', '{0: "1", 1: "0"}, emulator: "1"')
    specs = _specs(tuning, "pinned", swapped)
    plan = ok(virtsync("plan", str(specs)), 2)
    assert "~ update Guest pinned (live)" in plan and "[live: pinVcpuFlags, pinEmulator]" in plan, plan
    assert "pending restart" not in plan, plan
    ok(virtsync("apply", str(specs), "--yes"))
    assert host.virsh("domid", "pinned").strip() == dom_id, "the guest was restarted"
    assert _pinned(host.virsh("vcpupin", "pinned")) == {"0": "1", "1": "0"}
    assert _pinned(host.virsh("emulatorpin", "pinned")) == {"*": "1"}
    inactive = host.virsh("dumpxml", "--inactive", "pinned")
    assert "<vcpupin vcpu='0' cpuset='1'/>" in inactive and "<emulatorpin cpuset='1'/>" in inactive, inactive
    assert "No changes" in ok(virtsync("plan", str(specs)))

    # pinned out of band: drift, repaired live
    host.virsh("vcpupin", "pinned", "0", "0", "--live")
    ok(virtsync("drift", str(specs)), 2)
    ok(virtsync("apply", str(specs), "--yes"))
    assert _pinned(host.virsh("vcpupin", "pinned"))["0"] == "1"
    assert host.virsh("domid", "pinned").strip() == dom_id
    assert "No changes" in ok(virtsync("plan", str(specs)))

    # a pin the spec drops is widened to every host CPU, live, and the definition loses it
    specs = _specs(tuning, "pinned", guest.replace('{0: "0", 1: "1"}, emulator: "0"', '{0: "1"}'))
    ok(virtsync("apply", str(specs), "--yes"))
    every = host.virsh("nodeinfo")
    cpus = int(re.search(r"^CPU\(s\):\s+(\d+)", every, re.M).group(1))  # type: ignore[union-attr]
    everything = "0" if cpus == 1 else f"0-{cpus - 1}"
    assert _pinned(host.virsh("vcpupin", "pinned")) == {"0": "1", "1": everything}
    assert _pinned(host.virsh("emulatorpin", "pinned")) == {"*": everything}
    assert "emulatorpin" not in host.virsh("dumpxml", "--inactive", "pinned")
    assert host.virsh("domid", "pinned").strip() == dom_id
    assert "No changes" in ok(virtsync("plan", str(specs)))


def test_a_two_cell_numa_guest_starts(tuning: Tuning) -> None:
    host = tuning.host
    specs = _specs(tuning, "numa2", """  vcpus: 2
  memory: 128MiB
  cpu: {topology: {sockets: 2, cores: 1, threads: 1}}
  numa:
    cells: [{id: 0, cpus: "0", memory: 64MiB}, {id: 1, cpus: "1", memory: 64MiB}]
    hostNodes: "0"
""")
    ok(virtsync("apply", str(specs), "--yes"))
    assert host.virsh("domstate", "numa2").strip() == "running"
    live = host.virsh("dumpxml", "numa2")
    cells = re.findall(r"<cell id='(\d)' cpus='(\d)' memory='(\d+)' unit='KiB'", live)
    assert cells == [("0", "0", "65536"), ("1", "1", "65536")], live
    assert "<memory mode='strict' nodeset='0'/>" in live, live
    assert "No changes" in ok(virtsync("plan", str(specs)))


def test_a_hugepage_backed_guest_starts(tuning: Tuning) -> None:
    host = tuning.host
    specs = _specs(tuning, "huge", """  vcpus: 1
  memory: 64MiB
  memoryBacking: {hugepages: {size: 2MiB}}
""")
    if tuning.hugepages is not None:
        # said, then what can be checked without pages: the plan refuses the guest, naming why
        print(f"no huge pages on this machine ({tuning.hugepages}): checking the refusal only")
        out = virtsync("plan", str(specs))
        assert out.returncode == 1 and "2MiB huge pages: it has none of that size" in out.stdout, out.stdout
        return
    free = _free_pages()
    ok(virtsync("apply", str(specs), "--yes"))
    assert host.virsh("domstate", "huge").strip() == "running"
    live = host.virsh("dumpxml", "huge")
    assert "<page size='2048' unit='KiB'/>" in live, live
    deadline = time.monotonic() + 10
    while _free_pages() > free - 32 and time.monotonic() < deadline:  # QEMU maps the 32 pages as it starts
        time.sleep(0.2)
    assert _free_pages() <= free - 32, f"the guest took {free - _free_pages()} huge pages, not 32"
    assert "No changes" in ok(virtsync("plan", str(specs)))
    host.virsh("destroy", "huge")  # its pages go back before the fixture gives them back to the kernel
