"""The ``virtsync`` command's entry point: a no-op ``plan`` or ``apply`` the no-op memo can answer
is answered before the rest of virtsync is loaded (see noop_memo); every other runs cli.run."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

# Verbs answered from the no-op memo when nothing they depend on changed.
MEMO_VERBS = frozenset({"plan", "apply"})


def named_verb(argv: Sequence[str]) -> str | None:
    """The verb of a command line: its first word that is not an option (the top-level options
    take no value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def flush_output() -> None:
    """stdout and stderr flushed, before the process ends without the interpreter's teardown."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing more can be said on it
            stream.flush()


def run() -> NoReturn:
    argv = sys.argv[1:]
    recording = None
    if named_verb(argv) in MEMO_VERBS:
        from controller import noop_memo

        code = noop_memo.answered(argv)
        if code is not None:
            flush_output()
            os._exit(code)  # nothing of virtsync's was loaded that exit handlers would need
        recording = noop_memo.start(argv)
    from controller.cli import run as run_command

    run_command(recording)
