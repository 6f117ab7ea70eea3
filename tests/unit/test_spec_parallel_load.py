"""Many spec files are parsed in forked processes (loader.PARALLEL_BYTES): the specs and every
diagnostic (file:line:column, message, severity, order) are the same as when read here."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller import forkmap
from controller.spec import loader


def _host_file(h: int, extra: str = "") -> str:
    docs = [f"apiVersion: virtsync/v1\nkind: Host\nmetadata: {{name: host{h}}}\nspec: {{uri: 'test:///default'}}\n"]
    docs += [f"apiVersion: virtsync/v1\nkind: Guest\nmetadata: {{name: h{h}g{g}}}\n"
             f"spec: {{host: host{h}, state: running, vcpus: 1, memory: 64MiB}}\n" for g in range(5)]
    return "---\n".join(docs) + extra


def _fleet(root: Path) -> Path:
    specs = root / "specs"
    specs.mkdir()
    for h in range(12):
        (specs / f"host{h:02}.yaml").write_text(_host_file(h))
    # A field of the wrong type, deep in a later document (its mark is made from the file's text).
    (specs / "host03.yaml").write_text(_host_file(3, "---\napiVersion: virtsync/v1\nkind: Guest\n"
                                                  "metadata: {name: bad}\nspec:\n  host: host3\n"
                                                  "  vcpus: many\n  memory: 64MiB\n"))
    (specs / "host05.yaml").write_text("a: [1, 2\n")  # not YAML
    (specs / "host07.yaml").write_text(_host_file(7, "---\n---\nkind: Nope\n"))  # an empty document, a bad one
    (specs / "host09.yaml").write_text(_host_file(9).replace("h9g0", "h8g0"))  # a guest named twice
    return specs


def _summary(result: loader.LoadResult) -> tuple[list[tuple[str, int, int, str, str]], list[tuple[str, str, str]]]:
    return ([(d.file, d.line, d.column, d.severity, d.message) for d in result.diagnostics],
            [(i.file, i.obj.kind, i.obj.metadata.name) for i in result.specs.items])


def test_many_files_parsed_in_forked_processes_give_the_same_specs_and_diagnostics(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    specs = _fleet(tmp_path)
    here = loader.load_specs([specs])
    forks: list[int] = []
    real = forkmap.fork_map

    def counted(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        forks.append(1)
        yield from real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loader, "PARALLEL_BYTES", 0)
    monkeypatch.setattr(loader, "_jobs", lambda: 2)
    monkeypatch.setattr(forkmap, "fork_map", counted)
    forked = loader.load_specs([specs])
    assert forks, "the files were not parsed in forked processes"
    assert _summary(forked) == _summary(here)
    diags, items = _summary(here)
    assert len(items) == 11 * 6  # the unparsable file's host and guests are missing, not the rest
    where = [(d[0].rsplit("/", 1)[-1], d[1], d[2], d[4].split(";")[0].split(" (")[0]) for d in diags]
    assert where == [("host03.yaml", 36, 10, "spec.vcpus: expected an integer, got string 'many'"),
                     ("host05.yaml", 2, 1, "invalid YAML: did not find expected ',' or ']'"),
                     ("host07.yaml", 32, 1, "missing apiVersion"),
                     ("host09.yaml", 8, 18, "duplicate Guest 'h8g0'")]
