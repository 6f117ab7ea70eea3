"""YAML text → plain Python values with a line:column mark for every path.

Builds values straight from libyaml's event stream (ruamel.yaml's C parser)
instead of its composer, for three reasons: C speed (the round-trip loader is
about 10 times slower on large trees), marks for error messages, and limits that
hostile input cannot get around: nesting depth is checked on the way down
(libyaml keeps its own stack on the heap, so nothing recurses), aliases are
charged by the size of what they expand to, the nodes of a file are counted,
keys must be unique, and no tag can construct anything but plain data.

Plain scalars resolve by YAML 1.2's core schema: ``yes``/``no``/``on`` stay
strings and ``52:54:00:00:00:01`` is a MAC, not a sexagesimal number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from ruamel.yaml.cyaml import CParser  # type: ignore[attr-defined]
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)
from ruamel.yaml.reader import ReaderError

Path = tuple[str | int, ...]
Mark = tuple[int, int]  # 1-based line, column

_CORE = "tag:yaml.org,2002:"
_ALLOWED_TAGS = {f"{_CORE}{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq")}
_ALLOWED_TAGS |= {"!"}  # the non-specific tag libyaml gives quoted scalars
_COLLECTION_TAGS = {
    MappingStartEvent: {f"{_CORE}map", "!"},
    SequenceStartEvent: {f"{_CORE}seq", "!"},
}
_INT_RE = re.compile(r"^[-+]?[0-9]+$")
_HEX_OCT_RE = re.compile(r"^0x[0-9a-fA-F]+$|^0o[0-7]+$")  # core schema: no sign, no '_'
# Decimal text → int is quadratic in the digits (Python refuses past 4300), and
# huge numbers cannot even be printed in a message; no spec value needs many digits.
MAX_INT_DIGITS = 100
_FLOAT_RE = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_NULLS = {"", "~", "null", "Null", "NULL"}
_TRUE = {"true", "True", "TRUE"}
_FALSE = {"false", "False", "FALSE"}


@dataclass(frozen=True)
class Limits:
    """How big and deep a spec file may be before reading it stops with an error."""

    max_file_bytes: int = 8 * 1024 * 1024
    max_depth: int = 64
    # Nodes a file may expand to through aliases: a billion-laughs bomb hits this
    # long before it costs memory, while real anchors stay far below it.
    max_alias_nodes: int = 100_000
    # Keys, values and documents in one file; None: one per 6 bytes of max_file_bytes.
    # Each costs a few hundred bytes with its marks, so this bounds memory and time
    # (8 MiB of "a," is 4 million nodes, a gigabyte); real specs take 7-10 bytes a node.
    max_nodes: int | None = None

    @property
    def node_limit(self) -> int:
        if self.max_nodes is not None:
            return self.max_nodes
        return max(self.max_file_bytes // 6, 100_000)


class YamlProblem(Exception):
    def __init__(self, message: str, mark: Mark):
        super().__init__(message)
        self.message = message
        self.mark = mark


class _Source:
    """A file's text, kept so that the marks of its documents are made only when one is asked for
    (a diagnostic): the same text read again with marks gives the same marks. Reading a fleet's
    100,000 valid documents without them takes ~30% less time and none of their memory."""

    __slots__ = ("_all", "limits", "text")

    def __init__(self, text: str, limits: Limits):
        self.text, self.limits = text, limits
        self._all: list[tuple[dict[Path, Mark], dict[Path, Mark]]] | None = None

    def marks(self, index: int) -> tuple[dict[Path, Mark], dict[Path, Mark]]:
        if self._all is None:
            self._all = [(d.marks, d.key_marks) for d in read_documents(self.text, self.limits)]
        return self._all[index]


class Document:
    """One document's data, where it starts, and where each value and key of it is."""

    __slots__ = ("_key_marks", "_marks", "_source", "data", "start")

    def __init__(self, data: Any, start: Mark, marks: dict[Path, Mark] | None = None,
                 key_marks: dict[Path, Mark] | None = None, source: tuple[_Source, int] | None = None):
        self.data = data
        self.start = start
        self._marks = marks if marks is not None else {}
        self._key_marks = key_marks if key_marks is not None else {}
        self._source = source  # (the file's text, this document's index): marks made on first use

    def _made(self) -> None:
        if self._source is not None:
            source, index = self._source
            self._marks, self._key_marks = source.marks(index)
            self._source = None

    @property
    def marks(self) -> dict[Path, Mark]:
        """Where each value starts."""
        self._made()
        return self._marks

    @property
    def key_marks(self) -> dict[Path, Mark]:
        """Where each mapping key is."""
        self._made()
        return self._key_marks

    def mark_of(self, path: Path, *, key: bool = False) -> Mark:
        """The nearest mark for ``path``: itself, else its closest ancestor."""
        key_marks, marks = self.key_marks, self.marks
        if key and path in key_marks:
            return key_marks[path]
        for end in range(len(path), -1, -1):
            hit = marks.get(path[:end])
            if hit is not None:
                return hit
        return self.start

    def __repr__(self) -> str:
        return f"Document(data={self.data!r}, start={self.start!r})"


