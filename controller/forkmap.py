"""``fn`` over many items in forked worker processes: a fleet's drift on every CPU.

A host's observation and plan are mostly Python (XML reading, the planner) and so hold the GIL:
threads overlap only the waits. Forked children share the loaded specs with the parent (copy on
write) and send back only each item's result, pickled. Work is handed out a chunk of items at a
time (contiguous items: a child touches few of the parent's pages), the next chunk to whichever
child finished first.

Forking is safe only where no other thread may hold a lock the child would need (libvirt's,
the allocator's, a logging handler's): ``can_fork`` says so only for a process with one thread.
A child that dies leaves its items to the parent, which computes them itself.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import selectors
import signal
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_LEN = 8  # bytes of a frame's length


def usable_cpus() -> int:
    """The CPUs this process may run on: how many workers keep them busy."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def can_fork() -> bool:
    """Whether this process may fork workers now: the OS forks and no other thread runs."""
    return hasattr(os, "fork") and threading.active_count() == 1


class ChildFailed(RuntimeError):
    """``fn`` raised in a child; the message carries the child's traceback."""


def fork_map(fn: Callable[[T], R], items: Sequence[T], processes: int, *, chunk: int = 8,
             threads: int = 1, recycle: int | None = None) -> Iterator[tuple[int, R]]:
    """``(i, fn(items[i]))`` for every item, in the order they are done, computed in
    ``processes`` forked children (``threads`` at a time in each: overlaps the waits of hosts
    that are slow to answer). Call only when ``can_fork()``; results must pickle.

    ``recycle``: chunks a child does before it ends and a fresh child takes its place. What a
    child copies of the parent's pages (it touches the objects it reads: their reference counts)
    and what its own allocator keeps are given back then, so memory stays bounded by what a child
    does between forks, not by its share of all the items."""
    n = len(items)
    chunks = list(range(0, n, max(1, chunk)))
    children: dict[int, tuple[int, int]] = {}  # pid → (task write end, result read end); -1: closed
    outstanding: dict[int, int] = {}  # pid → the chunk start it works on
    served: dict[int, int] = {}  # pid → chunks it has done
    done: set[int] = set()
    sel = selectors.DefaultSelector()
    queue = iter(chunks)

    def spawn() -> int | None:
        """A new child with the next chunk, or None when none is left."""
        start = next(queue, None)
        if start is None:
            return None
        task_r, task_w = os.pipe()
        out_r, out_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(task_w)
            os.close(out_r)
            for fd in (fd for pair in children.values() for fd in pair if fd >= 0):
                os.close(fd)
            _child(fn, items, chunk, threads, task_r, out_w)
        os.close(task_r)
        os.close(out_w)
        children[pid], served[pid] = (task_w, out_r), 0
        sel.register(out_r, selectors.EVENT_READ, (pid, bytearray()))
        _give(pid, start, children, outstanding)
        return pid

    try:
        for _ in range(max(1, min(processes, len(chunks)))):
            spawn()
        while sel.get_map():
            for key, _ in sel.select():
                pid, buf = key.data
                data = os.read(key.fd, 1 << 20)
                if not data:  # the child is gone: what it had is computed here
                    sel.unregister(key.fd)
                    os.close(key.fd)
                    children[pid] = (children[pid][0], -1)
                    lost = outstanding.pop(pid, None)
                    if lost is not None:
                        for i in range(lost, min(lost + chunk, n)):
                            done.add(i)
                            yield i, fn(items[i])
                    continue
                buf += data
                while len(buf) >= _LEN and len(buf) >= _LEN + int.from_bytes(buf[:_LEN], "little"):
                    size = int.from_bytes(buf[:_LEN], "little")
                    kind, payload = pickle.loads(bytes(buf[_LEN:_LEN + size]))
                    del buf[:_LEN + size]
                    if kind == "error":
                        raise ChildFailed(payload)
                    outstanding.pop(pid, None)
                    for i, result in payload:
                        done.add(i)
                        yield i, result
                    served[pid] += 1
                    if recycle is not None and served[pid] >= recycle:
                        _end(pid, children)
                        spawn()
                    else:
                        start = next(queue, None)
                        if start is None:
                            _end(pid, children)
                        else:
                            _give(pid, start, children, outstanding)
        # Chunks never handed out (every child died early): computed here.
        for start in queue:
            for i in range(start, min(start + chunk, n)):
                if i not in done:
                    yield i, fn(items[i])
    finally:
        sel.close()
        for pid, (task_w, out_r) in children.items():
            for fd in (task_w, out_r):
                if fd >= 0:
                    os.close(fd)
            if pid in outstanding:  # left early (an error, the caller stopped): stop it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)


def _give(pid: int, start: int, children: dict[int, tuple[int, int]], outstanding: dict[int, int]) -> None:
    outstanding[pid] = start
    os.write(children[pid][0], start.to_bytes(_LEN, "little"))


def _end(pid: int, children: dict[int, tuple[int, int]]) -> None:
    """No more work for child ``pid``: its task pipe is closed, and it exits."""
    task_w, out_r = children[pid]
    if task_w >= 0:
        os.close(task_w)
        children[pid] = (-1, out_r)


def _child(fn: Callable[[Any], Any], items: Sequence[Any], chunk: int, threads: int, task_r: int,
           out_w: int) -> NoReturn:
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # the parent reports an interrupt, not each child
        pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None
        while True:
            data = _read_exact(task_r, _LEN)
            if len(data) < _LEN:
                break  # no more work
            start = int.from_bytes(data, "little")
            idx = range(start, min(start + chunk, len(items)))
            results = list(zip(idx, pool.map(fn, [items[i] for i in idx]) if pool is not None
                               else (fn(items[i]) for i in idx), strict=True))
            _send(out_w, ("ok", results))
    except BaseException:  # reported to the parent, which raises it
        code = 1
        with contextlib.suppress(BaseException):
            _send(out_w, ("error", traceback.format_exc()))
    finally:
        os._exit(code)  # never the parent's atexit handlers, finalizers or buffered output


def _send(fd: int, message: object) -> None:
    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    view = memoryview(len(data).to_bytes(_LEN, "little") + data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, size: int) -> bytes:
    out = b""
    while len(out) < size:
        data = os.read(fd, size - len(out))
        if not data:
            break
        out += data
    return out
