"""Spec models of guest tuning: CPU topology and pinning, NUMA cells, memory backing, I/O threads,
CPU scheduler shares and bandwidth.

Each block is the value of one field of the registry (controller/fields/guest_tuning.py), which
says how it is written, compared and how a change lands. ``check_tuning`` holds the checks that
need the whole guest (vCPU count, memory), called from GuestSpec's own validation so every error
points at the field (file:line:column).
"""


import re
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

from pydantic import BeforeValidator, Field, model_validator

from controller.spec.base import SpecModel, empty_dict, empty_list
from controller.spec.types import FieldError, Size
from controller.spec.units import format_size

if TYPE_CHECKING:
    from controller.spec.models import GuestSpec

MAX_CPUS = 16384
_CPUSET = re.compile(r"^\^?\d+(-\d+)?(,\^?\d+(-\d+)?)*$")




def _key(value: object) -> object:
    # keys of JSON documents (saved plans, ownership records) are text: "0" is vCPU 0
    return int(value) if isinstance(value, str) and value.isdigit() else value


def _cpuset(value: object) -> object:
    # YAML writes a one-CPU set as a number (2); libvirt's syntax is text ("2", "0-3,^1")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return value  # strict validation says it is not text
    if not _CPUSET.match(value):
        raise ValueError(f"{value!r} is not a CPU set: use libvirt's syntax, e.g. 2, 0-3, 0-3,^1, 4-7,12")
    parse_cpuset(value)
    return value


CpuSet = Annotated[str, BeforeValidator(_cpuset),
                   Field(json_schema_extra={"pattern": _CPUSET.pattern})]
Id = Annotated[int, BeforeValidator(_key), Field(ge=0, le=4095)]


def parse_cpuset(text: str) -> frozenset[int]:
    """The CPUs (or host NUMA nodes) a libvirt set names: "0-3,^1" → {0, 2, 3}."""
    take: set[int] = set()
    drop: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        into = drop if part.startswith("^") else take
        lo, _, hi = part.lstrip("^").partition("-")
        first, last = int(lo), int(hi or lo)
        if last >= MAX_CPUS:  # libvirt's CPU masks end there (VIR_DOMAIN_CPUMASK_LEN); a huge range is no set
            raise ValueError(f"{part!r}: CPU numbers go up to {MAX_CPUS - 1}")
        if last < first:
            raise ValueError(f"{part!r}: a range runs upwards (write {last}-{first})")
        into.update(range(first, last + 1))
    out = frozenset(take - drop)
    if not out:
        raise ValueError(f"{text!r} names no CPU")
    return out


def format_cpuset(cpus: frozenset[int] | set[int]) -> str:
    """The shortest spelling of a set: {0, 1, 2, 5} → "0-2,5" (libvirt writes sets the same way)."""
    parts: list[str] = []
    run: list[int] = []
    for c in sorted(cpus):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [c]
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(parts)


class CpuTopology(SpecModel):
    """The vCPUs' layout as the guest sees it (<cpu><topology>): sockets × dies × cores × threads
    must be the guest's maxVcpus (its vcpus when there is no maxVcpus)."""

    sockets: int = Field(default=1, ge=1, le=4096, description="Default: 1.")
    dies: int = Field(default=1, ge=1, le=4096, description="Dies per socket. Default: 1.")
    cores: int = Field(default=1, ge=1, le=4096, description="Cores per die. Default: 1.")
    threads: int = Field(default=1, ge=1, le=4096, description="Threads per core. Default: 1.")

    @property
    def vcpus(self) -> int:
        return self.sockets * self.dies * self.cores * self.threads


class CpuPinning(SpecModel):
    """Which host CPUs the guest's threads may run on (<cputune>): changed live on a running guest
    (pinVcpuFlags, pinEmulator, pinIOThread) and in its definition. A vCPU or I/O thread left out is
    not pinned (it may run on every host CPU)."""

    vcpus: dict[Id, CpuSet] = Field(default_factory=empty_dict, description="vCPU number → host CPU set, "
                                    "e.g. {0: \"2\", 1: \"3\"}.")
    emulator: CpuSet | None = Field(default=None, description="Host CPUs of QEMU's own threads (not the "
                                    "vCPUs), e.g. \"0-1\". Default: not pinned.")
    iothreads: dict[Id, CpuSet] = Field(default_factory=empty_dict, description="I/O thread id (1…iothreads) → "
                                        "host CPU set.")


