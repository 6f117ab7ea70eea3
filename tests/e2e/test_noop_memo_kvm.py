"""The no-op memo on a real libvirtd host: a `virtsync plan` answered from the memo only while
the host answers every recorded call as before; changes libvirt sends no event for
(`setmem --config`, autostart, a network's DHCP host) and a guest's power state are seen at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.engine_helpers import ROOT, ok
from tests.hosts.hermetic import HermeticHost

pytestmark = [pytest.mark.e2e, pytest.mark.kvm, pytest.mark.timeout(300)]

USED = "no-op memo: every input as at the last no-op run"


def _specs(root: Path, uri: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    docs = [f"apiVersion: virtsync/v1\nkind: Host\nmetadata: {{name: h}}\nspec: {{uri: '{uri}'}}\n",
            "apiVersion: virtsync/v1\nkind: Network\nmetadata: {name: memonet}\nspec:\n  host: h\n"
            "  mode: nat\n  bridge: virbr-memo\n  ipv4:\n    address: 192.168.191.1/24\n"
            "    dhcp: {start: 192.168.191.10, end: 192.168.191.99}\n"]
    for i, state in enumerate(("running", "stopped")):
        docs.append(f"apiVersion: virtsync/v1\nkind: Guest\nmetadata: {{name: m{i}}}\nspec:\n  host: h\n"
                    f"  state: {state}\n  vcpus: 1\n  memory: 64MiB\n"
                    f"  interfaces: [{{network: memonet, mac: '52:54:00:19:ee:{i:02x}', bootRom: false}}]\n")
    (root / "specs.yaml").write_text("---\n".join(docs))
    return root


def _run(verb: str, specs: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controller", verb, str(specs), *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)


def test_a_noop_plan_is_answered_again_only_until_the_host_changes(
        tmp_path: Path, hermetic_host: HermeticHost) -> None:
    specs = _specs(tmp_path / "specs", hermetic_host.uri)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "VIRTSYNC_NOOP_MEMO": "report",
           "VIRTSYNC_COORDINATION": f"file://{tmp_path / 'coord'}"}
    ok(_run("apply", specs, env, "--yes"))

    def plan_twice() -> subprocess.CompletedProcess[str]:
        first = _run("plan", specs, env)
        assert first.returncode == 0 and "No changes" in first.stdout, first.stdout + first.stderr
        again = _run("plan", specs, env)
        assert again.returncode == 0 and USED in again.stderr, again.stderr
        assert again.stdout == first.stdout
        return again

    plan_twice()
    # (what, virsh command, whether the plan changes something: the specs declare neither
    # autostart nor DHCP hosts, so those are left alone, but the memo must not answer either)
    changes = [
        ("memory of the definition", ("setmem", "m1", "48M", "--config"), 2),
        ("a guest's power state", ("suspend", "m0"), 2),
        ("autostart", ("autostart", "m0"), 0),
        ("a DHCP host of the network", ("net-update", "memonet", "add", "ip-dhcp-host",
                                        "<host mac='52:54:00:19:ee:77' ip='192.168.191.77'/>",
                                        "--live", "--config"), 0),
    ]
    for what, command, code in changes:
        hermetic_host.virsh(*command)
        seen = _run("plan", specs, env)
        assert USED not in seen.stderr, f"{what}: {seen.stderr}"
        assert seen.returncode == code, f"{what}: {seen.stdout}{seen.stderr}"
        if code:
            ok(_run("apply", specs, env, "--yes"))
        plan_twice()
    # a no-op apply is answered the same way, and an out-of-band change makes it repair again
    ok(_run("apply", specs, env, "--yes"))
    again = _run("apply", specs, env, "--yes")
    assert again.returncode == 0 and USED in again.stderr, again.stderr
    hermetic_host.virsh("setmem", "m1", "40M", "--config")
    repaired = _run("apply", specs, env, "--yes")
    assert repaired.returncode == 0 and USED not in repaired.stderr and "1 updated" in repaired.stderr, \
        repaired.stderr
    assert "40960" not in hermetic_host.virsh("dumpxml", "m1", "--inactive")
