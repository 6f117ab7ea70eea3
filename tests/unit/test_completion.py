"""`virtsync completion bash|zsh|fish`, run by the real shells: the generated scripts complete
verbs, sub-verbs, options, option choices and Host names from the spec tree on the line."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller.cli import build_parser
from controller.completion import commands, script

ROOT = Path(__file__).resolve().parents[2]
HOSTS = """apiVersion: virtsync/v1
kind: Host
metadata: {name: kvm-east}
spec: {uri: "qemu:///system"}
---
apiVersion: virtsync/v1
kind: Host
metadata: {name: kvm-west}
spec: {uri: "qemu:///system"}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {name: not-a-host}
spec: {host: kvm-east}
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A spec tree with two Hosts (and a broken file, which completion skips), and a bin/
    directory whose `virtsync` is this checkout's, as a user's PATH would have it."""
    specs = tmp_path / "specs"
    (specs / "more").mkdir(parents=True)
    (specs / "hosts.yaml").write_text(HOSTS)
    (specs / "more" / "broken.yaml").write_text("kind: Host\nmetadata: {name: half\n")
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "h.yaml").write_text(HOSTS.replace("kvm-east", "far-1").replace("kvm-west", "far-2"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "virtsync").write_text(f"#!/bin/sh\nexec {sys.executable} -m controller \"$@\"\n")
    (bin_dir / "virtsync").chmod(0o755)
    return tmp_path


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PATH": f"{tree / 'bin'}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}


def _script(tree: Path, shell: str) -> Path:
    """The script as `virtsync completion SHELL` prints it (bash through the command itself; the
    others from the same function in this process, which saves a start of the program)."""
    if shell == "bash":
        text = subprocess.run([str(tree / "bin" / "virtsync"), "completion", shell], capture_output=True,
                              text=True, env=_env(tree), check=True, timeout=60).stdout
    else:
        text = script(shell, build_parser())
    path = tree / f"virtsync.{shell}"
    path.write_text(text)
    return path


BASH_DRIVER = """
source "$1"
complete -p virtsync
t() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=(); _virtsync
      printf '%s|' "$*"; printf '%s ' "${COMPREPLY[@]}"; printf '\\n'; }
