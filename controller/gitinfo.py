"""The git commit of a spec tree: recorded on every object virtsync changes."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit(paths: list[str]) -> str:
    """HEAD of the git repository holding the specs, or "" outside one."""
    if not paths:
        return ""
    where = Path(paths[0])
    where = where if where.is_dir() else where.parent
    from controller import noop_memo

    with noop_memo.git_call(str(where)) as seen:  # the commit is an input of a memoized plan
        head = head_of(str(where))
        seen(head)
        return head


def head_of(where: str) -> str:
    """``git rev-parse HEAD`` in the directory ``where``, or "" outside a repository."""
    try:
        out = subprocess.run(["git", "-C", where, "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""
