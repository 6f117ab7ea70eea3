"""What virtsync observed on a host, normalised to the fields it reasons about.

Frozen dataclasses (not pydantic): a host with thousands of guests is observed
every few seconds by the service, and these are built from trusted XML.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from controller.model.network_state import NetworkExtras
from controller.model.records import record

PowerState = Literal["running", "stopped", "paused", "other"]
# Why a guest is not running as its spec says, from libvirt's state reason: it crashed; QEMU
# paused it without telling libvirt why (an internal error, which only a reset clears, or a QMP
# stop: libvirt cannot tell them apart); or it is paused on a disk I/O error.
GuestFault = Literal["crashed", "unknown-pause", "io-error"]


@dataclass(frozen=True, order=True)
class ResourceKey:
    """An object on a host: its host, kind and name (printed host/kind/name)."""

    host: str
    kind: str  # Guest | Network | StoragePool | Volume
    name: str

    def __str__(self) -> str:
        return f"{self.host}/{self.kind}/{self.name}"


@record
class Owner:
    """virtsync's ownership record of one object (see hypervisor/ownership.py)."""

    instance: str
    kind: str
    name: str
    digest: str = ""
    commit: str = ""
    applied: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    volumes: tuple[str, ...] = ()  # "pool/volume" of the disks a guest's spec made


@record
class DiskState:
    """One disk of a guest's definition, as read from its XML."""

    name: str  # the spec's disk name (from the ua- alias), else the target dev
    target: str
    bus: str
    device: str = "disk"
    format: str | None = None
    pool: str | None = None
    volume: str | None = None
    path: str | None = None
    capacity: int | None = None  # bytes, from the volume when known
    cache: str | None = None  # <driver cache/io/discard>
    io: str | None = None
    discard: str | None = None
    serial: str | None = None
    readonly: bool = False
    shareable: bool = False
    iotune: tuple[tuple[str, int], ...] = ()  # the non-zero <iotune> limits virtsync models, in order
    type: str = "file"  # <disk type>: file | volume | block | network | … (the source's kind)
    source: str | None = None  # what a block or network disk reads: its device, or protocol:name
    iothread: int | None = None  # <driver iothread>


@record
class NicState:
    """One NIC of a guest's definition, as read from its XML."""

    mac: str
    network: str | None = None
    bridge: str | None = None  # <source bridge>: a bridge NIC's, or (live) a network NIC's bridge
    model: str | None = None
    tap: str | None = None  # <target dev>: the host-side device (a definition keeps only names not libvirt's own)
    boot_rom: bool = True
    type: str = "network"  # <interface type>: network | bridge | direct | others virtsync leaves alone
    direct: tuple[str, str] | None = None  # (dev, mode) of a direct (macvtap) NIC
    queues: int | None = None
    # (average, peak, burst) per direction, KiB/s and KiB; None: no limit that way
    bandwidth: tuple[tuple[int, int | None, int | None] | None, tuple[int, int | None, int | None] | None] = (
        None, None)
    link_state: str | None = None
    vlan: int | None = None  # a single untrunked <vlan><tag>; None also for trunks (not modelled)
    portgroup: str | None = None
    mtu: int | None = None  # <mtu size>


