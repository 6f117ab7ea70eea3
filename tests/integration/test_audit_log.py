"""The audit log (issue 15, item 4): one JSON line per change an apply makes, with the commit and
its author, object digests before and after, and whether it repaired drift; `virtsync history`
reads it; concurrent writers keep lines whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import libvirt

from tests.integration.conftest import HOST, ROOT, VirtsyncCli, connection, quickstart_copy, write_host

ALICE = ("Alice Example", "alice@example.org")
BOB = ("Bob Builder", "bob@example.org")


def _git(repo: Path, *args: str, author: tuple[str, str] = ALICE) -> str:
    name, mail = author
    env = dict(os.environ, GIT_AUTHOR_NAME=name, GIT_AUTHOR_EMAIL=mail, GIT_COMMITTER_NAME=name,
               GIT_COMMITTER_EMAIL=mail, GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
    out = subprocess.run(["git", "-C", str(repo), *args], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _commit(repo: Path, message: str, author: tuple[str, str]) -> str:
    _git(repo, "add", "-A", author=author)
    _git(repo, "commit", "-q", "-m", message, author=author)
    return _git(repo, "rev-parse", "HEAD")


def _repo(tmp_path: Path) -> tuple[Path, str]:
    specs = quickstart_copy(tmp_path)
    _git(specs, "init", "-q", "-b", "main")
    return specs, _commit(specs, "quickstart", ALICE)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _planned(virtsync: VirtsyncCli, specs: Path, uri: str) -> int:
    plan = virtsync("plan", specs, "--connect", uri, "--format", "json")
    assert plan.code in (0, 2), plan.err
    return sum(len(h["actions"]) for h in plan.json()["hosts"])


def _set_web1_memory(specs: Path, size: str) -> None:
    lab = specs / "lab.yaml"
    text = lab.read_text()
    assert "  memory: 128MiB\n  maxMemory: 256MiB\n" in text
    lab.write_text(text.replace("  memory: 128MiB\n  maxMemory: 256MiB\n", f"  memory: {size}\n  maxMemory: 256MiB\n"))


def test_an_apply_writes_one_line_per_change_with_the_commit_and_its_author(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs, sha = _repo(tmp_path)
    log = tmp_path / "audit.jsonl"

    planned = _planned(virtsync, specs, uri)
    assert planned >= 3  # the network and both guests at least
    applied = virtsync("apply", specs, "--connect", uri, "--yes", "--format", "json", "--audit-log", log)
    assert applied.code == 0, applied.err
    outcomes = applied.json()["outcomes"]
    lines = _lines(log)
    assert len(lines) == planned == len(outcomes)
    assert sorted((d["object"], d["action"]) for d in lines) == sorted(
        (f"{o['kind']}/{o['name']}", o["op"]) for o in outcomes)
    for d in lines:
        assert d["schemaVersion"] == 1 and d["instance"] == "default" and d["host"] == HOST
        assert d["commit"] == sha and d["author"] == f"{ALICE[0]} <{ALICE[1]}>"
        assert d["signer"] is None  # not verified
        assert d["outcome"] == "ok" and d["error"] is None
        assert d["repair"] is False  # the objects are new
        assert d["time"].endswith("+00:00")
    created = {d["object"]: d for d in lines if d["action"] in ("define", "define-network")}
    assert set(created) >= {"Guest/web1", "Guest/web2", "Network/lab"}
    for d in created.values():
        assert d["before"] is None and d["after"].startswith("sha256:")
    assert "<domain" not in log.read_text()  # digests, never definitions

    # A committed spec change: one update line, by its author, with the definition's digest changed.
    _set_web1_memory(specs, "192MiB")
    sha2 = _commit(specs, "web1: more memory", BOB)
    planned = _planned(virtsync, specs, uri)
    assert planned == 1
    again = virtsync("apply", specs, "--connect", uri, "--yes", "--audit-log", log)
    assert again.code == 0, again.err
    new = _lines(log)[len(lines):]
    assert len(new) == 1
    (update,) = new
    assert (update["object"], update["action"], update["outcome"]) == ("Guest/web1", "update", "ok")
    assert update["commit"] == sha2 and update["author"] == f"{BOB[0]} <{BOB[1]}>"
    assert update["before"].startswith("sha256:") and update["after"].startswith("sha256:")
    assert update["before"] != update["after"]
    assert update["before"] == created["Guest/web1"]["after"]
    assert update["repair"] is False  # the spec changed

    # Changed out of band, the spec as it was: the apply that puts it back is a repair.
    dom = connection(uri).lookupByName("web1")
    dom.setMemoryFlags(160 * 1024, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    repaired = virtsync("apply", specs, "--connect", uri, "--yes", "--audit-log", log)
    assert repaired.code == 0, repaired.err
    (fix,) = _lines(log)[len(lines) + 1:]
    assert (fix["object"], fix["repair"], fix["commit"]) == ("Guest/web1", True, sha2)
    assert fix["before"] != update["after"] and fix["after"] != fix["before"]

    # A guest stopped out of band and started again: a repair, its definition unchanged.
    connection(uri).lookupByName("web2").destroy()
    assert virtsync("apply", specs, "--connect", uri, "--yes", "--audit-log", log).code == 0
    start = _lines(log)[-1]
    assert (start["object"], start["action"], start["repair"]) == ("Guest/web2", "start", True)
    assert start["before"] == start["after"]

    # Nothing to do: nothing logged.
    count = len(_lines(log))
    assert virtsync("apply", specs, "--connect", uri, "--yes", "--audit-log", log).code == 0
    assert len(_lines(log)) == count


def test_history_prints_one_objects_changes_oldest_first(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs, _ = _repo(tmp_path)
    log = tmp_path / "audit.jsonl"
    assert virtsync("apply", specs, "--connect", uri, "--yes", "--audit-log", log).code == 0
    _set_web1_memory(specs, "160MiB")
    _commit(specs, "web1: 160MiB", BOB)
    assert virtsync("apply", specs, "--connect", uri, "--yes", "--audit-log", log).code == 0
    with log.open("a") as f:
        f.write("not json\n")  # a damaged line is left out, and said

    shown = virtsync("history", "Guest/web1", "--audit-log", log, "--format", "json")
    assert shown.code == 0, shown.err
    lines = shown.json()
    assert [d["action"] for d in lines][-1] == "update"
    assert lines[0]["action"] == "define"
    assert {d["object"] for d in lines} == {"Guest/web1"}
    assert [d["time"] for d in lines] == sorted(d["time"] for d in lines)
    assert "1 line(s) are not audit records" in shown.err
    assert virtsync("history", f"{HOST}/Guest/web1", "--audit-log", log, "--format", "json").json() == lines
    assert virtsync("history", "other/Guest/web1", "--audit-log", log, "--format", "json").json() == []

    text = virtsync("history", "Guest/web1", "--audit-log", log)
    assert text.code == 0
    assert "  update  ok" in text.out and "Bob Builder <bob@example.org>" in text.out
    assert "Network/lab" not in text.out
    assert "no changes of Guest/nope" in virtsync("history", "Guest/nope", "--audit-log", log).out
    assert virtsync("history", "web1", "--audit-log", log).code == 64


_WRITER = """
import sys
from controller.audit import AuditEntry, AuditLog
log = AuditLog(sys.argv[1], "inst-" + sys.argv[2])
for i in range(int(sys.argv[3])):
    log.write(AuditEntry("kvm1", "Guest", f"g{sys.argv[2]}", "update-guest", True,
                         detail=sys.argv[2] * 20000 + str(i)))
"""


def test_concurrent_writers_keep_every_line_whole(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    n = 150
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(log), tag, str(n)], cwd=ROOT)
             for tag in ("a", "b")]
    for p in procs:
        assert p.wait(timeout=120) == 0
    lines = _lines(log)  # every line parses: none was split by the other writer's
    assert len(lines) == 2 * n
    for tag in ("a", "b"):
        mine = [d for d in lines if d["instance"] == f"inst-{tag}"]
        assert [d["detail"] for d in mine] == [tag * 20000 + str(i) for i in range(n)]
