"""Signed commits: a commit is applied only if `git verify-commit` accepts its signature with a key
the operator allows — SSH signatures against an allowed-signers file (git's
gpg.ssh.allowedSignersFile format), OpenPGP ones against a keyring of the allowed public keys.

The keyring is imported into a private, temporary GnuPG home for each check: the operator's own
~/.gnupg (and whatever keys it trusts) never decides.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from controller.errors import UsageError, VirtsyncError
from controller.model.records import record


class UntrustedCommit(VirtsyncError):
    """The commit is not signed by an allowed key: nothing of it is applied (not retried: the
    commit stays what it is; a new one is needed)."""

    retryable = False


@record
class CommitTrust:
    allowed_signers: str | None = None  # SSH: git's allowed signers file
    gpg_keyring: str | None = None  # OpenPGP: the allowed public keys (armored or binary)

    def __post_init__(self) -> None:
        for what, path in (("--allowed-signers", self.allowed_signers), ("--gpg-keyring", self.gpg_keyring)):
            if path is not None and not Path(path).is_file():
                raise UsageError(f"{what} {path}: no such file")
        if self.allowed_signers is None and self.gpg_keyring is None:
            raise UsageError("--verify-commits needs --allowed-signers FILE (SSH signatures) or "
                                "--gpg-keyring FILE (OpenPGP signatures)")


def verify_commit(trust: CommitTrust, sha: str, git_dir: str | None = None, cwd: str | None = None) -> str:
    """The signer git names for ``sha`` (e.g. 'alice@example.org'); raises UntrustedCommit with
    git's reason when the commit is unsigned or signed by a key not allowed."""
    cmd = ["git"]
    if git_dir is not None:
        cmd += ["--git-dir", git_dir]
    if trust.allowed_signers:
        cmd += ["-c", f"gpg.ssh.allowedSignersFile={os.path.abspath(trust.allowed_signers)}"]
    cmd += ["verify-commit", "--raw", sha]
    with tempfile.TemporaryDirectory(prefix="virtsync-gnupg-") as home:
        env = dict(os.environ, GNUPGHOME=home, GIT_TERMINAL_PROMPT="0")
        if trust.gpg_keyring:
            subprocess.run(["gpg", "--batch", "--quiet", "--import", trust.gpg_keyring], env=env,
                           capture_output=True, timeout=30, check=False)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False, cwd=cwd)
    text = (proc.stderr + proc.stdout).strip()
    if proc.returncode != 0:
        raise UntrustedCommit(f"commit {sha[:12]} is not signed by an allowed key: {_reason(text)}")
    return _signer(text)


def _reason(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return "it carries no signature"
    for needle, why in (("No principal matched", "signed by a key not in the allowed signers"),
                        ("No public key", "signed by a key not in the keyring"),
                        ("BADSIG", "the signature does not match the commit")):
        if any(needle in line for line in lines):
            return why
    return lines[-1][:200]


def _signer(text: str) -> str:
    for line in text.splitlines():
        if 'Good "git" signature for ' in line:
            return line.split(" for ", 1)[1].split(" with ", 1)[0]
        if "GOODSIG" in line:  # --raw OpenPGP status: [GNUPG:] GOODSIG KEYID Name <mail>
            return line.split("GOODSIG", 1)[1].strip().split(" ", 1)[-1]
    return "an allowed key"


def working_tree_commit(paths: list[str], trust: CommitTrust) -> tuple[str, str]:
    """For `apply --verify-commits` on a checkout: (HEAD, signer) of the repository holding the
    specs, refused if the specs differ from that commit (uncommitted changes are signed by nobody)."""
    base = Path(paths[0]).resolve()
    cwd = str(base if base.is_dir() else base.parent)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=False)
    if head.returncode != 0:
        raise UntrustedCommit(f"{paths[0]} is not in a git checkout: --verify-commits has no commit to verify")
    dirty = subprocess.run(["git", "status", "--porcelain", "--", *[str(Path(p).resolve()) for p in paths]],
                           cwd=cwd, capture_output=True, text=True, check=False)
    if dirty.stdout.strip():
        first = dirty.stdout.strip().splitlines()[0]
        raise UntrustedCommit(f"the specs have changes no commit holds ({first.strip()}): commit and sign them")
    sha = head.stdout.strip()
    return sha, verify_commit(trust, sha, cwd=cwd)
