"""Marks made on first use (the loader's reading): the same as those read at once."""

from __future__ import annotations

from controller.spec.yaml_reader import read_documents

TEXT = """apiVersion: virtsync/v1
kind: Guest
metadata: {name: a}
spec:
  disks:
    - {name: root, size: 10GiB}
    - name: data
      size: 1GiB
---
---
a: [1, {b: 2}]
c: 3
"""


def test_lazy_marks_are_the_marks_of_reading_with_marks() -> None:
    eager = read_documents(TEXT)
    lazy = read_documents(TEXT, marks="lazy")
    assert [d.data for d in lazy] == [d.data for d in eager]
    assert [d.start for d in lazy] == [d.start for d in eager]
    # Asked out of order: each document gets its own marks, not its neighbour's.
    for doc, want in reversed(list(zip(lazy, eager, strict=True))):
        assert doc.marks == want.marks and doc.key_marks == want.key_marks
        assert doc.mark_of(("spec", "disks", 1, "size")) == want.mark_of(("spec", "disks", 1, "size"))
    assert lazy[0].mark_of(("spec", "disks", 1, "size")) == (8, 13)
    assert lazy[0].mark_of(("metadata", "name"), key=True) == (3, 12)
    assert lazy[2].marks[("a", 1, "b")] == (11, 12)


def test_documents_read_without_marks_point_at_their_start() -> None:
    (doc,) = read_documents("a: 1\nb: {c: 2}\n", marks=False)
    assert doc.marks == {} and doc.mark_of(("b", "c")) == doc.start == (1, 1)
