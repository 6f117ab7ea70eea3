"""The no-op memo: a ``plan`` or ``apply`` whose every input is as it was at the last no-op run of
the same command answers as that run did, without loading a spec or building a model (issue 17:
a no-op costs little more than the raw read of the host).

A ``plan`` or ``apply`` run from the command line (launch.py) records what it depends on:

- the code: every module it loaded (path, size, modification time);
- the command: its arguments, working directory, environment, and whether its output is a
  terminal (and how wide);
- the files it read (their content's digest), the directories it listed (names and kinds), the
  paths it only looked at (whether they exist, and as what), the git commit of the spec tree;
- every libvirt call it made and a digest of each answer (hypervisor/read_journal.py).

If it exited 0 having changed nothing (a call that is not a read refuses the record), logged
nothing, and did nothing else (it wrote no file, started no other process than git, forked none,
opened no socket of its own), the record and what it printed on stdout and stderr are kept in
the cache directory. A writer's host locks are set aside (``unrecorded``): an answer from the
memo changes nothing, so it takes none. The next run of the same command checks the record
first: the code, the files, the git commit, then a replay of the libvirt calls against the hosts.
Only if every answer is the same does it print the kept output; the first difference runs the
command in full (which records again).

Specs whose plan depends on the time (snapshot and backup policies, restart windows) and an apply
that waited for another writer are never kept: the commands say so (``refuse``).
``VIRTSYNC_NOOP_MEMO=off`` turns the memo off; ``=report`` says on stderr what it did.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

ENV = "VIRTSYNC_NOOP_MEMO"
FORMAT = 2  # 2: a journal's arguments as JSON
# Environment variables that differ between two runs of the same command in one shell.
_VOLATILE_ENV = frozenset({"_", "OLDPWD", "SHLVL", "PWD", ENV})
# Events of a run that make its answer depend on more than this record holds.
_REFUSING_EVENTS = {
    "os.fork": "it forked", "os.forkpty": "it forked", "os.posix_spawn": "it started a process",
    "os.system": "it started a process", "os.exec": "it started a process",
    "socket.connect": "it opened a socket", "socket.bind": "it opened a socket",
    "os.mkdir": "it made a directory", "os.remove": "it removed a file", "os.rmdir": "it removed a directory",
    "os.rename": "it renamed a file", "os.symlink": "it made a link", "os.link": "it made a link",
    "os.truncate": "it truncated a file", "os.chmod": "it changed a mode", "os.chown": "it changed an owner",
    "os.utime": "it changed a file's time", "shutil.rmtree": "it removed a tree",
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_CODE_SUFFIXES = (".py", ".pyc", ".so", ".pth")
MAX_FILE_BYTES = 16 << 20  # a larger input is not worth digesting on every run
# Seconds the replay of the libvirt calls may take before the command runs in full: as long as
# the recorded run took, within these bounds (a replay slower than the run saves nothing).
REPLAY_TIMEOUT = (1.0, 10.0)


def mode() -> str:
    """on (the default), off, or report."""
    value = os.environ.get(ENV, "on").strip().lower()
    return value if value in ("off", "report") else "on"


def memo_dir() -> str:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "virtsync", "noop")


def _tty_shape() -> list[Any]:
    shape: list[Any] = []
    for fd in (0, 1, 2):
        try:
            shape.append(os.isatty(fd))
        except OSError:
            shape.append(None)
    if shape[1]:
        try:
            shape.append(tuple(os.get_terminal_size(1)))
        except OSError:
            shape.append(None)
    return shape


def _key(argv: Sequence[str]) -> str:
    from controller import __version__

    env = sorted((k, v) for k, v in os.environ.items() if k not in _VOLATILE_ENV)
    blob = json.dumps([FORMAT, __version__, sys.executable, sys.version, list(argv), os.getcwd(), env,
                       _tty_shape()], separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def _file_digest(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def _kind(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return "dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else "other"


def _listing(path: str) -> str | None:
    try:
        with os.scandir(path) as it:
            names = sorted(f"{e.name}/{int(e.is_dir())}" for e in it)
    except OSError:
        return None
    return hashlib.sha256("\0".join(names).encode("utf-8", "surrogatepass")).hexdigest()


def _code_state(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


# ---------------------------------------------------------------- recording


class _Tee:
    """This process's stdout, keeping a copy of what is written to it."""

    def __init__(self, target: Any, recording: Recording):
        self._target, self._recording = target, recording
        self.text: list[str] = []

    def write(self, s: str) -> int:
        self.text.append(s)
        return int(self._target.write(s))

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        if name == "buffer":
            self._recording.refuse("it wrote to stdout's bytes")
        return getattr(self._target, name)


