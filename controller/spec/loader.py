"""Spec files → a validated SpecSet, or every problem of the run with file:line:column.

Reading is defensive (size limit before reading, UTF-8 checked, binary refused),
parsing is bounded (see yaml_reader), and each document is validated by the
model of its kind, so one bad document does not hide the problems of the others.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from controller.errors import Diagnostic, SpecError
from controller.spec.checks import check_spec_set
from controller.spec.messages import clip, describe, explain, locate
from controller.spec.models import API_VERSION, KINDS, built
from controller.spec.placement import LOCK_NAME, apply_lock, lock_path, read_lock
from controller.spec.policy import check_policy, load_policy
from controller.spec.references import referenced_files, resolve_cloud_init
from controller.spec.secrets import resolve_secrets, secret_files, secret_values
from controller.spec.specset import Located, SpecSet
from controller.spec.tls import resolve_tls
from controller.spec.volume import resolve_volume_disks
from controller.spec.yaml_reader import Document, Limits, YamlProblem, read_documents

SPEC_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class LoadResult:
    specs: SpecSet
    diagnostics: list[Diagnostic]

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    def raise_for_errors(self) -> SpecSet:
        if self.errors:
            raise SpecError(self.diagnostics)
        return self.specs


def find_spec_files(paths: Sequence[str | Path]) -> tuple[list[Path], list[Diagnostic]]:
    """Files named on the command line, and *.yaml/*.yml under directories, sorted."""
    files: list[Path] = []
    problems: list[Diagnostic] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(
                Path(root) / name
                for root, dirs, names in os.walk(p)
                for name in names
                if name.endswith(SPEC_SUFFIXES) and not name.startswith(".") and name != LOCK_NAME
                if not any(part.startswith(".") for part in Path(root).relative_to(p).parts)
            )
            files.extend(found)
        elif p.is_file():
            files.append(p)
        elif p.exists():  # a FIFO or device: reading it could block or never end
            problems.append(Diagnostic(str(p), 1, 1, "not a regular file or directory"))
        else:
            problems.append(Diagnostic(str(p), 1, 1, "no such file or directory"))
    return files, problems


def _decode(path: str, data: bytes) -> tuple[str | None, Diagnostic | None]:
    nul = data.find(b"\x00")
    if nul >= 0:
        line, col = _position(data, nul)
        return None, Diagnostic(path, line, col, "binary data (a NUL byte), not a YAML text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _position(data, exc.start)
        byte = data[exc.start]
        return None, Diagnostic(
            path, line, col, f"not valid UTF-8 (byte 0x{byte:02x}); save the file as UTF-8"
        )
    return text.removeprefix("\ufeff"), None


def _position(data: bytes, offset: int) -> tuple[int, int]:
    line = data.count(b"\n", 0, offset) + 1
    col = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return line, col


def read_spec_file(path: Path, limits: Limits) -> tuple[list[Document], list[Diagnostic]]:
    name = str(path)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # a FIFO under a directory would block the open
            return [], [Diagnostic(name, 1, 1, "not a regular file")]
        size = st.st_size
        if size > limits.max_file_bytes:
            return [], [Diagnostic(name, 1, 1, f"file is {size} bytes, over the limit of "
                                   f"{limits.max_file_bytes} (--max-file-size)")]
        with path.open("rb") as fh:
            data = fh.read(limits.max_file_bytes + 1)
    except OSError as exc:
        return [], [Diagnostic(name, 1, 1, f"cannot read: {exc.strerror or exc}")]
    if len(data) > limits.max_file_bytes:  # grew while we looked
        return [], [Diagnostic(name, 1, 1, f"file is over the limit of {limits.max_file_bytes} "
                               "bytes")]
    text, problem = _decode(name, data)
    if problem is not None or text is None:
        return [], [problem] if problem else []
    if text.startswith("#cloud-config"):
        return [], []  # cloud-init user-data kept beside the specs, not a spec
    try:
        # Marks only for the documents a diagnostic points into (see yaml_reader._Source).
        return read_documents(text, limits, marks="lazy"), []
    except YamlProblem as exc:
        return [], [Diagnostic(name, exc.mark[0], exc.mark[1], exc.message)]
    except RecursionError:
        return [], [Diagnostic(name, 1, 1, "nesting too deep")]


def validate_document(path: str, index: int, doc: Document) -> tuple[Any | None, list[Diagnostic]]:
    """One document → a model of its kind, or diagnostics pointing into the file."""
    obj, problems, _ = _validate(path, index, doc)
    return obj, problems


def _without(data: Any, locs: list[tuple[Any, ...]]) -> Any:
    """A deep copy of ``data`` without the values at ``locs`` (pydantic error locations)."""
    data = copy.deepcopy(data)
    # Deepest and highest list index first, so that removing one does not move another.
    for loc in sorted(locs, key=lambda loc: (len(loc), [str(p) for p in loc]), reverse=True):
        parent = data
        for part in loc[:-1]:
            try:
                parent = parent[part]
            except (KeyError, IndexError, TypeError):
                parent = None
                break
        last = loc[-1] if loc else None
        in_dict = isinstance(parent, dict) and last in parent
        if in_dict or (isinstance(parent, list) and isinstance(last, int) and 0 <= last < len(parent)):
            del parent[last]
    return data


def _partial(model: type[Any], data: Any, exc: ValidationError, rounds: int = 4) -> Any | None:
    """The document with its invalid fields left out, if that validates: not for use, only so
    that the whole-set checks (references, names, addresses) see it and one run reports every
    problem. A required field that is invalid leaves nothing to check (None)."""
    for _ in range(rounds):
        # Where each error points (a model check about one field names that field).
        locs = [locate(e)[0] for e in exc.errors(include_url=False)]
        if any(len(loc) < 2 for loc in locs):  # the document's spec or metadata itself
            return None
        data = _without(data, locs)
        try:
            return model.model_validate(data)
        except ValidationError as again:
            exc = again
    return None


def _validate(path: str, index: int, doc: Document) -> tuple[Any | None, list[Diagnostic], Any | None]:
    """(model, problems, partial model): the partial one only when the document is invalid."""

    def at(loc: tuple[Any, ...], message: str, key: bool = False) -> Diagnostic:
        line, col = doc.mark_of(loc, key=key)
        return Diagnostic(path, line, col, message)

    data = doc.data
    if not isinstance(data, dict):
        return None, [at((), f"document {index + 1} is not a mapping (got {describe(data)}); "
                         "expected apiVersion, kind, metadata and spec")], None
    api = data.get("apiVersion")
    if api != API_VERSION:
        what = f"apiVersion {api!r} is not supported" if api is not None else "missing apiVersion"
        return None, [at(("apiVersion",), f"{what}; expected apiVersion: {API_VERSION}")], None
    kind = data.get("kind")
    model = KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        what = f"unknown kind {kind!r}" if kind is not None else "missing kind"
        return None, [at(("kind",), f"{what}; expected one of {', '.join(KINDS)}")], None
    try:
        return built(model).model_validate(data), [], None
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc, key = locate(err)
            problems.append(at(loc, explain(model, err), key=key))
        return None, problems, _partial(model, data, exc)


@contextmanager
def _gc_paused() -> Iterator[None]:
    # Loading allocates millions of small, long-lived objects; the cyclic
    # collector would scan them over and over for nothing (a third of the time).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_specs(paths: Sequence[str | Path], limits: Limits | None = None, *, placed: bool = True,
               policy: str | None = None) -> LoadResult:
    """Read, validate and cross-check every spec under ``paths``. ``placed=False`` (for
    `virtsync place`) accepts guests with a hostSelector that have no host yet. ``policy``: a
    tenancy policy file whose fence every spec must keep to (spec/policy.py)."""
    with _gc_paused():
        result = _load(paths, limits or Limits(), placed)
    if policy is None:
        return result
    fence, problems = load_policy(policy)
    if fence is not None:
        problems = check_policy(result.specs, fence, policy)
    return LoadResult(result.specs, _sorted([*result.diagnostics, *problems]))


def _load(paths: Sequence[str | Path], limits: Limits, placed: bool = True) -> LoadResult:
    files, diagnostics = find_spec_files(paths)
    located: list[Located] = []
    partial: list[Located] = []  # invalid documents, minus their invalid fields: checked, never used
    order: dict[int, int] = {}  # document → its place in the run (checks report the first of duplicates)
    for path, (docs, problems, validated) in zip(files, _read_all(files, limits), strict=True):
        diagnostics.extend(problems)
        for index, doc in enumerate(docs):
            if doc.data is None:  # an empty document (a stray ---) is harmless
                continue
            order[id(doc)] = len(order)
            obj, problems, rest = validated[index]
            diagnostics.extend(problems)
            if obj is not None:
                located.append(Located(obj, str(path), doc))
            elif rest is not None:
                partial.append(Located(rest, str(path), doc))
    # Files a guest names as its cloud-init, or a Secret as its value, are not specs, whatever their suffix.
    cloud_files = set().union(*(referenced_files(i) for i in located)) if located else set()
    cloud_files |= secret_files(located)
    if cloud_files:
        located = [i for i in located if str(Path(i.file).resolve()) not in cloud_files]
        diagnostics = [d for d in diagnostics if str(Path(d.file).resolve()) not in cloud_files]
    # The Secrets first: cloud-init text may hold ${secret:NAME}.
    located, problems = resolve_secrets(located)
    diagnostics.extend(problems)
    located = resolve_volume_disks(located)  # after the Secrets: a LUKS volume's disk names its secret
    values = secret_values(located)
    resolved = []
    for item in located:
        item, problems = resolve_cloud_init(item, secrets=values)
        diagnostics.extend(problems)
        item, problems = resolve_tls(item)
        diagnostics.extend(problems)
        resolved.append(item)
    placements, problems = read_lock(lock_path(paths))
    diagnostics.extend(problems)
    located, problems = apply_lock(resolved, placements, required=placed)
    diagnostics.extend(problems)
    if not files and not diagnostics:
        diagnostics.append(Diagnostic(str(paths[0]) if paths else ".", 1, 1,
                                      "no spec files (*.yaml, *.yml) found"))
    specs = SpecSet.build(located)
    # The whole-set checks see the partial documents too, so one run reports every problem.
    if partial:
        everything = sorted([*located, *partial], key=lambda i: order.get(id(i.doc), len(order)))
        diagnostics.extend(check_spec_set(SpecSet.build(everything)))
    else:
        diagnostics.extend(check_spec_set(specs))
    return LoadResult(specs, _sorted(dataclasses.replace(d, message=clip(d.message))
                                     for d in diagnostics))


_Validated = tuple[Any | None, list[Diagnostic], Any | None]

# Spec files of this many bytes in all or more are parsed in one forked process per CPU (a fleet's
# 100,000 documents: ~5 s of one CPU), fewer here: they are not worth a fork.
PARALLEL_BYTES = 1 << 20


def _read_all(files: Sequence[Path], limits: Limits
              ) -> list[tuple[list[Document], list[Diagnostic], list[_Validated]]]:
    """Each file's documents, its problems, and each document's (model, problems, partial model),
    in order. Many bytes of specs are parsed in forked processes, which send back the plain
    documents (pickled builtins: cheap, where models are not); each file is validated here as it
    arrives, while they parse the next ones."""
    out: list[tuple[list[Document], list[Diagnostic], list[_Validated]] | None] = [None] * len(files)
    empty: _Validated = (None, [], None)
    for i, (docs, problems) in _parsed(files, limits):
        out[i] = (docs, problems, [_validate(str(files[i]), index, doc) if doc.data is not None else empty
                                   for index, doc in enumerate(docs)])
    return out  # type: ignore[return-value]  # every index is filled


def _parsed(files: Sequence[Path], limits: Limits) -> Iterator[tuple[int, tuple[list[Document], list[Diagnostic]]]]:
    """``(i, read_spec_file(files[i]))`` of every file, in any order."""
    if len(files) >= 2 and _total_bytes(files) >= PARALLEL_BYTES:
        from controller import forkmap  # only then: a small run imports none of it

        jobs = forkmap.usable_cpus()
        if jobs > 1 and len(files) >= 2 * jobs and forkmap.can_fork():  # not among the service's threads
            yield from forkmap.fork_map(lambda path: read_spec_file(path, limits), files, jobs,
                                        chunk=max(1, len(files) // (8 * jobs)))
            return
    for i, path in enumerate(files):
        yield i, read_spec_file(path, limits)


def _total_bytes(files: Sequence[Path]) -> int:
    total = 0
    for path in files:
        with contextlib.suppress(OSError):  # read_spec_file reports it
            total += path.stat().st_size
    return total


def _sorted(diags: Iterable[Diagnostic]) -> list[Diagnostic]:
    return sorted(diags, key=lambda d: (d.file, d.line, d.column, d.message))