class NumaCell(SpecModel):
    id: Id = Field(description="Guest NUMA node number (0, 1, …).")
    cpus: CpuSet = Field(description="The vCPUs in this node, e.g. 0-1.")
    memory: Size = Field(description="Memory of this node; the nodes' memory adds up to the guest's "
                         "maxMemory (its memory when there is no maxMemory).")


class NumaMemnode(SpecModel):
    """Where one guest node's memory comes from on the host (<numatune><memnode>)."""

    cell: Id = Field(description="A guest node (cells[].id).")
    mode: Literal["strict", "preferred", "interleave"] = Field(default="strict", description="Default: strict.")
    nodes: CpuSet = Field(description="Host NUMA nodes, e.g. 0 or 0-1.")


class Numa(SpecModel):
    """Guest NUMA topology (<cpu><numa>) and where its memory is allocated on the host (<numatune>)."""

    cells: list[NumaCell] = Field(default_factory=empty_list, description="Guest NUMA nodes.")
    host_nodes: CpuSet | None = Field(default=None, description="Host NUMA nodes the guest's memory comes "
                                      "from (<numatune><memory nodeset>). Default: any.")
    mode: Literal["strict", "preferred", "interleave"] = Field(
        default="strict", description="How hostNodes binds: strict (only there), preferred (there first), "
        "interleave (round-robin over them). Default: strict.")
    memnodes: list[NumaMemnode] = Field(default_factory=empty_list, description="Per guest node host bindings.")

    @model_validator(mode="after")
    def _cells(self) -> Self:
        ids = [c.id for c in self.cells]
        for i, cid in enumerate(ids):
            if cid in ids[:i]:
                raise FieldError(("cells", i, "id"), f"NUMA cell {cid} is given twice")
        if sorted(ids) != list(range(len(ids))):
            raise FieldError("cells", f"NUMA cell ids must be 0…{len(ids) - 1} (libvirt numbers them so), "
                             f"not {', '.join(map(str, ids))}")
        seen: set[int] = set()
        for i, c in enumerate(self.cells):
            cpus = parse_cpuset(c.cpus)
            if cpus & seen:
                raise FieldError(("cells", i, "cpus"), f"vCPUs {format_cpuset(cpus & seen)} are in two NUMA cells")
            seen |= cpus
        for i, m in enumerate(self.memnodes):
            if m.cell not in ids:
                raise FieldError(("memnodes", i, "cell"), f"memnode of cell {m.cell}: there is no such cell "
                                 f"(cells are {', '.join(map(str, ids)) or 'none'})")
            if m.cell in [x.cell for x in self.memnodes[:i]]:
                raise FieldError(("memnodes", i, "cell"), f"cell {m.cell} has two memnodes")
        return self


class Hugepages(SpecModel):
    size: Size = Field(default=2 * 1024**2, description="Page size: 2MiB or 1GiB on x86. Default: 2MiB.")


class MemoryBacking(SpecModel):
    """How the guest's memory is backed on the host (<memoryBacking>)."""

    hugepages: Hugepages | None = Field(default=None, description="Back the memory with huge pages of this "
                                        "size (the host must have them free: the plan checks it has some).")
    locked: bool = Field(default=False, description="Lock the memory in host RAM (never swapped). Default: false.")
    source: Literal["anonymous", "file", "memfd"] | None = Field(
        default=None, description="Where QEMU allocates it; memfd allows sharing without hugetlbfs. "
        "Default: the hypervisor's (anonymous).")
    access: Literal["shared", "private"] | None = Field(
        default=None, description="shared: other processes may map it (vhost-user, virtiofs). Default: private.")


class CpuTune(SpecModel):
    """CPU scheduler weight and bandwidth of the guest's vCPUs (<cputune>): changed live
    (setSchedulerParametersFlags) on a running guest."""

    shares: int | None = Field(default=None, ge=2, le=262144,
                               description="Relative weight against other guests (cgroup cpu.shares). "
                               "Default: the host's (1024).")
    period: int | None = Field(default=None, ge=1000, le=1000000,
                               description="Bandwidth period of each vCPU, µs. Default: the host's (100000).")
    quota: int | None = Field(default=None, ge=-1, le=17592186044415,
                              description="µs of run time each vCPU may use per period (-1: no limit; "
                              "at least 1000). Default: no limit.")

    @model_validator(mode="after")
    def _quota(self) -> Self:
        if self.quota is not None and 0 <= self.quota < 1000:
            raise FieldError("quota", f"quota {self.quota} µs: at least 1000, or -1 for no limit")
        return self