# A log line (structlog's console and JSON lines carry the time): an answer that would say it again
# with the old time, and whatever made it log.
_LOGGED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d")


class _ErrTee(_Tee):
    """stderr, kept as stdout is; a line that carries a time refuses the record."""

    def write(self, s: str) -> int:
        if _LOGGED.search(s):
            self._recording.refuse("it logged")
        return super().write(s)


_current: Recording | None = None


class Recording:
    """What one run depends on, gathered while it runs (see the module docstring)."""

    def __init__(self, argv: Sequence[str]):
        from controller.hypervisor.read_journal import Recorder

        self.argv = list(argv)
        self.key = _key(argv)
        self.refused = ""
        self.opened: dict[str, tuple[int, int]] = {}
        self.listed: set[str] = set()
        self.looked: set[str] = set()
        self.git: dict[str, str] = {}
        self.libvirt = Recorder()
        self._lock = threading.Lock()
        self._active = False
        self._real_stat: Callable[..., Any] = os.stat
        self._real_lstat: Callable[..., Any] = os.lstat
        self._stdout: _Tee | None = None
        self._stderr: _Tee | None = None
        self._started = 0.0

    def refuse(self, why: str) -> None:
        if not self.refused:
            self.refused = why
            self.libvirt.refuse(why)  # its journals are dropped and it records no more

    def start(self) -> None:
        global _current
        _current = self
        self._active = True
        self._started = time.monotonic()
        sys.addaudithook(self._audit)  # cannot be removed: _active turns it off
        self.libvirt.install()
        real_stat, real_lstat = self._real_stat, self._real_lstat

        def looking_stat(path: Any, *args: Any, **kwargs: Any) -> Any:
            self._looked_at(path)
            return real_stat(path, *args, **kwargs)

        def looking_lstat(path: Any, *args: Any, **kwargs: Any) -> Any:
            self._looked_at(path)
            return real_lstat(path, *args, **kwargs)

        os.stat, os.lstat = looking_stat, looking_lstat
        self._stdout, self._stderr = _Tee(sys.stdout, self), _ErrTee(sys.stderr, self)
        sys.stdout, sys.stderr = self._stdout, self._stderr

    def _stop(self) -> None:
        global _current
        self._active = False
        _current = None
        os.stat, os.lstat = self._real_stat, self._real_lstat
        self.libvirt.uninstall()
        if self._stdout is not None and self._stderr is not None:
            sys.stdout, sys.stderr = self._stdout._target, self._stderr._target

    def _looked_at(self, path: Any) -> None:
        if self._active and not _set_aside() and isinstance(path, (str, os.PathLike)):
            self.looked.add(os.path.abspath(os.fspath(path)))

    def _audit(self, event: str, args: tuple[Any, ...]) -> None:
        if not self._active or _set_aside():
            return
        if event == "open":
            self._opened(*args[:3])
        elif event in ("os.listdir", "os.scandir"):
            path = args[0] if args else "."
            if isinstance(path, (str, os.PathLike)):
                self.listed.add(os.path.abspath(os.fspath(path or ".")))
        elif event == "subprocess.Popen":
            self.refuse(f"it ran {args[0]!r}")
        elif event in _REFUSING_EVENTS:
            self.refuse(_REFUSING_EVENTS[event])

    def _opened(self, path: Any, how: Any, flags: Any) -> None:
        if not isinstance(path, (str, os.PathLike)):
            return  # a file descriptor (one already open)
        path = os.path.abspath(os.fspath(path))
        writing = (isinstance(how, str) and any(c in how for c in "wax+")) or \
            (isinstance(flags, int) and bool(flags & _WRITE_FLAGS))
        if writing:
            if path != os.devnull:
                self.refuse(f"it wrote {path}")
            return
        if path.endswith(_CODE_SUFFIXES):
            return  # code: the loaded modules are checked
        try:
            st = self._real_stat(path)
        except OSError:
            self.looked.add(path)  # a file that is not there (yet): its coming is a change
            return
        if stat.S_ISREG(st.st_mode):
            with self._lock:
                self.opened.setdefault(path, (st.st_size, st.st_mtime_ns))

    def finish(self, code: int) -> None:
        """Keep the record if this run may be answered again (exit 0, nothing refused)."""
        self._stop()
        why = self.refused or self.libvirt.refused
        if code != 0 and not why:
            why = f"it ended with exit code {code}"
        if why:
            self._say(f"not kept: {why}")
            return
        record = self._record()
        if record is None:
            return
        directory = memo_dir()
        try:
            import tempfile  # only here: an answer from the memo writes nothing

            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
            with os.fdopen(fd, "w") as f:
                json.dump(record, f, separators=(",", ":"))
            os.replace(tmp, os.path.join(directory, f"{self.key}.json"))
            _prune(directory)
        except OSError:
            pass  # a cache that cannot be written: the next run plans in full

    def _record(self) -> dict[str, Any] | None:
        files: dict[str, str] = {}
        for path, (size, mtime) in sorted(self.opened.items()):
            state = _code_state(path)
            if state != [size, mtime] or size > MAX_FILE_BYTES:
                self._say(f"not kept: {path} changed while the command ran, or is too large")
                return None
            digest = _file_digest(path)
            if digest is None:
                return None
            files[path] = digest
        code: dict[str, list[int]] = {}
        for module in list(sys.modules.values()):
            where = getattr(module, "__file__", None)
            if isinstance(where, str):
                state = _code_state(where)
                if state is not None:
                    code[where] = state
        listed = {p: _listing(p) for p in sorted(self.listed)}
        looked = {p: _kind(p) for p in sorted(self.looked - set(files) - set(code))}
        from controller.hypervisor.read_journal import journals_of

        assert self._stdout is not None and self._stderr is not None
        return {"format": FORMAT, "argv": self.argv, "code": code, "files": files, "listed": listed,
                "looked": looked, "git": self.git, "libvirt": list(journals_of(self.libvirt)),
                "stdout": "".join(self._stdout.text), "stderr": "".join(self._stderr.text), "exit": 0,
                "seconds": round(time.monotonic() - self._started, 3)}

    def _say(self, text: str) -> None:
        if mode() == "report":
            print(f"virtsync: no-op memo {text}", file=sys.stderr)