@record
class GuestConfig:
    """The essence of one domain definition (persistent or live)."""

    uuid: str
    virt_type: str
    vcpus: int
    max_vcpus: int
    memory: int  # bytes: <currentMemory>
    max_memory: int  # bytes: <memory>
    cpu_mode: str | None = None
    cpu_model: str | None = None
    machine: str | None = None
    firmware: str = "bios"
    os_type: str = "hvm"
    boot_order: tuple[str, ...] = ()
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    disks: tuple[DiskState, ...] = ()
    interfaces: tuple[NicState, ...] = ()
    graphics: str | None = None  # "vnc@127.0.0.1", "spice@…", or None
    graphics_password: str | None = None  # a digest of the console password (never the password)
    on_crash: str | None = None  # <on_crash>: destroy, restart, preserve …
    nvram: str | None = None
    agent: bool = False  # has the qemu-guest-agent channel
    agent_connected: bool = False  # live only: the agent answers on it
    # Devices (fields/guest_devices.py): each in its YAML shape, None where absent. Mappings are
    # not hashable: left out of the hash (equality still compares them).
    tpm: dict[str, Any] | None = field(default=None, hash=False)
    filesystems: tuple[dict[str, Any], ...] = field(default=(), hash=False)
    hostdevs: tuple[str, ...] = ()  # "pci 0000:03:00.0", "usb 0x046d:0xc52b", "mdev UUID"
    video: dict[str, Any] | None = field(default=None, hash=False)
    serial: dict[str, Any] | None = field(default=None, hash=False)
    console: dict[str, Any] | None = field(default=None, hash=False)
    watchdog: dict[str, Any] | None = field(default=None, hash=False)
    rng: dict[str, Any] | None = field(default=None, hash=False)
    panic: dict[str, Any] | None = field(default=None, hash=False)
    inputs: tuple[dict[str, Any], ...] = field(default=(), hash=False)
    secure_boot: bool = False
    sysinfo: dict[str, Any] | None = field(default=None, hash=False)
    features: dict[str, Any] | None = field(default=None, hash=False)
    clock: dict[str, Any] | None = field(default=None, hash=False)
    smbios: str | None = None  # <os><smbios mode>
    bios: dict[str, Any] | None = field(default=None, hash=False)  # <os><bios>: {useSerial, rebootTimeout}
    boot_menu: dict[str, Any] | None = field(default=None, hash=False)  # <os><bootmenu>: {enable, timeout}
    # Tuning (fields/guest_tuning.py), each in its YAML shape; None where the XML has none.
    topology: dict[str, Any] | None = field(default=None, hash=False)  # <cpu><topology>
    pinning: dict[str, Any] | None = field(default=None, hash=False)  # <cputune> vcpupin/emulatorpin/iothreadpin
    numa: dict[str, Any] | None = field(default=None, hash=False)  # <cpu><numa> and <numatune>
    memory_backing: dict[str, Any] | None = field(default=None, hash=False)
    iothreads: int | None = None
    cputune: dict[str, Any] | None = field(default=None, hash=False)  # <cputune> shares/period/quota


@record
class ObservedGuest:
    """A domain as observed: its power state, persistent and live definitions, owner."""

    name: str
    uuid: str
    state: PowerState
    domain_id: int  # -1 when not running
    persistent: GuestConfig | None  # None: transient domain
    live: GuestConfig | None  # None: not running
    autostart: bool
    owner: Owner | None
    xml: str = field(repr=False, compare=False, default="")  # persistent XML, for editing
    block_job: bool = False
    reason: str = ""  # libvirt's state and reason, for people: "crashed (panicked)", "paused (I/O error)"
    fault: GuestFault | None = None
    # An io-error pause's disks, from virDomainGetDiskErrors: (target, source path, no-space | error)
    disk_errors: tuple[tuple[str, str, str], ...] = ()


@record
class DhcpHostState:
    """A static DHCP lease of a network's definition."""

    mac: str
    ip: str
    name: str | None = None


@record
class NetworkConfig:
    """What virtsync compares of a network's definition."""

    mode: str  # nat | bridge | isolated | route | open
    bridge: str | None
    forward_dev: str | None = None
    address: str | None = None  # "192.168.150.1/24"
    dhcp_start: str | None = None
    dhcp_end: str | None = None
    dhcp_hosts: tuple[DhcpHostState, ...] = ()
    mtu: int | None = None
    domain: str | None = None
    extras: NetworkExtras = field(default_factory=NetworkExtras)  # IPv6, DNS, port groups, VLANs, pools


@record
class ObservedNetwork:
    """A network as observed: persistent and live definitions, state, owner."""

    name: str
    uuid: str
    active: bool
    autostart: bool
    persistent: bool
    config: NetworkConfig  # the persistent definition where there is one
    live_config: NetworkConfig | None
    owner: Owner | None
    xml: str = field(repr=False, compare=False, default="")


@record
class ObservedVolume:
    """A volume of a pool as observed."""

    pool: str
    name: str
    path: str
    capacity: int
    format: str | None = None
    allocation: int | None = None  # bytes the volume takes on the pool now


