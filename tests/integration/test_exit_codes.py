"""Exit codes: 0 done, 1 any error or refusal, 2 only changes/drift, 64 usage errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import (
    QUICKSTART,
    ROOT,
    VirtsyncCli,
    connection,
    guest_doc,
    host_doc,
    write_host,
    write_specs,
)


def test_apply_without_yes_and_without_a_terminal_refuses(tmp_path: Path) -> None:
    uri = write_host(tmp_path)
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-m", "controller", "apply", str(QUICKSTART),
                           "--connect", uri], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=60, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "refusing to apply without --yes" in proc.stderr
    assert "Apply:" not in proc.stderr


def test_apply_without_yes_changes_nothing(tmp_path: Path, virtsync: VirtsyncCli,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    uri = write_host(tmp_path)
    with open(os.devnull) as devnull:
        monkeypatch.setattr(sys, "stdin", devnull)
        refused = virtsync("apply", QUICKSTART, "--connect", uri)
    assert refused.code == 1
    assert "--yes" in refused.err
    conn = connection(uri)
    assert conn.listAllDomains(0) == [] and conn.listAllNetworks(0) == []
    # Nothing to do needs no confirmation.
    assert virtsync("apply", QUICKSTART, "--connect", uri, "--yes").code == 0
    with open(os.devnull) as devnull:
        monkeypatch.setattr(sys, "stdin", devnull)
        assert virtsync("apply", QUICKSTART, "--connect", uri).code == 0


@pytest.mark.parametrize("argv", [
    ["frobnicate"],
    ["plan"],
    ["plan", str(QUICKSTART), "--format", "yaml"],
    ["apply", str(QUICKSTART), "--max-deletions", "many"],
    ["drift", str(QUICKSTART), "--host", "nosuchhost"],
    ["export", "--host", "kvm1"],
    [],
    ["snapshots", "run", "--at", "garbage", str(QUICKSTART)],
    ["apply", str(QUICKSTART), "--concurrency", "0"],
    ["serve", str(QUICKSTART), "--listen", "localhost:http"],
], ids=["unknown verb", "missing paths", "bad format", "bad number", "unknown host",
        "export without uri", "no verb", "bad time", "zero concurrency", "bad listen"])
def test_usage_errors_exit_64(argv: list[str], virtsync: VirtsyncCli) -> None:
    result = virtsync(*argv)
    assert result.code == 64, result.err
    assert result.err.strip()


def test_connect_with_several_hosts_is_a_usage_error(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = write_specs(tmp_path / "specs", [host_doc(uri, "a"), host_doc(uri, "b"),
                                             guest_doc("g", host="a")])
    result = virtsync("plan", specs, "--connect", uri)
    assert result.code == 64
    assert "--connect needs exactly one host" in result.err


def test_plan_and_drift_exit_2_only_for_changes(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    assert virtsync("plan", QUICKSTART, "--connect", uri).code == 2
    assert virtsync("drift", QUICKSTART, "--connect", uri).code == 2
    assert virtsync("apply", QUICKSTART, "--connect", uri, "--yes").code == 0
    assert virtsync("plan", QUICKSTART, "--connect", uri).code == 0
    assert virtsync("drift", QUICKSTART, "--connect", uri).code == 0


def test_invalid_specs_exit_1_with_file_and_line(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: virtsync/v1\nkind: Guest\nmetadata: {name: x}\n"
                   "spec: {host: h, vcpus: 0}\n")
    for verb in ("validate", "plan", "apply", "drift"):
        result = virtsync(verb, bad)
        assert result.code == 1, verb
        assert f"{bad}:4:" in result.err, verb


def test_unreachable_host_exits_1(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = f"test://{tmp_path / 'nowhere.xml'}"
    specs = write_specs(tmp_path / "specs", [host_doc(uri), guest_doc("a", memory="64MiB")])
    for verb in ("plan", "drift"):
        assert virtsync(verb, specs).code == 1, verb
    plan = virtsync("plan", specs)
    assert f"{tmp_path / 'nowhere.xml'}: no such file" in plan.out
    assert "match the specs" not in plan.out  # nothing was compared: no claim that it matches
    result = virtsync("apply", specs, "--yes")
    assert result.code == 1
    assert "unreachable" in result.out


def test_an_output_file_that_cannot_be_written_is_an_error_not_a_crash(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    missing = tmp_path / "no-such-dir" / "report.html"
    result = virtsync("drift", QUICKSTART, "--connect", uri, "--format", "html", "-o", missing)
    assert result.code == 1
    assert f"virtsync: error: {missing}: No such file or directory" in result.err
    assert "internal error" not in result.err
