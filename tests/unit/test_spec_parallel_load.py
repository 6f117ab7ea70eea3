"""Many spec files are parsed in forked processes (loader.PARALLEL_BYTES): the specs and every
diagnostic (file:line:column, message, severity, order) are the same as when read here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


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


# Run in a fresh process: forking is only done with one thread (forkmap.can_fork), and a test
# process keeps the threads earlier tests started (libvirt's event loop, call workers).
LOAD_BOTH_WAYS = """
import json, sys
from controller import forkmap
from controller.spec import loader

def summary(result):
    return ([[d.file, d.line, d.column, d.severity, d.message] for d in result.diagnostics],
            [[i.file, i.obj.kind, i.obj.metadata.name] for i in result.specs.items])

loader.PARALLEL_BYTES = 1 << 62
here = summary(loader.load_specs([sys.argv[1]]))
forks = []
real = forkmap.fork_map
def counted(*args, **kwargs):
    forks.append(forkmap.can_fork())
    yield from real(*args, **kwargs)
forkmap.fork_map = counted
loader.PARALLEL_BYTES, loader._jobs = 0, lambda: 2
forked = summary(loader.load_specs([sys.argv[1]]))
print(json.dumps({"here": here, "forked": forked, "forks": forks}))
"""


def test_many_files_parsed_in_forked_processes_give_the_same_specs_and_diagnostics(tmp_path: Path) -> None:
    specs = _fleet(tmp_path)
    run = subprocess.run([sys.executable, "-c", LOAD_BOTH_WAYS, str(specs)], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    got = json.loads(run.stdout)
    assert got["forks"] == [True], "the files were not parsed in forked processes"
    assert got["forked"] == got["here"]
    diags, items = got["here"]
    assert len(items) == 11 * 6  # the unparsable file's host and guests are missing, not the rest
    where = [(d[0].rsplit("/", 1)[-1], d[1], d[2], d[4].split(";")[0].split(" (")[0]) for d in diags]
    assert where == [("host03.yaml", 36, 10, "spec.vcpus: expected an integer, got string 'many'"),
                     ("host05.yaml", 2, 1, "invalid YAML: did not find expected ',' or ']'"),
                     ("host07.yaml", 32, 1, "missing apiVersion"),
                     ("host09.yaml", 8, 18, "duplicate Guest 'h8g0'")]
