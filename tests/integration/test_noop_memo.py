"""The no-op memo (controller/noop_memo.py): a `virtsync plan` process whose every input is as at
the last no-op plan answers with that plan's output; any change runs the plan in full.

Each test runs the real command in its own processes (the memo lives between processes) on a
test-driver host whose domains carry fixed UUIDs (without them libvirt makes new ones at each
open, and the memo is rightly never used). VIRTSYNC_NOOP_MEMO=report says on stderr what the
memo did.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, guest_doc, host_doc, write_specs

USED = "no-op memo: every input as at the last no-op run"


def _domain(name: str, vcpus: int = 1) -> str:
    return (f"<domain type='test'><name>{name}</name><uuid>{uuid.uuid5(uuid.NAMESPACE_DNS, name)}</uuid>"
            f"<memory unit='MiB'>64</memory><currentMemory unit='MiB'>64</currentMemory>"
            f"<vcpu>{vcpus}</vcpu><os><type>hvm</type></os></domain>")


class Tree:
    """A host file, a spec tree and a cache directory of one test."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.host = tmp / "host.xml"
        self.specs = tmp / "specs"
        self.env = {k: v for k, v in os.environ.items() if k not in ("VIRTSYNC_NOOP_MEMO",)}
        self.env.update(XDG_CACHE_HOME=str(tmp / "cache"), VIRTSYNC_NOOP_MEMO="report")
        self.write_host()
        write_specs(self.specs, [host_doc(f"test://{self.host}"),
                                 *(guest_doc(f"g{i}", vcpus=1, memory="64MiB", state="running") for i in range(3))])

    def write_host(self, vcpus: int = 1) -> None:
        self.host.write_text("<node>" + "".join(_domain(f"g{i}", vcpus if i == 0 else 1) for i in range(3))
                             + "</node>")

    def plan(self, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "controller", "plan", str(self.specs), *extra],
                              cwd=ROOT, env=env or self.env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path)


def _adopt(tree: Tree) -> None:
    """The domains of the host file carry no ownership record: adopt them in the specs."""
    text = (tree.specs / "specs.yaml").read_text().replace('"host": "kvm1",', '"host": "kvm1", "adopt": true,')
    (tree.specs / "specs.yaml").write_text(text)


def test_a_second_noop_plan_answers_from_the_memo_with_the_same_output(tree: Tree) -> None:
    _adopt(tree)
    first = tree.plan()
    assert first.returncode == 0, first.stderr
    second = tree.plan()
    assert second.returncode == 0 and USED in second.stderr
    assert second.stdout == first.stdout and "no changes" in second.stdout
    full = tree.plan(env={**tree.env, "VIRTSYNC_NOOP_MEMO": "off"})
    assert full.stdout == second.stdout and full.stderr == ""


def test_a_change_on_the_host_is_planned_in_full(tree: Tree) -> None:
    _adopt(tree)
    assert tree.plan().returncode == 0
    assert USED in tree.plan().stderr
    tree.write_host(vcpus=2)  # out of band: g0's definition now has 2 vCPUs
    changed = tree.plan()
    assert USED not in changed.stderr and "answered differently" in changed.stderr
    assert changed.returncode == 2 and "vcpus: 2 → 1" in changed.stdout
    assert "not kept: it ended with exit code 2" in changed.stderr
    assert USED not in tree.plan().stderr  # a plan with changes is never answered again


