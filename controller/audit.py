"""The audit log: every change virtsync makes, one JSON line each, in an append-only file.

A line (schemaVersion 1)::

    {"schemaVersion": 1, "time": "2026-01-01T03:00:00.123456+00:00", "instance": "default",
     "host": "kvm1", "object": "Guest/web", "action": "update-guest", "outcome": "ok",
     "error": null, "detail": "definition updated; memory set live",
     "before": "sha256:…", "after": "sha256:…", "commit": "3f2a…",
     "author": "Alice <alice@example.org>", "signer": "alice@example.org", "repair": false}

- ``before`` / ``after``: the *object digest* right before and right after the action (null where
  the object does not exist, or could not be read). For a Guest, Network or StoragePool it is the
  sha256 of its persistent definition as libvirt returns it (ownership metadata included), every
  console password (``passwd='…'``) first replaced by its value digest — never the XML itself; a
  StoragePool's digest also takes in its ownership marker. A Volume's digest is that of its path,
  format and capacity; a Secret's that of its UUID, usage and the value digest recorded with it.
  A power action (start, stop…) leaves the definition as it was: before and after are equal.
  A Snapshot's (``Snapshot/guest/name``, from a snapshot pass) is that of its guest and name: null
  before it is taken and after it is pruned.
- ``commit``: the commit the specs came from; ``author`` its ``git log -1 --format='%an <%ae>'``
  (null when unknown); ``signer`` the signer `--verify-commits` verified (null otherwise).
- ``repair``: see ``controller.apply.executor.is_repair`` — true when the action changes back an
  object this instance owns whose spec did not change since virtsync last wrote it.
- Actions skipped (an earlier failure of what they need) changed nothing and are not logged.

Writers open the file with O_APPEND and write each line with one ``write`` call (then fsync), so
lines of concurrent writers (an apply next to a serve) never interleave.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.errors import UsageError
from controller.model.records import record
from controller.spec.secrets import secret_digest

SCHEMA_VERSION = 1
KINDS = ("Guest", "Network", "StoragePool", "Volume", "Secret", "Snapshot", "Host")

_PASSWD = re.compile(r"""\bpasswd=(['"])(.*?)\1""", re.S)


def _sha(blob: str) -> str:
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def definition_digest(xml: str | None, extra: str = "") -> str | None:
    """The digest of a persistent definition, console passwords replaced by their value digest
    (so a new password still changes it, and nothing of it can be read back)."""
    if xml is None:
        return None
    return _sha(_PASSWD.sub(lambda m: f"passwd={m.group(1)}{secret_digest(m.group(2))}{m.group(1)}", xml)
                + extra)


def record_digest(data: Any) -> str | None:
    """The digest of a small record (a volume's path/format/capacity, a secret's identity)."""
    if data is None:
        return None
    return _sha(json.dumps(data, sort_keys=True, separators=(",", ":"), default=str))


@record
class AuditEntry:
    host: str
    kind: str
    name: str
    action: str
    ok: bool
    error: str | None = None
    detail: str = ""
    before: str | None = None
    after: str | None = None
    commit: str = ""
    repair: bool = False


@dataclass
class CommitInfo:
    """Who a commit is by: its author from git (looked up once), its signer when verified."""

    git_dir: str | None = None  # a bare repository (serve --git's mirror)
    cwd: str | None = None  # a checkout holding the specs
    signers: dict[str, str] = field(default_factory=dict)
    _authors: dict[str, str | None] = field(default_factory=dict)

    def author(self, commit: str) -> str | None:
        if not commit or (self.git_dir is None and self.cwd is None):
            return None
        if commit not in self._authors:
            cmd = ["git", *(["--git-dir", self.git_dir] if self.git_dir else []), "log", "-1",
                   "--format=%an <%ae>", commit, "--"]
            try:
                out = subprocess.run(cmd, cwd=self.cwd, capture_output=True, text=True, timeout=10, check=False)
                self._authors[commit] = (out.stdout.strip() or None) if out.returncode == 0 else None
            except (OSError, subprocess.TimeoutExpired):
                self._authors[commit] = None
        return self._authors[commit]


class AuditLog:
    """An append-only JSON-lines file; ``echo`` also gets every line (serve's stdout event)."""

    def __init__(self, path: str, instance: str, commits: CommitInfo | None = None,
                 echo: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.path, self.instance = path, instance
        self.commits = commits or CommitInfo()
        self.echo = echo
        self._lock = threading.Lock()
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise UsageError(f"--audit-log {path}: cannot open it for appending: {exc.strerror}") from None

    def line(self, e: AuditEntry, at: datetime | None = None) -> dict[str, Any]:
        with self._lock:
            author = self.commits.author(e.commit)
            signer = self.commits.signers.get(e.commit)
        return {"schemaVersion": SCHEMA_VERSION, "time": (at or datetime.now(UTC)).isoformat(),
                "instance": self.instance, "host": e.host, "object": f"{e.kind}/{e.name}", "action": e.action,
                "outcome": "ok" if e.ok else "failed", "error": e.error, "detail": e.detail,
                "before": e.before, "after": e.after, "commit": e.commit or None, "author": author,
                "signer": signer, "repair": e.repair}

    def write(self, e: AuditEntry) -> dict[str, Any]:
        doc = self.line(e)
        data = (json.dumps(doc, separators=(",", ":")) + "\n").encode()
        with self._lock:
            written = os.write(self._fd, data)  # one write of the whole line: O_APPEND keeps it whole
            while written < len(data):  # only on a full disk or a signal; never seen on a regular file
                written += os.write(self._fd, data[written:])
            os.fsync(self._fd)
        if self.echo is not None:
            self.echo(doc)
        return doc

    def close(self) -> None:
        os.close(self._fd)


def snapshot_entry(o: Any, commit: str = "") -> AuditEntry | None:
    """The line of a snapshot pass's outcome (controller/snapshots/runner.py PassOutcome): a take
    or a prune is a change (object ``Snapshot/guest/name``); a skip is not. A failed one's action is
    ``snapshot`` (the pass does not say whether it was a take or a prune)."""
    if o.action not in ("took", "deleted", "failed") or not o.snapshot:
        return None
    there = record_digest({"guest": o.guest, "snapshot": o.snapshot})
    action = {"took": "take-snapshot", "deleted": "delete-snapshot"}.get(o.action, "snapshot")
    ok = o.action != "failed"
    return AuditEntry(o.host, "Snapshot", f"{o.guest}/{o.snapshot}", action, ok, None if ok else o.detail,
                      f"policy {o.policy}" + (f"; {o.detail}" if ok and o.detail else ""),
                      there if o.action == "deleted" else None, there if o.action == "took" else None, commit)


# The audit log of the executions this context starts: `apply --audit-log` and each reconcile of
# `serve --audit-log` set it (audit_to) around Engine.reconcile; the executor's options take it up
# (ExecOptions.audit), so the engine needs no parameter of its own for it.
_CURRENT: ContextVar[AuditLog | None] = ContextVar("virtsync_audit", default=None)


def current_audit() -> AuditLog | None:
    return _CURRENT.get()


@contextmanager
def audit_to(sink: AuditLog | None) -> Iterator[None]:
    token = _CURRENT.set(sink)
    try:
        yield
    finally:
        _CURRENT.reset(token)


_stdout_lock = threading.Lock()


def stdout_event(doc: dict[str, Any]) -> None:
    """serve's distinct audit event: one JSON line on stdout (the service's log is on stderr)."""
    line = json.dumps({"event": "audit", "level": "info", "timestamp": doc["time"], **doc}) + "\n"
    with _stdout_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


# ------------------------------------------------------------------ reading


def parse_object(text: str) -> tuple[str | None, str, str]:
    """``Kind/name`` or ``host/Kind/name`` → (host or None, kind, name). A name may hold '/'
    (a Volume is ``Volume/pool/volume``): the kind is the first segment that names a kind."""
    parts = text.split("/")
    if len(parts) >= 2 and parts[0] in KINDS:
        return None, parts[0], "/".join(parts[1:])
    if len(parts) >= 3 and parts[1] in KINDS:
        return parts[0], parts[1], "/".join(parts[2:])
    raise UsageError(f"{text!r} is not Kind/name or host/Kind/name (kinds: {', '.join(KINDS)})")


def read(path: str) -> Iterator[dict[str, Any] | None]:
    """Every line of the log, in order (None for a line that is not an audit record)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UsageError(f"--audit-log {path}: cannot read it: {exc.strerror}") from None
    for raw in text.splitlines():
        if not raw.strip():
            continue
        try:
            doc = json.loads(raw)
        except ValueError:
            yield None
            continue
        yield doc if isinstance(doc, dict) and "object" in doc else None


def history(path: str, obj: str) -> tuple[list[dict[str, Any]], int]:
    """The lines about ``obj`` (a Guest's include its snapshots'), oldest first; and how many lines
    could not be read."""
    host, kind, name = parse_object(obj)
    wanted = f"{kind}/{name}"
    out, bad = [], 0
    for doc in read(path):
        if doc is None:
            bad += 1
            continue
        o = str(doc.get("object", ""))
        if (o == wanted or (kind == "Guest" and o.startswith(f"Snapshot/{name}/"))) and \
                (host is None or doc.get("host") == host):
            out.append(doc)
    out.sort(key=lambda d: str(d.get("time", "")))  # stable: lines of one instant keep their order
    return out, bad


def render_text(lines: list[dict[str, Any]]) -> str:
    rows = []
    for d in lines:
        who = d.get("author") or "-"
        signed = f" signed by {d['signer']}" if d.get("signer") else ""
        outcome = d.get("outcome", "?") + (f": {d['error']}" if d.get("error") else "")
        rows.append(f"{d.get('time')}  {d.get('host')}/{d.get('object')}  {d.get('action')}  {outcome}"
                    f"{'  (repair)' if d.get('repair') else ''}\n"
                    f"    commit {str(d.get('commit') or '-')[:12]} by {who}{signed}; "
                    f"{_short(d.get('before'))} -> {_short(d.get('after'))}"
                    + (f"; {d['detail']}" if d.get("detail") else "") + "\n")
    return "".join(rows)


def _short(value: Any) -> str:
    return str(value)[:19] if value else "none"