def _mark(m: Any) -> Mark:
    return (m.line + 1, m.column + 1)


def resolve_plain(text: str) -> Any:
    """A plain scalar's value by the core schema; ValueError if it is an oversized integer."""
    if text in _NULLS:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    is_int = _INT_RE.match(text)
    if is_int or _HEX_OCT_RE.match(text):
        digits = len(text.lstrip("+-")) - (0 if is_int else 2)
        if digits > MAX_INT_DIGITS:
            raise ValueError(f"integer of {digits} digits is too large (at most {MAX_INT_DIGITS})")
        return int(text, 10 if is_int else 0)
    if _FLOAT_RE.match(text):
        return float(text)
    return text


def _scalar(ev: ScalarEvent) -> Any:
    tag = ev.tag
    if tag is not None and tag not in _ALLOWED_TAGS:
        raise YamlProblem(f"tag {short_tag(tag)} is not allowed: specs hold plain data only",
                          _mark(ev.start_mark))
    value = ev.value
    if tag is None and ev.implicit[0]:
        return resolve_plain(value)
    if tag is None or tag in ("!", f"{_CORE}str"):
        return value
    resolved = resolve_plain(value)
    want = {f"{_CORE}int": int, f"{_CORE}float": float, f"{_CORE}bool": bool}.get(tag)
    if tag == f"{_CORE}null":
        if resolved is not None:
            raise YamlProblem(f"!!null {value!r} is not null", _mark(ev.start_mark))
        return None
    if want is float and isinstance(resolved, int) and not isinstance(resolved, bool):
        return float(resolved)
    if want is not None and type(resolved) is not want:
        raise YamlProblem(f"{short_tag(tag)} {value!r} is not a valid {tag.rsplit(':', 1)[-1]}",
                          _mark(ev.start_mark))
    return resolved


