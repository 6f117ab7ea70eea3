"""Tenancy: a policy file fences which hosts, directories, pools, networks, bridges and devices
an instance's specs may use; anything outside is refused at validate with file:line, before any
host is contacted."""

from __future__ import annotations

from pathlib import Path

from tests.integration.conftest import VirtsyncCli, connection, write_host

POLICY = """apiVersion: virtsync/v1
kind: Policy
spec:
  hosts: [a]
  storageDirs: [/srv/team]
  networks: [team-lan]
  bridges: [br-team]
  hostdevs: false
  xmlPatches: false
"""


def _specs(tmp_path: Path, uri: str, guest: str, host: str = "a") -> Path:
    path = tmp_path / "specs" / "lab.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: a}}
spec: {{uri: "{uri}", storage: {{allowedDirs: [/srv]}}}}
---
apiVersion: virtsync/v1
kind: Host
metadata: {{name: b, labels: {{team: other}}}}
spec: {{uri: "{uri}", storage: {{allowedDirs: [/srv]}}}}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: g}}
spec:
  host: {host}
  state: stopped
  memory: 64MiB
{guest}""")
    return path


def _policy(tmp_path: Path, text: str = POLICY) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text(text)
    return p


def test_a_spec_targeting_a_host_outside_the_policy_is_refused_with_its_line(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    path = _specs(tmp_path, uri, "", host="b")
    run = virtsync("validate", path, "--policy", _policy(tmp_path))
    assert run.code == 1
    assert f"{path}:8:" in run.err and "host 'b' is not one this instance may target" in run.err, run.err
    assert f"{path}:15:" in run.err, "the guest's spec.host line too: " + run.err
    assert virtsync("apply", path, "--yes", "--policy", _policy(tmp_path)).code == 1
    assert connection(uri, host="a").listAllDomains(0) == [], "no host was touched"
    assert virtsync("validate", path).code == 0, "without the policy the same specs are valid"


def test_hostdevs_and_xml_patches_are_refused_where_the_policy_forbids_them(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    path = _specs(tmp_path, uri, '  hostdevs: [{pci: "0000:03:00.0"}]\n'
                  "  xmlPatches: [{op: set, xpath: /domain/on_crash, value: restart}]\n")
    policy = _policy(tmp_path, POLICY.replace("  hosts: [a]\n", "  hosts: [a, b]\n"))
    run = virtsync("validate", path, "--policy", policy)
    assert run.code == 1
    assert "host device passthrough is not allowed" in run.err and f"{path}:18:" in run.err, run.err
    assert "xmlPatches are not allowed" in run.err and f"{path}:19:" in run.err, run.err


def test_directories_networks_and_bridges_outside_the_policy_are_refused(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    path = _specs(tmp_path, uri, "  disks: [{name: d, path: /srv/other/d.qcow2}]\n"
                  "  interfaces: [{bridge: br-corp}, {network: team-lan}]\n"
                  "  filesystems: [{source: /srv/team/share, target: share}]\n")
    run = virtsync("validate", path, "--policy", _policy(tmp_path))
    assert "'/srv/other/d.qcow2' is outside the directories this instance may use" in run.err, run.err
    assert "host bridge 'br-corp' is not one this instance may use (br-team)" in run.err
    assert "network 'team-lan' is not one" not in run.err, "a network the policy lists is fine"
    assert "share" not in run.err, "a share inside storageDirs is fine"


def test_a_policy_by_host_labels_and_a_broken_policy_file(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    path = _specs(tmp_path, uri, "", host="b")
    by_label = _policy(tmp_path, "apiVersion: virtsync/v1\nkind: Policy\nspec:\n  hostSelector: "
                       "{matchLabels: {team: other}}\n")
    run = virtsync("validate", path, "--policy", by_label)
    assert "host 'a' is not one this instance may target" in run.err and "'b'" not in run.err, run.err
    broken = _policy(tmp_path, "apiVersion: virtsync/v1\nkind: Policy\nspec:\n  hosts: a\n")
    run = virtsync("validate", path, "--policy", broken)
    assert run.code == 1 and f"{broken}:4:" in run.err and "spec.hosts" in run.err, run.err