t virtsync pl
t virtsync snapshots ""
t virtsync plan --ho
t virtsync plan --host kvm-
t virtsync apply ../elsewhere --host ""
t virtsync snapshots run --host ""
t virtsync plan --format ""
t virtsync completion ""
t virtsync explain Guest.disks.ca
t virtsync apply --concurrency ""
t virtsync snapshots list --guest ""
t virtsync snapshots restore ""
t virtsync snapshots restore not-a-host ""
t virtsync snapshots restore not-a-host snap1 hos
"""


def _results(stdout: str) -> dict[str, list[str]]:
    out = {}
    for line in stdout.splitlines():
        if "|" in line:
            line_words, _, got = line.partition("|")
            out[line_words] = got.split()
    return out


def test_bash_completion_completes_verb_and_host_name(tree: Path) -> None:
    path = _script(tree, "bash")
    run = subprocess.run(["bash", "--norc", "--noprofile", "-c", BASH_DRIVER, "driver", str(path)],
                         capture_output=True, text=True, cwd=tree / "specs", env=_env(tree), timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == "complete -F _virtsync virtsync"
    got = _results(run.stdout)
    assert got["virtsync pl"] == ["plan", "place"]
    assert got["virtsync snapshots "] == ["run", "list", "restore"]
    assert got["virtsync plan --ho"] == ["--host", "--host-selector"]
    assert got["virtsync plan --host kvm-"] == ["kvm-east", "kvm-west"], "Host names of the current directory"
    assert got["virtsync apply ../elsewhere --host "] == ["far-1", "far-2"], "Host names of the tree on the line"
    assert got["virtsync snapshots run --host "] == ["kvm-east", "kvm-west"]
    assert got["virtsync plan --format "] == ["text", "json", "markdown"]
    assert got["virtsync completion "] == ["bash", "zsh", "fish"]
    assert got["virtsync explain Guest.disks.ca"] == ["Guest.disks.cache"]
    assert got["virtsync apply --concurrency "] == [], "a free value (a number) completes to nothing"
    assert got["virtsync snapshots list --guest "] == ["not-a-host"], "Guest names of the specs"
    assert got["virtsync snapshots restore "] == ["not-a-host"], "GUEST, the first positional"
    assert got["virtsync snapshots restore not-a-host "] == [], "SNAPSHOT: nothing to offer"
    assert got["virtsync snapshots restore not-a-host snap1 hos"] == ["hosts.yaml"], "PATH… from the third on"


ZSH_DRIVER = """
compdef() { :; }
source "$1"
compadd() { [[ $1 == -- ]] && shift; print -r -- "${(j: :)@}"; }
_files() { print -r -- "FILES $*"; }
t() { words=("$@"); CURRENT=${#words}; PREFIX=${words[CURRENT]}; print -rn -- "$*|"; _virtsync; }
t virtsync ""
t virtsync plan --host ""
t virtsync snapshots ""
t virtsync plan --format ""
t virtsync plan ""
"""


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed (scripts/install-system-deps.sh)")
def test_zsh_completion_script_parses_and_its_function_offers_verbs_and_host_names(tree: Path) -> None:
    path = _script(tree, "zsh")
    check = subprocess.run(["zsh", "-n", str(path)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    # zsh itself runs the completion function; compadd/_files stand in for the line editor that
    # would display what they are given (compadd filters by PREFIX itself).
    run = subprocess.run(["zsh", "-f", "-c", ZSH_DRIVER, "driver", str(path)], capture_output=True, text=True,
                         cwd=tree / "specs", env=_env(tree), timeout=120)
    assert run.returncode == 0, run.stderr
    got = _results(run.stdout)
    assert {"plan", "apply", "completion", "explain", "snapshots"} <= set(got["virtsync "])
    assert got["virtsync plan --host "] == ["kvm-east", "kvm-west"]
    assert got["virtsync snapshots "] == ["run", "list", "restore"]
    assert got["virtsync plan --format "] == ["text", "json", "markdown"]
    assert got["virtsync plan "] == ["FILES"], "spec paths complete as files"


def _zsh_tab(path: Path, tree: Path, typed: list[tuple[str, str]]) -> list[str]:
    """An interactive zsh on a pty with compinit and the script loaded: each text of ``typed`` is
    typed followed by TAB, and what the line editor echoes back (until the expected line shows,
    at most 10 s) is returned; then the line is cleared."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(["zsh", "-f", "-i"], stdin=slave, stdout=slave, stderr=slave, cwd=tree / "specs",
                            env={**_env(tree), "TERM": "dumb"}, start_new_session=True)
    os.close(slave)

    def read_until(want: str, seconds: float = 10) -> str:
        out, end = b"", time.monotonic() + seconds
        while want.encode() not in out and time.monotonic() < end:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    out += os.read(master, 65536)
                except OSError:
                    break
        return out.decode(errors="replace")

    try:
        os.write(master, f"autoload -Uz compinit; compinit -u -D; source {path}; PS1='ready> '\n".encode())
        read_until("ready> ")
        echoed = []
        for text, want in typed:
            os.write(master, f"{text}\t".encode())
            echoed.append(read_until(want))
            os.write(master, b"\x15")  # kill the line
        os.write(master, b"\nexit\n")
        proc.wait(timeout=20)
        return echoed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(master)


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed (scripts/install-system-deps.sh)")
def test_zsh_completion_completes_verb_and_host_name_in_an_interactive_shell(tree: Path) -> None:
    path = _script(tree, "zsh")
    verb, host = _zsh_tab(path, tree, [("virtsync snapsh", "virtsync snapshots "),
                                       ("virtsync plan --host kvm-e", "virtsync plan --host kvm-east ")])
    assert verb.endswith("virtsync snapshots "), repr(verb)
    assert host.endswith("virtsync plan --host kvm-east "), repr(host)


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed (scripts/install-system-deps.sh)")
def test_fish_completion_completes_verb_and_host_name(tree: Path) -> None:
    path = _script(tree, "fish")
    check = subprocess.run(["fish", "--no-execute", str(path)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr

    def complete(line: str) -> list[str]:
        run = subprocess.run(["fish", "--no-config", "-c", f"source {path}; complete -C '{line}'"],
                             capture_output=True, text=True, cwd=tree / "specs", env=_env(tree), timeout=120)
        assert run.returncode == 0, run.stderr
        return [x.split("\t")[0] for x in run.stdout.splitlines()]

    assert complete("virtsync pl") == ["place", "plan"]
    assert complete("virtsync plan --host ") == ["kvm-east", "kvm-west"]
    assert complete("virtsync snapshots ") == ["list", "restore", "run"]
    assert complete("virtsync plan --format ") == ["json", "markdown", "text"]


def test_completion_knows_every_verb_and_option_of_the_parser() -> None:
    parser = build_parser()
    cmds = {c.path: c for c in commands(parser)}
    verbs = set(cmds[""].subcommands)
    assert {"plan", "apply", "explain", "completion", "snapshots"} <= verbs
    assert "--diff" in {n for o in cmds["plan"].options for n in o.names}
    bash = script("bash", parser)
    for name, cmd in cmds.items():
        for o in cmd.options:
            for flag in o.names:
                assert flag in bash, f"{name} {flag} is not in the bash script"


def test_an_unknown_shell_is_a_usage_error(tree: Path) -> None:
    run = subprocess.run([str(tree / "bin" / "virtsync"), "completion", "tcsh"], capture_output=True, text=True,
                         env=_env(tree), timeout=60)
    assert run.returncode == 64 and "invalid choice" in run.stderr