def pool_uuid(instance: str, name: str) -> str:
    """The UUID virtsync gives a pool it defines: its ownership record until the marker volume
    exists (which needs the pool built and started) and while the pool is stopped (when libvirt
    lists none of its volumes), so a pool half-made by a killed run is still known as ours."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://virtsync.dev/pool/{instance}/{name}"))


@record
class ObservedPool:
    """A storage pool as observed, with its volumes by name."""

    name: str
    uuid: str
    type: str
    path: str | None
    active: bool
    autostart: bool
    owner: Owner | None
    volumes: dict[str, ObservedVolume] = field(default_factory=dict)
    xml: str = field(repr=False, compare=False, default="")  # persistent definition, for xmlPatches
    available: int | None = None  # free bytes (refreshed when a guest is paused on a full disk)
    source: dict[str, Any] = field(default_factory=dict, hash=False)  # <source> as spec.source spells it


@record
class ObservedSecret:
    """A libvirt secret object (its value is never read back: virtsync's are private)."""

    uuid: str
    usage: str  # volume | ceph | iscsi | tls | vtpm
    usage_id: str  # the volume path, the name, the target
    owner_instance: str | None = None  # from virtsync's line in its description
    owner_name: str | None = None  # the kind: Secret it was made from
    digest: str | None = None  # the value's digest when it was set


@record
class DeviceSupport:
    """What a host's domain capabilities and node devices offer guests' devices."""

    tpm_models: tuple[str, ...] = ()  # tpm-crb, tpm-tis
    tpm_backends: tuple[str, ...] = ()  # emulator (swtpm), passthrough
    virtiofs: bool = False
    vfio: bool = False  # PCI passthrough backend
    secure_boot: bool = False  # a firmware build with Secure Boot
    node_devices: frozenset[str] = frozenset()  # "pci 0000:03:00.0", "usb 0x046d:0xc52b", "mdev UUID"


@record
class HostCapabilities:
    """What a host can do, probed once per connection."""

    driver: str  # QEMU | Xen | Test | …
    virt_type: str  # what new guests get: kvm | qemu | xen | test
    libvirt_version: int = 0
    snapshots: bool = True
    hotplug: bool = True  # attach/detach devices
    block_resize: bool = True  # grow a running guest's disk (blockResize); else the volume only
    guest_types: tuple[str, ...] = ()  # os types the host's capabilities list: hvm, xen, xenpvh
    notes: tuple[str, ...] = ()  # warnings worth showing, e.g. "no /dev/kvm: TCG"
    devices: DeviceSupport | None = None  # None: not probed (the plan then refuses only passthrough)
    # pool types getStoragePoolCapabilities says the host supports; None: the driver does not say
    pool_types: frozenset[str] | None = None
    # From getCapabilities' <host><topology> (None: not known, nothing is refused for it):
    host_cpus: frozenset[int] | None = None  # the host CPUs' ids (pinning may name only these)
    numa_nodes: frozenset[int] | None = None  # the host NUMA nodes' ids
    hugepages: tuple[tuple[int, int], ...] | None = None  # (page size in bytes, pages the host has) per size


@record
class GuestDetails:
    """What a running guest's agent tells (information, never compared)."""

    agent_connected: bool = False
    addresses: tuple[str, ...] = ()  # from the agent; DHCP leases fill in where it has none
    uptime: float | None = None  # seconds, from the guest's /proc/uptime


@record
class HostState:
    """Everything observed of one host: what plans and drift reports are made against."""

    host: str
    uri: str
    caps: HostCapabilities
    guests: dict[str, ObservedGuest] = field(default_factory=dict)
    networks: dict[str, ObservedNetwork] = field(default_factory=dict)
    pools: dict[str, ObservedPool] = field(default_factory=dict)
    leases: dict[str, tuple[str, ...]] = field(default_factory=dict)  # mac → IPs
    fingerprint: str = ""  # digest of everything observed, for saved plans
    details: dict[str, GuestDetails] = field(default_factory=dict, compare=False)
    secrets: dict[str, ObservedSecret] | None = None  # "usage:id" → secret; None: the host has no secret driver
