"""Spec files watched with watchdog, debounced into one reload per burst.

Editors that save by rename and `git checkout` rewriting many files produce
bursts of events; a reload waits until the tree has been quiet for a moment,
and while a git operation holds `.git/index.lock` the tree is mid-change and
is not read at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from controller.spec.loader import SPEC_SUFFIXES


def _relevant(path: str) -> bool:
    return path.endswith(SPEC_SUFFIXES) or not Path(path).suffix or path.endswith(".lock")


class SpecWatcher(FileSystemEventHandler):
    def __init__(self, paths: list[Path], on_change: Callable[[], None], quiet: float = 0.15):
        self.paths = paths
        self.on_change = on_change
        self.quiet = quiet
        self._last = 0.0
        self._pending = False
        self._cond = threading.Condition()
        self._observer = Observer()
        self._stopped = False

    def on_any_event(self, event: FileSystemEvent) -> None:
        src = str(event.src_path)
        dest = str(getattr(event, "dest_path", "") or "")
        if event.event_type in ("opened", "closed_no_write"):
            return
        if not (_relevant(src) or (dest and _relevant(dest))):
            return
        with self._cond:
            self._last = time.monotonic()
            self._pending = True
            self._cond.notify()

    def _git_busy(self) -> bool:
        for p in self.paths:
            for d in (p, *p.parents):
                if (d / ".git" / "index.lock").exists():
                    return True
                if (d / ".git").exists():
                    break
        return False

    def _debounce(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                wait = self._last + self.quiet - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                if self._git_busy():
                    self._cond.wait(self.quiet)
                    continue
                self._pending = False
            self.on_change()

    def start(self) -> None:
        for p in self.paths:
            target = p if p.is_dir() else p.parent
            self._observer.schedule(self, str(target), recursive=True)
        self._observer.daemon = True
        self._observer.start()
        threading.Thread(target=self._debounce, name="spec-debounce", daemon=True).start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._observer.stop()
