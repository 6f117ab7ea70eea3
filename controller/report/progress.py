"""Progress of long transfers (image downloads, volume uploads and copies) for people.

On a terminal: one line per transfer, rewritten in place (``\\r`` and erase-to-end) with bytes
done / total, percent and rate, at most ten times a second, and left standing when the
transfer ends. Without a terminal (a pipe, a CI log): plain lines, one per tenth of the total
(or per 64 MiB when the total is unknown) and one at the end, so logs stay short and readable.

The display writes to the stream it is given and reads the clock it is given: nothing here
opens a file or asks the system. ``transfers_to`` makes a display the process's sink for the
duration of a command; code deep in the executor calls ``transfer(label, done, total)`` (a
no-op without a sink, as under ``serve``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
_TTY_INTERVAL = 0.1  # seconds between redraws
_PLAIN_STEP_UNKNOWN = 64 << 20  # bytes between plain lines when the total is unknown


def human(n: float) -> str:
    """Bytes in binary units, one decimal from KiB on: 0 B, 1023 B, 1.5 KiB, 2.0 GiB."""
    unit = 0
    while n >= 1024 and unit < len(_UNITS) - 1:
        n /= 1024
        unit += 1
    return f"{int(n)} B" if unit == 0 else f"{n:.1f} {_UNITS[unit]}"


def progress_text(label: str, done: int, total: int | None, seconds: float) -> str:
    """`download base.img: 512.0 MiB / 2.0 GiB (25%) 48.3 MiB/s`."""
    size = f"{human(done)} / {human(total)} ({done * 100 // total}%)" if total else human(done)
    rate = f" {human(done / seconds)}/s" if seconds > 0 and done else ""
    return f"{label}: {size}{rate}"


@dataclass
class _State:
    started: float
    drawn: float = -1.0  # when the line was last written
    plain_next: int = 0  # the byte count of the next plain line


class ProgressDisplay:
    """Transfers and other lines on one stream; thread-safe (hosts apply in parallel)."""

    def __init__(self, stream: TextIO, tty: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream, self.tty, self.clock = stream, tty, clock
        self._lock = threading.Lock()
        self._states: dict[str, _State] = {}
        self._open = ""  # the label whose line is on screen, not yet ended by a newline

    def update(self, label: str, done: int, total: int | None) -> None:
        now = self.clock()
        with self._lock:
            st = self._states.setdefault(label, _State(now))
            finished = total is not None and done >= total
            text = progress_text(label, done, total, now - st.started)
            if self.tty:
                if finished or st.drawn < 0 or now - st.drawn >= _TTY_INTERVAL:
                    self._draw(label, text)
                    st.drawn = now
                if finished:
                    self._end_line()
                    del self._states[label]
                return
            if finished or done >= st.plain_next:
                self.stream.write(text + "\n")
                self.stream.flush()
                step = max(1, total // 10) if total else _PLAIN_STEP_UNKNOWN
                st.plain_next = (done // step + 1) * step
            if finished:
                del self._states[label]

    def finish(self, label: str, done: int) -> None:
        """A transfer whose total was not known has ended after ``done`` bytes: its last line."""
        now = self.clock()
        with self._lock:
            st = self._states.pop(label, None)
            if st is None:
                return  # ended through update (done reached the total): already standing
            text = progress_text(label, done, None, now - st.started)
            if self.tty:
                self._draw(label, text)
                self._end_line()
            else:
                self.stream.write(text + "\n")
                self.stream.flush()

    def line(self, text: str) -> None:
        """An ordinary line (an action's outcome) that must not run into an updating one."""
        with self._lock:
            if self.tty and self._open:
                self.stream.write("\r\x1b[K")
                self._open = ""
            self.stream.write(text + "\n")
            self.stream.flush()

    def _draw(self, label: str, text: str) -> None:
        if self._open and self._open != label:
            self.stream.write("\n")  # another transfer's line stays as it was last drawn
        self.stream.write("\r" + text + "\x1b[K")
        self.stream.flush()
        self._open = label

    def _end_line(self) -> None:
        self.stream.write("\n")
        self.stream.flush()
        self._open = ""


# ------------------------------------------------------------ the process's sink

_sink: ProgressDisplay | None = None
_sink_lock = threading.Lock()


@contextmanager
def transfers_to(display: ProgressDisplay | None) -> Iterator[None]:
    """Report the transfers of this command (every thread of it) to ``display``."""
    global _sink
    with _sink_lock:
        before, _sink = _sink, display
    try:
        yield
    finally:
        with _sink_lock:
            _sink = before


def transfer(label: str, done: int, total: int | None) -> None:
    """One transfer's progress: bytes so far and the total (None: not known)."""
    sink = _sink
    if sink is not None:
        sink.update(label, done, total)


def transfer_done(label: str, done: int) -> None:
    """The end of a transfer of unknown size (a known one ends when ``done`` reaches its total)."""
    sink = _sink
    if sink is not None:
        sink.finish(label, done)


def say(text: str, stream: TextIO) -> None:
    """A line for people: through the display when one is the sink (so it does not run into an
    updating transfer line), else straight to ``stream``."""
    sink = _sink
    if sink is not None:
        sink.line(text)
    else:
        stream.write(text + "\n")
