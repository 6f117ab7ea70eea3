"""Peers side by side (issue 17, target 8): the same 20-guest scenario with the tools an operator
would pick instead, each on a fresh hermetic host of its own: Ansible's community.libvirt
(converge and no-op), raw sequential libvirt calls, and `virtsync apply` (converge and no-op).

Run by `make bench-peers`, never by CI nor `make bench` (the file name keeps pytest from
collecting it on its own): it installs Ansible (whose `ansible` package carries community.libvirt)
with libvirt-python and lxml into a throw-away venv of its own under
``~/.cache/virtsync-tests/ansible-venv`` (``$XDG_CACHE_HOME`` is honoured), made on the first run
and reused after; delete the directory to start over.

The scenario (as tests/bench/test_engine_bench.py's converge): one NAT network and 20 diskless
guests with a NIC on it (32 MiB, 1 vCPU, no boot ROM), all running. Ansible and the raw calls
define the same XML; the playbook is what an operator writes: virt_net define + active, then
virt command=define and state=running for each guest. Before each no-op the guests' firmware is
given up to 30 s to settle (the same for every tool).
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import libvirt
import pytest

from tests.bench.test_engine_bench import _settle, _specs
from tests.hosts.hermetic import HermeticHost, missing_prerequisites, virt_type

pytestmark = [pytest.mark.bench, pytest.mark.timeout(3600)]

GUESTS = 20
NETWORK_XML = ("<network><name>net</name><forward mode='nat'/><bridge name='virbr-bench'/>"
               "<ip address='192.168.190.1' prefix='24'><dhcp><range start='192.168.190.10' "
               "end='192.168.190.250'/></dhcp></ip></network>")
PACKAGES = ["ansible", "libvirt-python", "lxml"]


def _names() -> list[str]:
    return [f"g{i:04d}" for i in range(GUESTS)]


def _domain_xml(i: int) -> str:
    # The guests of test_engine_bench._specs: the same names, MACs, memory and no boot ROM.
    return (f"<domain type='{virt_type()}'><name>g{i:04d}</name><memory unit='MiB'>32</memory>"
            "<vcpu>1</vcpu><os><type>hvm</type></os><devices><interface type='network'>"
            f"<mac address='52:54:00:19:{i >> 8:02x}:{i & 255:02x}'/><source network='net'/>"
            "<model type='virtio'/><rom enabled='no'/></interface></devices></domain>")


def _cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "virtsync-tests" / "ansible-venv"


def ansible_venv() -> Path:
    """The venv holding Ansible, libvirt-python and lxml: made once (a stamp marks it whole)."""
    venv = _cache()
    stamp = venv / "virtsync-installed"
    if stamp.exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=300)
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *PACKAGES], capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, f"pip install {' '.join(PACKAGES)} failed:\n{done.stderr[-3000:]}"
    listed = subprocess.run([str(venv / "bin" / "ansible-galaxy"), "collection", "list", "community.libvirt"],
                            capture_output=True, text=True, timeout=300, env=_ansible_env(venv.parent))
    assert "community.libvirt" in listed.stdout, f"the ansible package has no community.libvirt:\n{listed.stdout}"
    freeze = subprocess.run([str(venv / "bin" / "pip"), "freeze"], capture_output=True, text=True, timeout=120)
    stamp.write_text(freeze.stdout)
    return venv


def _ansible_env(home: Path) -> dict[str, str]:
    # Everything Ansible writes stays under a directory of ours; an empty ansible.cfg of ours.
    cfg = home / "ansible.cfg"
    cfg.write_text("[defaults]\n")
    return {**os.environ, "ANSIBLE_HOME": str(home / "ansible-home"), "ANSIBLE_CONFIG": str(cfg),
            "ANSIBLE_LOCAL_TEMP": str(home / "ansible-tmp"), "ANSIBLE_REMOTE_TEMP": str(home / "ansible-tmp"),
            "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0", "ANSIBLE_HOST_KEY_CHECKING": "0"}


def _playbook(d: Path, uri: str) -> Path:
    (d / "xml").mkdir(parents=True, exist_ok=True)
    (d / "xml" / "net.xml").write_text(NETWORK_XML)
    for i, name in enumerate(_names()):
        (d / "xml" / f"{name}.xml").write_text(_domain_xml(i))
    names = "\n".join(f"      - {n}" for n in _names())
    (d / "site.yml").write_text(f"""- hosts: localhost
  gather_facts: false
  vars:
    uri: "{uri}"
    guests:
{names}
  tasks:
    - name: the network is defined
      community.libvirt.virt_net:
        command: define
        name: net
        xml: "{{{{ lookup('file', 'xml/net.xml') }}}}"
        uri: "{{{{ uri }}}}"
    - name: the network is active
      community.libvirt.virt_net:
        name: net
        state: active
        uri: "{{{{ uri }}}}"
    - name: the guests are defined
      community.libvirt.virt:
        command: define
        xml: "{{{{ lookup('file', 'xml/' + item + '.xml') }}}}"
        uri: "{{{{ uri }}}}"
      loop: "{{{{ guests }}}}"
    - name: the guests are running
      community.libvirt.virt:
        name: "{{{{ item }}}}"
        state: running
        uri: "{{{{ uri }}}}"
      loop: "{{{{ guests }}}}"