@pytest.mark.parametrize("edit", ["spec", "new file", "env", "code"])
def test_a_change_of_any_input_is_planned_in_full(tree: Tree, edit: str) -> None:
    _adopt(tree)
    assert tree.plan().returncode == 0
    assert USED in tree.plan().stderr
    env = None
    if edit == "spec":
        path = tree.specs / "specs.yaml"
        path.write_text(path.read_text().replace('"vcpus": 1', '"vcpus": 2', 1))
    elif edit == "new file":
        write_specs(tree.specs, [guest_doc("g9", vcpus=1, memory="64MiB")], name="more.yaml")
    elif edit == "env":
        env = {**tree.env, "VIRTSYNC_SOMETHING": "else"}
    else:
        # a module of virtsync itself changed: its size and time are part of the record
        code = Path(ROOT / "controller" / "gitinfo.py")
        stat = code.stat()
        os.utime(code, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
        try:
            again = tree.plan()
        finally:
            os.utime(code, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert USED not in again.stderr and "code changed" in again.stderr
        return
    again = tree.plan(env=env)
    assert USED not in again.stderr
    if edit == "spec":
        assert again.returncode == 2 and "file changed" in again.stderr
    elif edit == "new file":
        assert again.returncode == 2 and "directory changed" in again.stderr and "g9" in again.stdout


def test_a_plan_that_depends_on_the_time_is_never_kept(tree: Tree) -> None:
    _adopt(tree)
    write_specs(tree.specs, [{"apiVersion": "virtsync/v1", "kind": "SnapshotPolicy", "metadata": {"name": "daily"},
                              "spec": {"selector": {"matchLabels": {"app": "none"}}, "schedule": "0 3 * * *",
                                       "retain": {"daily": 2}}}], name="policy.yaml")
    first = tree.plan()
    assert first.returncode == 0, first.stderr
    assert "no-op memo not kept" in first.stderr
    assert USED not in tree.plan().stderr


def test_specs_with_schedules_or_restart_windows_are_time_dependent(tmp_path: Path) -> None:
    from controller.commands import _time_dependent
    from controller.spec.loader import load_specs

    window = guest_doc("w", vcpus=1, memory="64MiB", restartPolicy="window",
                       window={"schedule": "0 2 * * 6", "duration": "2h"})
    plain = load_specs([write_specs(tmp_path / "a", [host_doc("test:///x"), guest_doc("g", vcpus=1)])])
    timed = load_specs([write_specs(tmp_path / "b", [host_doc("test:///x"), window])])
    assert _time_dependent(plain.raise_for_errors()) == ""
    assert _time_dependent(timed.raise_for_errors()) == "a restart window plans by the time"


def test_a_plan_that_writes_a_file_is_never_kept(tree: Tree) -> None:
    _adopt(tree)
    out = tree.tmp / "saved-plan.json"
    first = tree.plan("--out", str(out))
    assert first.returncode == 0 and out.exists()
    again = tree.plan("--out", str(out))
    assert USED not in again.stderr and "not kept: it wrote" in first.stderr + again.stderr


def test_the_memo_can_be_turned_off(tree: Tree) -> None:
    _adopt(tree)
    off = {**tree.env, "VIRTSYNC_NOOP_MEMO": "off"}
    assert tree.plan(env=off).returncode == 0
    assert USED not in tree.plan(env=off).stderr
    assert not (tree.tmp / "cache" / "virtsync" / "noop").exists()


def test_a_second_noop_apply_answers_from_the_memo_and_takes_no_lock(tree: Tree) -> None:
    _adopt(tree)
    env = {**tree.env, "VIRTSYNC_COORDINATION": f"file://{tree.tmp / 'locks'}"}

    def apply() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "controller", "apply", str(tree.specs), "--yes"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    first = apply()
    assert first.returncode == 0, first.stderr
    assert "Apply: 0 created, 0 updated, 3 unchanged" in first.stderr  # adopted: nothing to change
    for lock in (tree.tmp / "locks").rglob("*"):
        lock.unlink() if lock.is_file() else None
    second = apply()
    assert second.returncode == 0 and USED in second.stderr
    assert second.stdout == first.stdout
    assert second.stderr.replace(f"virtsync: {USED}; its output again\n", "") == first.stderr
    assert not [p for p in (tree.tmp / "locks").rglob("*") if p.is_file()]  # no lock taken
    tree.write_host(vcpus=2)
    third = apply()  # in full: it repairs g0 (the running guest's definition; the next boot applies it)
    assert USED not in third.stderr and "1 updated" in third.stderr, third.stderr