_aside = threading.local()  # .n: this thread is inside unrecorded()


def _set_aside() -> bool:
    return int(getattr(_aside, "n", 0)) > 0


@contextmanager
def unrecorded() -> Iterator[None]:
    """What this thread does inside is no input of the run's answer and may write: a writer's
    host locks (an answer from the memo writes nothing, so it takes none)."""
    _aside.n = getattr(_aside, "n", 0) + 1
    try:
        yield
    finally:
        _aside.n -= 1


MAX_RECORDS = 256  # commands remembered; past it the least recently written go


def _prune(directory: str) -> None:
    with os.scandir(directory) as it:
        records = [(e.stat().st_mtime_ns, e.path) for e in it if e.name.endswith(".json")]
    for _, path in sorted(records)[:-MAX_RECORDS]:
        with contextlib.suppress(OSError):
            os.unlink(path)


def refuse(why: str) -> None:
    """This run's answer depends on something the record does not hold (the time): not kept."""
    if _current is not None:
        _current.refuse(why)


@contextmanager
def git_call(where: str) -> Iterator[Callable[[str], None]]:
    """Around gitinfo's ``git rev-parse HEAD`` in ``where``: the commit it gives is an input of the
    run (the process it starts is not)."""
    recording = _current
    if recording is None:
        yield lambda _out: None
        return
    with unrecorded():
        yield lambda out: recording.git.__setitem__(where, out)


def start(argv: Sequence[str]) -> Recording | None:
    if mode() == "off":
        return None
    recording = Recording(argv)
    recording.start()
    return recording


# ---------------------------------------------------------------- answering again


def _unchanged(record: dict[str, Any]) -> str:
    """"" when every input but libvirt's answers is as recorded, else the first that is not."""
    from controller.gitinfo import head_of

    # (the record's part, how its entries are read now, what a difference is called): cheap first
    checks: tuple[tuple[str, Callable[[str], Any], str], ...] = (
        ("code", _code_state, "code changed"), ("files", _file_digest, "file changed"),
        ("listed", _listing, "directory changed"), ("looked", _kind, "path changed"),
        ("git", head_of, "git commit changed"))
    for part, now, changed in checks:
        for path, then in record[part].items():
            if now(path) != then:
                return f"{changed}: {path}"
    return ""


def answered(argv: Sequence[str]) -> int | None:
    """The exit code, once the kept output is printed, if the last no-op answer still holds."""
    if mode() == "off":
        return None
    path = os.path.join(memo_dir(), f"{_key(argv)}.json")
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("argv") != list(argv):
        return None
    why = _unchanged(record)
    if not why:
        from controller.hypervisor.read_journal import replay

        low, high = REPLAY_TIMEOUT
        why = replay(record["libvirt"], min(high, max(low, float(record.get("seconds", high)))))
    if why:
        if mode() == "report":
            print(f"virtsync: no-op memo not used: {why}", file=sys.stderr)
        return None
    sys.stdout.write(record["stdout"])
    sys.stdout.flush()
    sys.stderr.write(record["stderr"])
    if mode() == "report":
        print("virtsync: no-op memo: every input as at the last no-op run; its output again", file=sys.stderr)
    return int(record["exit"])
