"""Tenancy: a policy file fences what one instance's specs may target (`--policy FILE`).

An operator gives each team's instance a policy: which hosts its specs may place objects on
(by name or by the Host's labels), which directories its disks, pools and shares may live in,
which pools and networks it may declare or use, which host bridges and devices its NICs may
reach, and whether host devices and xmlPatches are allowed at all. A list left out allows
everything of its kind. Anything outside is a validation error at the spec's file:line, found
with the other spec errors, before any host is contacted.
"""


import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from controller.errors import Diagnostic
from controller.spec.base import SpecModel
from controller.spec.models import Guest, Host, Network, Selector, StoragePool
from controller.spec.specset import Located, SpecSet
from controller.spec.yaml_reader import Limits, YamlProblem, read_documents


class PolicySpec(SpecModel):
    hosts: list[str] | None = Field(default=None, description="Host names the specs may target.")
    host_selector: Selector | None = Field(default=None, description="Or: hosts whose labels include these.")
    storage_dirs: list[str] | None = Field(default=None, description="Directories disks, pools, boot files "
                                           "and shares must be inside.")
    pools: list[str] | None = Field(default=None, description="Storage pools the specs may declare or use.")
    networks: list[str] | None = Field(default=None, description="Networks the specs may declare or use.")
    bridges: list[str] | None = Field(default=None, description="Host bridges NICs and bridge networks may use.")
    direct_devices: list[str] | None = Field(default=None, description="Host devices macvtap NICs may use.")
    hostdevs: bool = Field(default=True, description="Whether guests may pass host devices through.")
    xml_patches: bool = Field(default=True, description="Whether specs may carry xmlPatches.")


class TenancyPolicy(SpecModel):
    api_version: Literal["virtsync/v1"] = Field(alias="apiVersion")
    kind: Literal["Policy"]
    spec: PolicySpec


def load_policy(path: str) -> tuple[TenancyPolicy | None, list[Diagnostic]]:
    """The policy file, or the problems with it (file:line:column like a spec's)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Diagnostic(path, 1, 1, f"cannot read the policy: {getattr(exc, 'strerror', None) or exc}")]
    try:
        docs = [d for d in read_documents(text, Limits()) if d.data is not None]
    except YamlProblem as exc:
        return None, [Diagnostic(path, exc.mark[0], exc.mark[1], exc.message)]
    if len(docs) != 1:
        return None, [Diagnostic(path, 1, 1, f"a policy file holds one document (kind: Policy), not {len(docs)}")]
    try:
        return TenancyPolicy.model_validate(docs[0].data), []
    except ValidationError as exc:
        out = []
        for err in exc.errors():
            line, col = docs[0].mark_of(tuple(err["loc"]))
            out.append(Diagnostic(path, line, col, f"{'.'.join(map(str, err['loc']))}: {err['msg']}"))
        return None, out


def _inside(path: str, dirs: list[str]) -> bool:
    p = posixpath.normpath(path)
    return any(p == posixpath.normpath(d) or p.startswith(posixpath.normpath(d).rstrip("/") + "/") for d in dirs)


class _Checker:
    def __init__(self, policy: PolicySpec, policy_file: str, specs: SpecSet):
        self.p, self.file = policy, policy_file
        self.hosts = {h.metadata.name: h for h in specs.hosts}
        self.out: list[Diagnostic] = []

    def deny(self, item: Located, path: tuple[str | int, ...], message: str) -> None:
        line, col = item.where(*path)
        self.out.append(Diagnostic(item.file, line, col, f"{message} (refused by the policy {self.file})"))

    def host_allowed(self, name: str) -> bool:
        if self.p.hosts is not None and name in self.p.hosts:
            return True
        host = self.hosts.get(name)
        if self.p.host_selector is not None and host is not None:
            return self.p.host_selector.match_labels.items() <= host.metadata.labels.items()
        return self.p.hosts is None and self.p.host_selector is None

    def allowed(self, item: Located, path: tuple[str | int, ...], what: str, value: str | None,
                allow: list[str] | None) -> None:
        if value is not None and allow is not None and value not in allow:
            self.deny(item, path, f"{what} {value!r} is not one this instance may use ({', '.join(allow) or 'none'})")

    def directory(self, item: Located, path: tuple[str | int, ...], value: str | None) -> None:
        dirs = self.p.storage_dirs
        if value and value.startswith("/") and dirs is not None and not _inside(value, dirs):
            self.deny(item, path, f"{value!r} is outside the directories this instance may use "
                      f"({', '.join(dirs) or 'none'})")

    def check(self, item: Located) -> None:
        obj = item.obj
        if isinstance(obj, Host):
            if not self.host_allowed(obj.metadata.name):
                self.deny(item, ("metadata", "name"), f"host {obj.metadata.name!r} is not one this instance may target")
            return
        spec = getattr(obj, "spec", None)
        host = getattr(spec, "host", None)
        if host is not None and not self.host_allowed(host):
            self.deny(item, ("spec", "host"), f"host {host!r} is not one this instance may target")
        if getattr(spec, "xml_patches", None) and not self.p.xml_patches:
            self.deny(item, ("spec", "xmlPatches"), "xmlPatches are not allowed for this instance")
        if isinstance(obj, StoragePool):
            self.allowed(item, ("metadata", "name"), "storage pool", obj.metadata.name, self.p.pools)
            self.directory(item, ("spec", "path"), obj.spec.path)
        elif isinstance(obj, Network):
            self.allowed(item, ("metadata", "name"), "network", obj.metadata.name, self.p.networks)
            if obj.spec.mode == "bridge":
                self.allowed(item, ("spec", "bridge"), "host bridge", obj.spec.bridge, self.p.bridges)
        elif isinstance(obj, Guest):
            self.guest(item, obj)

    def guest(self, item: Located, guest: Guest) -> None:
        spec = guest.spec
        for i, disk in enumerate(spec.disks):
            self.allowed(item, ("spec", "disks", i, "pool"), "storage pool", disk.pool, self.p.pools)
            self.directory(item, ("spec", "disks", i, "path"), disk.path)
            self.directory(item, ("spec", "disks", i, "from"), disk.from_)
        for i, nic in enumerate(spec.interfaces):
            self.allowed(item, ("spec", "interfaces", i, "network"), "network", nic.network, self.p.networks)
            self.allowed(item, ("spec", "interfaces", i, "bridge"), "host bridge", nic.bridge, self.p.bridges)
            if nic.direct is not None:
                self.allowed(item, ("spec", "interfaces", i, "direct", "dev"), "host device", nic.direct.dev,
                             self.p.direct_devices)
        for i, share in enumerate(spec.filesystems):
            self.directory(item, ("spec", "filesystems", i, "source"), share.source)
        if spec.boot is not None and spec.boot.pool is None:
            for name in ("kernel", "initrd"):
                self.directory(item, ("spec", "boot", name), getattr(spec.boot, name))
        if spec.hostdevs and not self.p.hostdevs:
            self.deny(item, ("spec", "hostdevs"), "host device passthrough is not allowed for this instance")


def check_policy(specs: SpecSet, policy: TenancyPolicy, policy_file: str) -> list[Diagnostic]:
    checker = _Checker(policy.spec, policy_file, specs)
    for item in specs.items:
        checker.check(item)
    return checker.out


def iter_policy_fields() -> Iterator[str]:
    """The policy's YAML field names (for docs)."""
    for name, f in PolicySpec.model_fields.items():
        yield f.alias or name
