"""forkmap: work done in forked children comes back whole, a child's death costs no item, and an
error in a child is raised in the parent."""

from __future__ import annotations

import os

import pytest

from controller.forkmap import ChildFailed, fork_map

PARENT = os.getpid()


def _square_where(i: int) -> tuple[int, int]:
    return i * i, os.getpid()


def test_every_item_is_computed_once_in_the_children() -> None:
    got = list(fork_map(_square_where, list(range(50)), 3, chunk=4))
    assert sorted(i for i, _ in got) == list(range(50))
    assert all(square == i * i for i, (square, _) in got)
    pids = {pid for _, (_, pid) in got}
    assert PARENT not in pids and len(pids) == 3


def _dies_on_7(i: int) -> tuple[int, int]:
    if i == 7 and os.getpid() != PARENT:
        os._exit(3)  # a child killed mid-chunk (a crash inside libvirt, the OOM killer)
    return i, os.getpid()


def test_the_items_of_a_child_that_died_are_computed_in_the_parent() -> None:
    got = dict(fork_map(_dies_on_7, list(range(20)), 2, chunk=5))
    assert sorted(got) == list(range(20)) and all(got[i][0] == i for i in got)
    assert got[7][1] == PARENT  # the lost chunk (5-9) was done here
    assert {got[i][1] for i in range(5, 10)} == {PARENT}


def _fails_on_3(i: int) -> int:
    if i == 3:
        raise ValueError("no three")
    return i


def test_an_error_in_a_child_is_raised_in_the_parent_with_its_traceback() -> None:
    with pytest.raises(ChildFailed, match=r"(?s)ValueError: no three.*"):
        list(fork_map(_fails_on_3, list(range(10)), 2, chunk=2))


def test_threads_in_each_child_keep_every_result() -> None:
    got = dict(fork_map(_square_where, list(range(33)), 2, chunk=8, threads=4))
    assert sorted(got) == list(range(33)) and all(got[i][0] == i * i for i in got)


def test_a_recycled_child_ends_after_its_chunks_and_a_fresh_one_takes_the_rest() -> None:
    got = dict(fork_map(_square_where, list(range(24)), 2, chunk=3, recycle=2))
    assert sorted(got) == list(range(24)) and all(got[i][0] == i * i for i in got)
    by_pid: dict[int, set[int]] = {}
    for i, (_, pid) in got.items():
        by_pid.setdefault(pid, set()).add(i // 3)
    assert PARENT not in by_pid
    assert all(len(chunks) <= 2 for chunks in by_pid.values())  # 8 chunks, at most 2 a child
    assert len(by_pid) >= 4 and sum(len(chunks) for chunks in by_pid.values()) == 8
