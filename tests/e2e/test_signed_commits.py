"""Signed commits (issue 15, part 1): `serve --git … --verify-commits` applies a commit only if
`git verify-commit` accepts it with an allowed key; an unsigned commit and one signed by another
key are refused with the reason, and the last good commit stays in force. `apply
--verify-commits` does the same for a checkout. Real git, ssh-keygen and gpg; the hosts are
libvirt's test driver (the service's own process keeps their state)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.service_helpers import ServeProcess, wait_for, write_test_driver_specs

pytestmark = [pytest.mark.e2e, pytest.mark.trust]


def _env(home: Path) -> dict[str, str]:
    return {"GIT_AUTHOR_NAME": "Alice", "GIT_AUTHOR_EMAIL": "alice@example.org", "GIT_COMMITTER_NAME": "Alice",
            "GIT_COMMITTER_EMAIL": "alice@example.org", "PATH": "/usr/bin:/bin", "HOME": str(home),
            "GNUPGHOME": str(home / "gnupg")}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=_env(repo.parent)).stdout.strip()


def _key(tmp: Path, name: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(tmp / name)], check=True)
    return tmp / name


def _commit(repo: Path, memory: str, key: Path | None, message: str) -> str:
    write_test_driver_specs(repo, "web", memory)
    _git(repo, "add", ".")
    sign = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key}", "commit", "-S"] if key else \
        ["commit", "--no-gpg-sign"]
    _git(repo, *sign, "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "host.xml").write_text("<node></node>\n")
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    return repo


def test_serve_applies_only_commits_signed_by_an_allowed_key(tmp_path: Path, repo: Path) -> None:
    alice, mallory = _key(tmp_path, "alice"), _key(tmp_path, "mallory")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"alice@example.org {(tmp_path / 'alice.pub').read_text()}")
    good = _commit(repo, "64MiB", alice, "first")
    svc = ServeProcess(["--git", str(repo), "--branch", "main", "--git-path", "specs", "--git-interval", "1s",
                        "--cache-dir", str(tmp_path / "cache"), "--verify-commits",
                        "--allowed-signers", str(allowed)], tmp_path / "serve.log")
    svc.start()
    try:
        wait_for(lambda: svc.status()["commit"] == good and
                 svc.objects().get("Guest/web", {}).get("status") == "in-sync", 20, "the signed commit", svc)
        assert any(e.get("event") == "commit verified" and e.get("signer") == "alice@example.org"
                   for e in svc.log_events())

        def refused(sha: str, why: str) -> bool:
            events = svc.status()["service"]["recentEvents"]
            return any(sha[:12] in e["message"] and why in e["message"] for e in events)

        unsigned = _commit(repo, "96MiB", None, "unsigned")
        wait_for(lambda: refused(unsigned, "it carries no signature"), 20, "the unsigned commit refused", svc)
        forged = _commit(repo, "128MiB", mallory, "signed by someone else")
        wait_for(lambda: refused(forged, "signed by a key not in the allowed signers"), 20,
                 "the foreign signature refused", svc)
        assert svc.status()["commit"] == good, "the last good commit stays in force"
        assert [e for e in svc.log_events() if e.get("event") == "untrusted commit"], "logged"

        fixed = _commit(repo, "80MiB", alice, "signed again")
        wait_for(lambda: svc.status()["commit"] == fixed, 20, "the next signed commit", svc)
    finally:
        svc.stop()


def test_apply_verifies_the_checkouts_head_with_ssh_and_openpgp_keys(tmp_path: Path, repo: Path) -> None:
    alice = _key(tmp_path, "alice")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"alice@example.org {(tmp_path / 'alice.pub').read_text()}")
    _commit(repo, "64MiB", alice, "signed")
    specs = str(repo / "specs")
    py = [sys.executable, "-m", "controller"]
    run = subprocess.run([*py, "apply", specs, "--yes", "--verify-commits", "--allowed-signers", str(allowed)],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0 and "signed by alice@example.org" in run.stderr, run.stderr

    (repo / "specs" / "lab.yaml").write_text((repo / "specs" / "lab.yaml").read_text().replace("64MiB", "65MiB"))
    run = subprocess.run([*py, "apply", specs, "--yes", "--verify-commits", "--allowed-signers", str(allowed)],
                         capture_output=True, text=True, check=False)
    assert run.returncode != 0 and "changes no commit holds" in run.stderr, run.stderr

    _git(repo, "checkout", "-q", "--", ".")
    _commit(repo, "72MiB", None, "unsigned")
    run = subprocess.run([*py, "apply", specs, "--yes", "--verify-commits", "--allowed-signers", str(allowed)],
                         capture_output=True, text=True, check=False)
    assert run.returncode != 0 and "it carries no signature" in run.stderr, run.stderr

    # OpenPGP: a key made here, exported as the allowed keyring
    gnupg = repo.parent / "gnupg"
    gnupg.mkdir(mode=0o700)
    env = _env(repo.parent)
    subprocess.run(["gpg", "--batch", "--quiet", "--passphrase", "", "--quick-gen-key", "Alice <alice@example.org>",
                    "ed25519", "sign", "never"], env=env, check=True, capture_output=True)
    keyring = tmp_path / "allowed.gpg"
    keyring.write_bytes(subprocess.run(["gpg", "--batch", "--export", "alice@example.org"], env=env, check=True,
                                       capture_output=True).stdout)
    write_test_driver_specs(repo, "web", "80MiB")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.signingkey=alice@example.org", "commit", "-S", "-q", "-m", "gpg-signed")
    run = subprocess.run([*py, "apply", specs, "--yes", "--verify-commits", "--gpg-keyring", str(keyring)],
                         capture_output=True, text=True, check=False, env=dict(os.environ, GNUPGHOME="/nonexistent"))
    assert run.returncode == 0 and "signed by" in run.stderr, run.stderr
    run = subprocess.run([*py, "apply", specs, "--yes", "--verify-commits", "--gpg-keyring",
                          str(tmp_path / "alice.pub")], capture_output=True, text=True, check=False)
    assert run.returncode != 0 and "not signed by an allowed key" in run.stderr, run.stderr