def _max_vcpus(spec: "GuestSpec") -> int:
    return spec.max_vcpus or spec.vcpus


def check_tuning(spec: "GuestSpec") -> None:
    """What needs the whole guest: the topology, pins, cells and I/O threads against its vCPUs,
    memory and disks."""
    cpus = _max_vcpus(spec)
    cpu = spec.cpu
    if cpu is not None and cpu.topology is not None and cpu.topology.vcpus != cpus:
        t = cpu.topology
        raise FieldError(("cpu", "topology"), f"sockets × dies × cores × threads = {t.sockets} × {t.dies} × "
                         f"{t.cores} × {t.threads} = {t.vcpus}, but the guest has {cpus} vCPUs "
                         "(maxVcpus, else vcpus): they must be equal")
    if cpu is not None and cpu.pinning is not None:
        for vcpu in cpu.pinning.vcpus:
            if vcpu >= cpus:
                raise FieldError(("cpu", "pinning", "vcpus", vcpu), f"vCPU {vcpu} does not exist: the guest has "
                                 f"vCPUs 0…{cpus - 1}")
        for thread in cpu.pinning.iothreads:
            if not 1 <= thread <= (spec.iothreads or 0):
                raise FieldError(("cpu", "pinning", "iothreads", thread),
                                 f"I/O thread {thread} does not exist: the guest has "
                                 f"{'I/O threads 1…' + str(spec.iothreads) if spec.iothreads else 'no iothreads'}")
    if spec.numa is not None and spec.numa.cells:
        in_cells = set().union(*(parse_cpuset(c.cpus) for c in spec.numa.cells))
        beyond = {c for c in in_cells if c >= cpus}
        if beyond:
            raise FieldError(("numa", "cells"), f"vCPUs {format_cpuset(beyond)} are in a NUMA cell but the guest "
                             f"has vCPUs 0…{cpus - 1}")
        if len(in_cells) != cpus:
            missing = set(range(cpus)) - in_cells
            raise FieldError(("numa", "cells"), f"vCPUs {format_cpuset(missing)} are in no NUMA cell: every vCPU "
                             "belongs to one")
        total = sum(c.memory for c in spec.numa.cells)
        ceiling = spec.max_memory or spec.memory
        if total != ceiling:
            raise FieldError(("numa", "cells"), f"the NUMA cells hold {format_size(total)}, the guest "
                             f"{format_size(ceiling)} (maxMemory, else memory): they must be equal")
    elif spec.numa is not None and spec.numa.memnodes:
        raise FieldError(("numa", "memnodes"), "memnodes bind guest NUMA cells: give cells too")
    for i, disk in enumerate(spec.disks):
        if disk.iothread is None:
            continue
        if not 1 <= disk.iothread <= (spec.iothreads or 0):
            raise FieldError(("disks", i, "iothread"), f"disk {disk.name!r}: I/O thread {disk.iothread} does not "
                             f"exist (iothreads: {spec.iothreads or 0})")
        if disk.bus not in ("virtio", "scsi"):
            raise FieldError(("disks", i, "iothread"), f"disk {disk.name!r}: only virtio (and virtio-scsi) disks "
                             f"run in an I/O thread, not bus {disk.bus}")
    backing = spec.memory_backing
    if backing is not None and backing.hugepages is not None:
        size = backing.hugepages.size
        if size & (size - 1) or size < 64 * 1024:
            raise FieldError(("memoryBacking", "hugepages", "size"), f"{format_size(size)} is not a huge page "
                             "size (a power of two: 2MiB, 1GiB)")
        ceiling = spec.max_memory or spec.memory
        if ceiling % size:
            raise FieldError(("memoryBacking", "hugepages", "size"), f"the guest's memory {format_size(ceiling)} "
                             f"is not a whole number of {format_size(size)} pages")
    if spec.filesystems and backing is not None and backing.access == "private":
        raise FieldError(("memoryBacking", "access"), "virtiofs shares need the guest's memory shared, "
                         "not private")


def dump(model: Any) -> dict[str, Any] | None:
    """A block in its YAML shape, defaults filled in (the registry's essence values)."""
    return None if model is None else model.model_dump(mode="json", by_alias=True)
