"""Following a git branch: fetch (force-pushes followed, never merged) and snapshot.

The service never reads a working tree that git is writing: each commit is
exported with `git archive` into a directory of its own, and only a complete
export is loaded. Credentials come from files named on the command line
(an SSH key or a token), never from the spec tree.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from controller.errors import VirtsyncError
from controller.model.records import record


class GitError(VirtsyncError):
    retryable = True
    delay = 5.0


@record
class GitSource:
    url: str
    branch: str = "main"
    subdir: str = ""  # the spec tree inside the repository
    ssh_key: str | None = None
    token_file: str | None = None
    cache: Path = Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))) / "virtsync"


class GitFollower:
    def __init__(self, source: GitSource):
        self.source = source
        tag = hashlib.sha256(f"{source.url}#{source.branch}".encode()).hexdigest()[:16]
        self.root = source.cache / "git" / tag
        self.mirror = self.root / "repo.git"
        self.snapshots = self.root / "snapshots"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
        if self.source.ssh_key:
            env["GIT_SSH_COMMAND"] = (f"ssh -i {self.source.ssh_key} -o IdentitiesOnly=yes "
                                      "-o StrictHostKeyChecking=accept-new -o BatchMode=yes")
        return env

    def _git(self, *args: str, capture: bool = True) -> str:
        cmd = ["git"]
        if self.source.token_file:
            token = Path(self.source.token_file).read_text().strip()
            cmd += ["-c", f"http.extraHeader=Authorization: Bearer {token}"]
        cmd += list(args)
        proc = subprocess.run(cmd, env=self._env(), capture_output=capture, text=True, timeout=120,
                              check=False)
        if proc.returncode != 0:
            err = (proc.stderr or "").strip().splitlines()
            raise GitError(f"git {args[0]} failed: {err[-1] if err else proc.returncode}")
        return proc.stdout

    def fetch(self) -> str:
        """Fetch the branch (a force-push replaces it) and return its commit SHA."""
        if not (self.mirror / "HEAD").exists():
            self.root.mkdir(parents=True, exist_ok=True)
            self._git("init", "--bare", "-q", str(self.mirror))
        ref = f"refs/remotes/origin/{self.source.branch}"
        self._git("--git-dir", str(self.mirror), "fetch", "-q", "--no-tags", self.source.url,
                  f"+refs/heads/{self.source.branch}:{ref}")
        return self._git("--git-dir", str(self.mirror), "rev-parse", ref).strip()

    def snapshot(self, sha: str) -> Path:
        """The spec tree of ``sha``, exported completely before anyone reads it."""
        final = self.snapshots / sha
        if final.is_dir():
            return final / self.source.subdir if self.source.subdir else final
        tmp = self.snapshots / f".{sha}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        proc = subprocess.run(["git", "--git-dir", str(self.mirror), "archive", "--format=tar", sha],
                              capture_output=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise GitError(f"git archive {sha[:12]} failed: {proc.stderr.decode(errors='replace')}")
        with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
            tar.extractall(tmp, filter="data")
        os.rename(tmp, final)  # atomic: a snapshot directory is complete or absent
        self._prune_snapshots(keep=sha)
        return final / self.source.subdir if self.source.subdir else final

    def _prune_snapshots(self, keep: str, retain: int = 3) -> None:
        dirs = sorted((p for p in self.snapshots.iterdir() if p.is_dir() and not p.name.startswith(".")),
                      key=lambda p: p.stat().st_mtime, reverse=True)
        for old in dirs[retain:]:
            if old.name != keep:
                shutil.rmtree(old, ignore_errors=True)