def _size(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + sum(_size(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(_size(v) for v in value)
    return 1


class _Builder:
    """Turns one document's events into values, iteratively (no recursion).

    With ``marks`` off (the fast path) no path tuples are made at all; marks are
    only needed for error messages, and the loader re-reads a file with marks on
    when it has something to report.
    """

    def __init__(self, limits: Limits, alias_budget: list[int], node_budget: list[int],
                 marks: bool):
        self.limits = limits
        self.budget = alias_budget  # both shared across the file's documents
        self.nodes = node_budget
        self.anchors: dict[str, Any] = {}
        self.with_marks = marks
        self.marks: dict[Path, Mark] = {}
        self.key_marks: dict[Path, Mark] = {}

    def build(self, parser: Any) -> Any:
        # A frame: [container, path, anchor, pending_key, keys_seen: dict key → mark,
        #           merge: (parent frame, start event) when the container is a '<<' value]
        stack: list[list[Any]] = []
        get_event = parser.get_event
        with_marks = self.with_marks
        max_depth = self.limits.max_depth
        marks = self.marks
        nodes = self.nodes
        while True:
            ev = get_event()
            etype = type(ev)
            if etype is MappingEndEvent or etype is SequenceEndEvent:
                frame = stack.pop()
                if frame[2]:
                    self.anchors[frame[2]] = frame[0]
                if not stack:
                    return frame[0]
                if frame[5] is not None:  # only now is the merged value complete
                    target, start = frame[5]
                    self._merge(target[0], frame[0], target[4], start)
                continue
            nodes[0] -= 1
            if nodes[0] < 0:
                raise YamlProblem(f"more than {self.limits.node_limit} YAML nodes (keys and "
                                  "values) in one file; split it into smaller files",
                                  _mark(ev.start_mark))
            parent = stack[-1] if stack else None
            if parent is not None and parent[3] is None and type(parent[0]) is dict:
                self._take_key(parent, ev)
                continue
            path: Path = ()
            if with_marks:
                if parent is not None:
                    container = parent[0]
                    key = parent[3] if type(container) is dict else len(container)
                    path = (*parent[1], key)
                marks[path] = _mark(ev.start_mark)
            if etype is ScalarEvent:
                try:
                    value = _scalar(ev) if (ev.tag is not None or not ev.implicit[0]) else (
                        resolve_plain(ev.value))
                except ValueError as exc:  # a number too large to convert
                    raise YamlProblem(str(exc), _mark(ev.start_mark)) from None
                if ev.anchor:
                    self.anchors[ev.anchor] = value
            elif etype is MappingStartEvent or etype is SequenceStartEvent:
                if ev.tag is not None and ev.tag not in _ALLOWED_TAGS:
                    raise YamlProblem(f"tag {short_tag(ev.tag)} is not allowed: specs hold "
                                      "plain data only", _mark(ev.start_mark))
                if ev.tag is not None and ev.tag not in _COLLECTION_TAGS[etype]:
                    what = "mapping" if etype is MappingStartEvent else "sequence"
                    raise YamlProblem(f"tag {short_tag(ev.tag)} cannot tag a {what}",
                                      _mark(ev.start_mark))
                if len(stack) >= max_depth:
                    raise YamlProblem(f"nesting deeper than {max_depth} levels",
                                      _mark(ev.start_mark))
                new: Any = {} if etype is MappingStartEvent else []
                merge = None
                if parent is not None and type(parent[0]) is dict and parent[3] == "<<":
                    merge, parent[3] = (parent, ev), None
                elif parent is not None:
                    self._store(parent, new, ev)
                stack.append([new, path, ev.anchor, None, {}, merge])
                continue
            elif etype is AliasEvent:
                if ev.anchor not in self.anchors:
                    raise YamlProblem(f"unknown alias *{ev.anchor}", _mark(ev.start_mark))
                value = self.anchors[ev.anchor]
                self.budget[0] -= _size(value)
                if self.budget[0] < 0:
                    raise YamlProblem("too many alias expansions (a YAML alias bomb?): over "
                                      f"{self.limits.max_alias_nodes} nodes",
                                      _mark(ev.start_mark))
            else:
                raise YamlProblem(f"unexpected YAML event {etype.__name__}", _mark(ev.start_mark))
            if parent is None:
                return value
            self._store(parent, value, ev)

    def _take_key(self, parent: list[Any], ev: Any) -> None:
        if type(ev) is not ScalarEvent:
            raise YamlProblem("mapping keys must be plain strings", _mark(ev.start_mark))
        if ev.tag is not None and ev.tag not in _ALLOWED_TAGS:
            raise YamlProblem(f"tag {short_tag(ev.tag)} is not allowed: specs hold plain data only",
                              _mark(ev.start_mark))
        key = ev.value
        seen: dict[str, Any] = parent[4]
        if key in seen:
            line, col = _mark(seen[key])
            raise YamlProblem(f"duplicate key {key!r} (first defined at line {line}, column {col})",
                              _mark(ev.start_mark))
        seen[key] = ev.start_mark
        parent[3] = key
        if self.with_marks:
            self.key_marks[(*parent[1], key)] = _mark(ev.start_mark)

    def _store(self, parent: list[Any], value: Any, ev: Any) -> None:
        container = parent[0]
        if type(container) is dict:
            key = parent[3]
            parent[3] = None
            if key == "<<":
                self._merge(container, value, parent[4], ev)
            else:
                container[key] = value
        else:
            container.append(value)

    @staticmethod
    def _merge(target: dict[str, Any], value: Any, seen: dict[str, Any], ev: Any) -> None:
        sources = value if isinstance(value, list) else [value]
        for src in sources:
            if not isinstance(src, dict):
                raise YamlProblem("'<<' merges mappings only", _mark(ev.start_mark))
            for k, v in src.items():
                if k not in seen:  # keys written in the mapping itself win
                    target.setdefault(k, v)
        seen.pop("<<", None)


def _char_at(text: str, mark: Mark) -> str:
    lines = text.split("\n", mark[0])
    if len(lines) < mark[0]:
        return ""
    line = lines[mark[0] - 1]
    return line[mark[1] - 1] if 0 < mark[1] <= len(line) else ""


def _offset_mark(text: str, offset: int) -> Mark:
    head = text.encode("utf-8")[:offset].decode("utf-8", errors="replace")
    return head.count("\n") + 1, len(head) - (head.rfind("\n") + 1) + 1


def short_tag(tag: str) -> str:
    return "!!" + tag[len(_CORE):] if tag.startswith(_CORE) else tag


def read_documents(text: str, limits: Limits = Limits(), *, marks: bool | Literal["lazy"] = True
                   ) -> list[Document]:
    """All documents of ``text``; raises YamlProblem with a mark on the first problem. ``marks``:
    False for none, "lazy" for marks made when first asked for (by reading ``text`` again)."""
    source = _Source(text, limits) if marks == "lazy" else None
    parser = CParser(text)
    docs: list[Document] = []
    budget = [limits.max_alias_nodes]
    nodes = [limits.node_limit]
    try:
        while True:
            ev = parser.get_event()
            if isinstance(ev, StreamStartEvent):
                continue
            if isinstance(ev, StreamEndEvent):
                break
            if not isinstance(ev, DocumentStartEvent):
                raise YamlProblem("unexpected YAML structure", _mark(ev.start_mark))
            nodes[0] -= 1  # a document costs more than a node; it counts as one too
            builder = _Builder(limits, budget, nodes, marks is True)
            data = builder.build(parser)
            end = parser.get_event()
            if not isinstance(end, DocumentEndEvent):
                raise YamlProblem("unexpected content after the document", _mark(end.start_mark))
            docs.append(Document(data, _mark(ev.start_mark), builder.marks, builder.key_marks,
                                 (source, len(docs)) if source is not None else None))
    except MarkedYAMLError as exc:
        m = exc.problem_mark or exc.context_mark
        where = _mark(m) if m is not None else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        if _char_at(text, where) == "\t":
            problem += " (a tab: YAML indents with spaces only)"
        elif problem == "found unexpected ':'":  # libyaml ends flow plain scalars at any ':'
            problem += " (inside [ ] or { }, quote values that contain ':', e.g. MACs)"
        elif exc.problem and exc.context and exc.context_mark is not None:
            # Where the unfinished construct began: often far above the point of failure.
            line, col = _mark(exc.context_mark)
            what = re.sub(r"^while (parsing|scanning) an? ", "in the ", exc.context)
            problem += f" ({what} starting at line {line}, column {col})"
        raise YamlProblem(f"invalid YAML: {problem}", where) from None
    except ReaderError as exc:  # e.g. a control character; position is a UTF-8 byte offset
        raise YamlProblem(f"invalid YAML: {exc.reason} (U+{exc.character:04X})",
                          _offset_mark(text, exc.position)) from None
    except YAMLError as exc:
        raise YamlProblem(f"invalid YAML: {exc}".splitlines()[0], (1, 1)) from None
    finally:
        parser.dispose()
    return docs
