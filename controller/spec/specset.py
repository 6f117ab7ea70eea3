"""The validated spec set: every object with where it came from, indexed by kind."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import field
from functools import cached_property
from typing import Any, TypeVar

from controller.model.records import record
from controller.spec.models import (
    UNPLACED,
    BackupPolicy,
    Guest,
    Host,
    Network,
    Secret,
    SnapshotPolicy,
    StoragePool,
)
from controller.spec.yaml_reader import Document

T = TypeVar("T")
AnySpec = Host | Network | StoragePool | Guest | SnapshotPolicy | BackupPolicy | Secret


@record
class Located:
    obj: Any
    file: str
    doc: Document = field(repr=False, compare=False)

    def where(self, *path: str | int, key: bool = False) -> tuple[int, int]:
        return self.doc.mark_of(tuple(path), key=key)


@record
class SpecSet:
    items: tuple[Located, ...]

    @classmethod
    def build(cls, located: Iterable[Located]) -> SpecSet:
        return cls(tuple(located))

    def of_kind(self, kind: type[Any]) -> Iterator[Located]:
        # Sorted out once per kind: a plan asks for the hosts, guests, networks… of the same
        # (immutable) set several times, and a service plans against it again and again.
        found: dict[type[Any], tuple[Located, ...]] = self.__dict__.setdefault("_of_kind", {})
        items = found.get(kind)
        if items is None:
            items = found[kind] = tuple(item for item in self.items if isinstance(item.obj, kind))
        return iter(items)

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

    @property
    def backup_policies(self) -> list[BackupPolicy]:
        return [i.obj for i in self.of_kind(BackupPolicy)]

    def host(self, name: str) -> Host | None:
        return self._hosts_by_name.get(name)

    @cached_property
    def _hosts_by_name(self) -> dict[str, Host]:
        found: dict[str, Host] = {}
        for h in self.hosts:
            found.setdefault(h.metadata.name, h)  # the first, as a scan would find it
        return found

    def memo(self, key: str, compute: Callable[[SpecSet], T]) -> T:
        """A value derived from this (immutable) set, computed once: a service reconciles each of
        a thousand hosts against the same complete set, and must not re-derive it every time."""
        cache: dict[str, Any] = self.__dict__.setdefault("_memo", {})
        if key not in cache:
            cache[key] = compute(self)
        return cache[key]  # type: ignore[no-any-return]

    @cached_property
    def _by_host(self) -> dict[str, list[Located]]:
        """Items per host, in order; policies and secrets (not host-bound) under every host. Built once:
        a fleet asks for every host's slice, and a scan per host would be quadratic."""
        placed: dict[str, list[Located]] = {}
        policies = [i for i in self.items if isinstance(i.obj, UNPLACED)]
        for item in self.items:
            obj = item.obj
            if isinstance(obj, UNPLACED):
                continue
            host = obj.metadata.name if isinstance(obj, Host) else obj.spec.host
            placed.setdefault(str(host), []).append(item)
        return {h: items + policies for h, items in placed.items()} | {"": policies}

    def for_host(self, name: str) -> SpecSet:
        """The slice of one host: its Host object, and what is placed on it."""
        by_host = self._by_host
        return SpecSet(tuple(by_host.get(name, by_host[""])))
