"""The validated spec set: every object with where it came from, indexed by kind."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from controller.spec.models import Guest, Host, Network, SnapshotPolicy, StoragePool
from controller.spec.yaml_reader import Document

AnySpec = Host | Network | StoragePool | Guest | SnapshotPolicy


@dataclass(frozen=True)
class Located:
    obj: Any
    file: str
    doc: Document = field(repr=False, compare=False)

    def where(self, *path: str | int, key: bool = False) -> tuple[int, int]:
        return self.doc.mark_of(tuple(path), key=key)


@dataclass(frozen=True)
class SpecSet:
    items: tuple[Located, ...]

    @classmethod
    def build(cls, located: Iterable[Located]) -> SpecSet:
        return cls(tuple(located))

    def of_kind(self, kind: type[Any]) -> Iterator[Located]:
        return (item for item in self.items if isinstance(item.obj, kind))

    @property
    def hosts(self) -> list[Host]:
        return [i.obj for i in self.of_kind(Host)]

    @property
    def networks(self) -> list[Network]:
        return [i.obj for i in self.of_kind(Network)]

    @property
    def pools(self) -> list[StoragePool]:
        return [i.obj for i in self.of_kind(StoragePool)]

    @property
    def guests(self) -> list[Guest]:
        return [i.obj for i in self.of_kind(Guest)]

    @property
    def policies(self) -> list[SnapshotPolicy]:
        return [i.obj for i in self.of_kind(SnapshotPolicy)]

    def host(self, name: str) -> Host | None:
        return next((h for h in self.hosts if h.metadata.name == name), None)

    def for_host(self, name: str) -> SpecSet:
        """The slice of one host: its Host object, and what is placed on it."""
        def keep(obj: Any) -> bool:
            if isinstance(obj, Host):
                return bool(obj.metadata.name == name)
            if isinstance(obj, SnapshotPolicy):
                return True
            return bool(obj.spec.host == name)
        return SpecSet(tuple(i for i in self.items if keep(i.obj)))