""")
    return d / "site.yml"


def _ansible(venv: Path, playbook: Path) -> tuple[float, int]:
    """One ansible-playbook run: (seconds, the recap's changed count)."""
    t = time.perf_counter()
    done = subprocess.run([str(venv / "bin" / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           "-e", f"ansible_python_interpreter={venv / 'bin' / 'python'}", str(playbook)],
                          capture_output=True, text=True, timeout=1800, cwd=playbook.parent,
                          env=_ansible_env(playbook.parent))
    secs = time.perf_counter() - t
    recap = re.search(r"localhost\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", done.stdout)
    assert done.returncode == 0 and recap is not None, f"ansible-playbook failed:\n{done.stdout[-4000:]}" \
                                                       f"\n{done.stderr[-2000:]}"
    return secs, int(recap.group(2))


def _raw_sequential(uri: str) -> float:
    conn = libvirt.open(uri)
    try:
        started = time.perf_counter()
        conn.networkDefineXML(NETWORK_XML).create()
        for i in range(GUESTS):
            conn.defineXML(_domain_xml(i)).create()
        return time.perf_counter() - started
    finally:
        conn.close()


def _converged(host: HermeticHost) -> None:
    conn = host.connect()
    try:
        running = sorted(d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_RUNNING))
        assert running == _names(), f"running on {host.name}: {running}"
        assert conn.networkLookupByName("net").isActive()
    finally:
        conn.close()


def _virtsync(specs: Path, uri: str) -> tuple[float, str]:
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "controller", "apply", str(specs), "--connect", uri, "--yes"],
                          capture_output=True, text=True, timeout=900)
    secs = time.perf_counter() - t
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return secs, done.stdout


def _fresh_host(name: str) -> tuple[HermeticHost, tempfile.TemporaryDirectory[str]]:
    base = tempfile.TemporaryDirectory(prefix="vp", dir="/tmp")
    host = HermeticHost(Path(base.name), name)
    try:
        host.start()
    except BaseException:
        base.cleanup()
        raise
    return host, base


def test_virtsync_beside_ansible_and_raw_calls(tmp_path: Path) -> None:
    missing = missing_prerequisites()
    if missing:
        pytest.fail("the peers benchmark needs hermetic hosts: " + "; ".join(missing))
    t = time.perf_counter()
    venv = ansible_venv()
    prepared = time.perf_counter() - t
    versions = {name: version for name, _, version in
                (line.partition("==") for line in (venv / "virtsync-installed").read_text().split())}
    figures: dict[str, float] = {}
    settled: dict[str, float] = {}

    host, base = _fresh_host("raw")
    try:
        figures["raw"] = _raw_sequential(host.uri)
        _converged(host)
    finally:
        host.stop()
        base.cleanup()

    host, base = _fresh_host("ansible")
    try:
        playbook = _playbook(tmp_path / "ansible", host.uri)
        figures["ansible"], changed_first = _ansible(venv, playbook)
        _converged(host)
        settled["ansible"] = _settle(host, timeout=30)
        figures["ansible no-op"], changed_noop = _ansible(venv, playbook)
        _converged(host)
    finally:
        host.stop()
        base.cleanup()

    specs = _specs(tmp_path / "virtsync", GUESTS, "running", network=True)
    host, base = _fresh_host("virtsync")
    try:
        figures["virtsync"], _ = _virtsync(specs, host.uri)
        _converged(host)
        settled["virtsync"] = _settle(host, timeout=30)
        noops = []
        for _ in range(3):
            secs, out = _virtsync(specs, host.uri)
            assert "No changes" in out, out[-2000:]
            noops.append(secs)
        figures["virtsync no-op"] = statistics.median(noops)
    finally:
        host.stop()
        base.cleanup()

    load = os.getloadavg()
    converge = figures["virtsync"] / figures["ansible"]
    noop = figures["virtsync no-op"] / figures["ansible no-op"]
    print(f"\n{GUESTS} diskless guests with a NIC on a NAT network, a fresh hermetic host per tool "
          f"(ansible {versions.get('ansible', '?')}, ansible-core {versions.get('ansible-core', '?')}; "
          f"venv {'made' if prepared > 5 else 'reused'} in {prepared:.0f} s)")
    print(f"  Ansible community.libvirt converge: {figures['ansible']:7.2f} s  (changed={changed_first})")
    print(f"  Ansible no-op re-run:               {figures['ansible no-op']:7.2f} s  (changed={changed_noop}; "
          f"after {settled['ansible']:.0f} s of settling)")
    print(f"  raw sequential libvirt calls:       {figures['raw']:7.2f} s")
    print(f"  virtsync apply converge:            {figures['virtsync']:7.2f} s  (ratio to Ansible {converge:.3f}, "
          f"target ≤ 0.15; to raw {figures['virtsync'] / figures['raw']:.2f})")
    print(f"  virtsync no-op apply (median of 3): {figures['virtsync no-op']:7.2f} s  (ratio to Ansible "
          f"{noop:.3f}, target ≤ 0.03; after {settled['virtsync']:.0f} s of settling)")
    print(f"  load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs")
    assert converge <= 0.15
    assert noop <= 0.03
