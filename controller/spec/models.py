"""The spec format: pydantic models of the five kinds, frozen and strict.

Field names are camelCase in YAML (aliases) and snake_case in Python. Every
default is written in the field's description, so it reaches the JSON Schema
and editors.
"""


import re
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, PrivateAttr, WithJsonSchema, model_validator
from pydantic.alias_generators import to_camel

from controller.spec.base import SpecModel, empty_dict, empty_list
from controller.spec.devices import (
    Bios,
    BootMenu,
    CharDevice,
    Clock,
    Console,
    Features,
    Filesystem,
    Hostdev,
    Input,
    Panic,
    Rng,
    Sysinfo,
    Tpm,
    Video,
    Watchdog,
)
from controller.spec.guest_tuning import CpuPinning, CpuTopology, CpuTune, MemoryBacking, Numa, check_tuning
from controller.spec.network_parts import Dns, NetworkIPv6, Portgroup, Vlan, check_network_parts
from controller.spec.patches import XmlPatch
from controller.spec.pool_sources import PoolSource, PoolType, check_pool, default_build, schema_rules
from controller.spec.tuning import Bandwidth, DirectSource, IoTune
from controller.spec.types import (
    DURATION_PATTERN,
    Cron,
    Duration,
    FieldError,
    InterfaceName,
    IPv4,
    IPv4Interface,
    JsonPointer,
    LabelKey,
    Mac,
    Name,
    Size,
    Timezone,
)
from controller.spec.units import format_size
from controller.spec.volume import VolumeSpec

API_VERSION = "virtsync/v1"
_SHA256 = re.compile(r"^(sha256:)?[0-9a-fA-F]{64}$")
DEFAULT_SHUTDOWN_TIMEOUT = 120
DEFAULT_WINDOW_DURATION = 3600
DEFAULT_FREQUENT_PERIOD = 900
AUTO_TAP_NAMES = r"^(vnet|vif|macvtap|macvlan)"  # libvirt's own host-side NIC names (not kept when defined)


class Metadata(SpecModel):
    name: Name = Field(description="Name of the object; also its libvirt name.")
    labels: dict[LabelKey, str] = Field(default_factory=empty_dict, description="Selectable labels.")
    annotations: dict[str, str] = Field(
        default_factory=empty_dict,
        description='Free-form notes. "virtsync/suspend": "true" pauses reconciling this object.',
    )


# --------------------------------------------------------------------- Host


class HostStorage(SpecModel):
    allowed_dirs: list[str] = Field(
        default_factory=lambda: ["/var/lib/libvirt/images"],
        description="Directories disks and pools may live in. Default: [/var/lib/libvirt/images].",
    )


class HostTls(SpecModel):
    ca_file: str = Field(min_length=1, description="The CA certificate (PEM) that signed the host's "
                         "server certificate. Absolute, or relative to this spec file.")
    cert_file: str = Field(min_length=1, description="This client's certificate (PEM), signed by a CA "
                           "the host's libvirtd trusts. Absolute, or relative to this spec file.")
    key_file: str = Field(min_length=1, description="The client certificate's private key (PEM). "
                          "Absolute, or relative to this spec file; read only by libvirt, never shown.")


class HostSpec(SpecModel):
    uri: str = Field(
        min_length=1,
        description="libvirt URI: qemu:///system, xen:///system, qemu+ssh://user@host/system, "
        "test:///path/to/file.xml …",
    )
    hypervisor: Literal["kvm", "qemu", "xen"] | None = Field(
        default=None,
        description="Virtualization type of this host's guests: kvm (hardware), qemu (TCG "
        "emulation) or xen. Default: detected from the URI and the host's capabilities.",
    )
    storage: HostStorage = Field(default_factory=HostStorage)
    migration_address: str | None = Field(
        default=None, description="Address the migration data stream goes to (tcp://ADDRESS); hosts "
        "in labs often share a hostname. Default: libvirt's choice."
    )
    migration_uri: str | None = Field(
        default=None, description="libvirt URI other hosts' libvirtd use to reach this one for "
        "peer-to-peer migration, e.g. qemu+tcp://10.0.0.2/system. Default: uri."
    )
    connect_timeout: Duration = Field(
        default=10, description="How long to try to connect before the host counts as down. "
        "Default: 10s."
    )
    call_timeout: Duration = Field(
        default=30, description="How long one libvirt call may take before the host counts as hung: "
        "its work fails with \"no answer from HOST within Ns\" and its connection is dropped, never "
        "holding up other hosts. Long operations (migrations, volume copies, uploads, snapshots) have "
        "no such bound; libvirt's keepalive cuts off a daemon that stops answering. Default: 30s."
    )
    tls: HostTls | None = Field(
        default=None, description="Client certificate files for a qemu+tls:// or xen+tls:// URI, "
        "handed to libvirt as its pkipath (cacert.pem, clientcert.pem, clientkey.pem). Default: "
        "libvirt's own locations (/etc/pki/…, ~/.pki/libvirt)."
    )

    @model_validator(mode="after")
    def _tls_needs_tls_uri(self) -> Self:
        if self.tls is not None and not urlsplit(self.uri).scheme.endswith("+tls"):
            raise FieldError("tls", f"tls (client certificates) needs a +tls URI such as "
                             f"qemu+tls://HOST/system, not {self.uri!r}")
        return self


# ------------------------------------------------------------------ Network


class DhcpHost(SpecModel):
    mac: Mac
    ip: IPv4
    name: Name | None = None


class Dhcp(SpecModel):
    start: IPv4
    end: IPv4
    hosts: list[DhcpHost] = Field(default_factory=empty_list, description="Static leases.")


class NetworkIPv4(SpecModel):
    address: IPv4Interface = Field(description="The host's address on the network, with prefix.")
    dhcp: Dhcp | None = None


class NetworkSpec(SpecModel):
    host: Name
    mode: Literal["nat", "bridge", "isolated", "route", "open", "macvtap", "hostdev"] = Field(
        default="nat",
        description="nat (libvirt NAT), bridge (an existing host bridge, Linux or Open vSwitch), "
        "isolated (no forward), route, open, macvtap (a pool of host devices guests' NICs sit on "
        "through macvtap), hostdev (a pool of SR-IOV VFs given to guests). Default: nat.",
    )
    macvtap_mode: Literal["bridge", "private", "vepa", "passthrough"] = Field(
        default="bridge", description="mode macvtap: how the macvtap NICs see each other (libvirt's "
        "forward mode). Default: bridge.")
    devices: list[InterfaceName] = Field(
        default_factory=empty_list, description="mode macvtap: the host devices of the pool (changed live).")
    pf: InterfaceName | None = Field(
        default=None, description="mode hostdev: the SR-IOV physical function whose VFs the pool hands out.")
    virtualport: Literal["openvswitch"] | None = Field(
        default=None, description="mode bridge: the bridge is an Open vSwitch bridge (libvirt plugs "
        "ports with ovs-vsctl).")
    vlan: Vlan | None = Field(default=None, description="VLAN tags of every port (openvswitch or hostdev).")
    ipv6: NetworkIPv6 | None = None
    dns: Dns | None = None
    portgroups: list[Portgroup] = Field(default_factory=empty_list, description="Named port settings NICs "
                                        "choose with portgroup: (changed live).")
    bridge: InterfaceName | None = Field(
        default=None,
        description="Bridge device. For mode bridge: the existing host bridge (required). "
        "Otherwise the bridge libvirt creates; default: chosen by libvirt (virbrN).",
    )
    forward_dev: InterfaceName | None = Field(
        default=None, description="Host device to forward through (nat/route). Default: any."
    )
    ipv4: NetworkIPv4 | None = None
    mtu: int | None = Field(default=None, ge=68, le=65535)
    domain: str | None = Field(default=None, description="DNS domain of the network.")
    bandwidth: Bandwidth | None = Field(default=None, description="Traffic shaping of the whole "
                                        "network (KiB/s, KiB).")
    autostart: bool = Field(default=True, description="Start with the host. Default: true.")
    adopt: bool = Field(
        default=False,
        description="Take ownership of an existing unowned network of this name. Default: false.",
    )
    xml_patches: list[XmlPatch] = Field(default_factory=empty_list, description="Edits of the written definition "
                                        "for what the schema does not model.")

    @model_validator(mode="after")
    def _mode_fits(self) -> Self:
        if self.mode == "bridge":
            if self.bridge is None:
                raise FieldError("mode", "mode bridge needs 'bridge': the name of an existing "
                                 "host bridge")
            if self.ipv4 is not None:
                raise FieldError("ipv4", "mode bridge takes no 'ipv4': the host bridge's own "
                                 "network provides addresses")
        if self.mode == "route" and self.ipv4 is None:
            raise FieldError("mode", "mode route needs 'ipv4' (the routed subnet)")
        if self.forward_dev and self.mode not in ("nat", "route"):
            raise FieldError("forwardDev", f"'forwardDev' only applies to modes nat and route, "
                             f"not {self.mode}")
        check_network_parts(self)
        return self


# -------------------------------------------------------------- StoragePool


class StoragePoolSpec(SpecModel):
    model_config = ConfigDict(**SpecModel.model_config, json_schema_extra=schema_rules)

    host: Name
    type: PoolType = Field(default="dir", description="Pool type: dir, fs (a block device with a filesystem), "
                           "netfs (NFS), logical (LVM volume group), iscsi, iscsi-direct (libiscsi, no kernel "
                           "initiator), rbd (Ceph), disk (a partitioned disk), zfs. Default: dir.")
    path: str | None = Field(default=None, description="Where the pool is on the host: the directory (dir, fs, "
                             "netfs: required, inside the host's allowedDirs), or its device directory "
                             "(logical, iscsi, disk, zfs: optional, libvirt's default); iscsi-direct and rbd "
                             "have none.")
    source: PoolSource | None = Field(default=None, description="Where the storage is; each type takes its "
                                      "own fields (docs/fields.md, README).")
    build: bool | None = Field(default=None, description="Build the pool when it is defined (mkfs, vgcreate, "
                               "a partition table, a zpool, the directory), never over existing data: a "
                               "device that holds data already fails the definition, nothing written. "
                               "Default: true for dir (an existing directory is kept), false otherwise.")
    autostart: bool = Field(default=True, description="Start with the host. Default: true.")
    shared: bool = Field(default=False, description="The directory is shared storage (NFS, …) mounted at "
                         "the same path on every host: live migration then copies no disks. Default: false.")
    adopt: bool = False
    xml_patches: list[XmlPatch] = Field(default_factory=empty_list, description="Edits of the written definition "
                                        "for what the schema does not model.")

    @model_validator(mode="after")
    def _source_fits_type(self) -> Self:
        check_pool(self.type, self.path, self.source)
        return self

    @property
    def builds(self) -> bool:
        return default_build(self.type) if self.build is None else self.build


# -------------------------------------------------------------------- Guest


class Disk(SpecModel):
    name: Name = Field(description="Key of the disk within the guest; also names its volume.")
    size: Size | None = Field(default=None, description="Capacity; grown live, never shrunk.")
    pool: Name | None = Field(default=None, description="Pool holding the disk's volume.")
    path: str | None = Field(default=None, description="An existing file (inside allowedDirs) "
                             "instead of a pool volume.")
    volume: Name | None = Field(default=None, description="A kind: Volume of the same host instead of 'pool' "
                                "or 'path' (its format, size and encryption come from the Volume).")
    # The libvirt secret UUID of the Volume's LUKS passphrase, set when the specs load (spec/volume.py)
    _luks_secret: str | None = PrivateAttr(default=None)
    format: Literal["qcow2", "raw"] = Field(default="qcow2", description="Default: qcow2.")
    from_: str | None = Field(
        default=None,
        alias="from",
        description="Image to start from: a volume of the pool, a file inside allowedDirs, or an "
        "http(s):// URL (with sha256; downloaded once into the pool).",
    )
    sha256: str | None = Field(default=None, description="Digest of a 'from' URL image; required for URLs.")
    clone: Literal["linked", "full"] = Field(
        default="linked",
        description="linked: a qcow2 overlay on the image (fast, small); full: a copy. Default: linked.",
    )
    bus: Literal["virtio", "scsi", "sata", "ide", "xen"] = Field(
        default="virtio", description="Default: virtio (xen on Xen PV guests)."
    )
    device: Literal["disk", "cdrom"] = Field(default="disk", description="Default: disk.")
    delete_policy: Literal["keep", "delete"] = Field(
        default="keep",
        description="What happens to the volume when the disk or guest is removed. Default: keep.",
    )
    cache: Literal["none", "writeback", "writethrough", "directsync", "unsafe"] | None = Field(
        default=None, description="Host page-cache mode (<driver cache>). Default: the hypervisor's.")
    io: Literal["native", "threads", "io_uring"] | None = Field(
        default=None, description="QEMU's I/O backend (<driver io>); native needs cache none or directsync. "
        "Default: the hypervisor's.")
    discard: Literal["unmap", "ignore"] | None = Field(
        default=None, description="unmap passes the guest's TRIM/discard to the image (<driver discard>). "
        "Default: the hypervisor's (ignore).")
    serial: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.+ -]{1,36}$",
                               description="Serial number the guest sees (/dev/disk/by-id).")
    readonly: bool | None = Field(default=None, description="The guest may only read the disk. Default: "
                                  "false (a CD-ROM is always read-only).")
    shareable: bool | None = Field(default=None, description="Several guests may use the disk at once "
                                   "(cluster file systems). Default: false.")
    iotune: IoTune | None = Field(default=None, description="I/O limits; {} removes them.")
    iothread: int | None = Field(default=None, ge=1, description="Run the disk's I/O in this I/O thread of "
                                 "the guest (1…iothreads; virtio disks). Default: QEMU's main loop.")

    @model_validator(mode="after")
    def _has_source(self) -> Self:
        if self.volume is not None:
            given = [n for n, v in (("pool", self.pool), ("path", self.path), ("size", self.size),
                                    ("from", self.from_)) if v is not None]
            if given or "format" in self.model_fields_set:
                raise FieldError("volume", f"disk {self.name!r}: a disk on a Volume takes its file, format and "
                                 f"size from the Volume: drop {', '.join(given) or 'format'}")
            return self
        if self.path is None and self.pool is None:
            raise ValueError(f"disk {self.name!r} needs a 'pool' (a new or existing volume) "
                             "or a 'path' (an existing file)")
        if self.path is not None and self.pool is not None:
            raise FieldError("path", f"disk {self.name!r}: give 'pool' or 'path', not both")
        if self.pool is not None and self.size is None and self.from_ is None:
            raise FieldError("pool", f"disk {self.name!r} in a pool needs a 'size' or a "
                             "'from' image")
        url = self.from_ is not None and self.from_.startswith(("http://", "https://"))
        if url and self.sha256 is None:
            raise FieldError("from", f"disk {self.name!r}: an image URL needs 'sha256' (its digest)")
        if self.sha256 is not None and not _SHA256.match(self.sha256):
            raise FieldError("sha256", f"{self.sha256!r} is not a sha256 digest (64 hex digits)")
        if url and self.pool is None:
            raise FieldError("from", f"disk {self.name!r}: an image URL is downloaded into a pool: "
                             "give 'pool'")
        if self.device == "cdrom" and self.bus in ("virtio", "xen"):
            raise FieldError("bus", f"disk {self.name!r}: a CD-ROM needs bus sata, ide or scsi")
        if self.clone == "linked" and self.from_ is not None and self.format != "qcow2":
            raise FieldError("clone", f"disk {self.name!r}: a linked clone is a qcow2 overlay: "
                             "use format qcow2 or clone: full")
        if self.device == "cdrom" and self.readonly is False:
            raise FieldError("readonly", f"disk {self.name!r}: a CD-ROM is always read-only")
        if self.io == "native" and self.cache not in (None, "none", "directsync"):
            # QEMU opens the image with O_DIRECT for native AIO: a caching mode refuses to start
            raise FieldError("io", f"disk {self.name!r}: io native needs cache none or directsync, "
                             f"not {self.cache}")
        return self


class Interface(SpecModel):
    """A NIC on exactly one of: a virtsync network, an existing host bridge, or a host device
    (macvtap). Its type follows from which one is given."""

    type: Literal["network", "bridge", "direct"] | None = Field(
        default=None, description="network, bridge or direct; inferred from which of them is given.")
    network: Name | None = Field(default=None, description="Network (a kind: Network of the same host).")
    bridge: InterfaceName | None = Field(
        default=None, description="An existing bridge of the host (not managed by virtsync), e.g. br0.")
    direct: DirectSource | None = Field(default=None, description="macvtap on a host device: {dev, mode}.")
    mac: Mac | None = Field(default=None, description="Default: generated by libvirt and kept.")
    model: Literal["virtio", "e1000", "e1000e", "rtl8139", "netfront"] = Field(
        default="virtio", description="Default: virtio."
    )
    boot_rom: bool = Field(
        default=True,
        description="Load the NIC's network-boot ROM (iPXE). false keeps guests that never boot "
        "from the network from spinning in it. Default: true.",
    )
    queues: int | None = Field(default=None, ge=1, le=256,
                               description="virtio-net multiqueue: queue pairs (up to the guest's vCPUs "
                               "is useful). Default: 1.")
    bandwidth: Bandwidth | None = Field(default=None, description="Traffic shaping (KiB/s, KiB); {} "
                                        "removes it.")
    link_state: Literal["up", "down"] | None = Field(default=None, description="Link as the guest sees it "
                                                     "(cable plugged in or not). Default: up.")
    vlan: int | None = Field(default=None, ge=1, le=4094,
                             description="802.1Q tag on the guest's traffic. libvirt tags only on an Open "
                             "vSwitch bridge (bridge:) and on an SR-IOV VF (direct with mode passthrough).")
    portgroup: Name | None = Field(default=None, description="A portgroup of the network (with network: "
                                   "only).")
    mtu: int | None = Field(default=None, ge=68, le=65535, description="MTU of the NIC (<mtu size>). "
                            "Default: the network's or bridge's.")
    target_dev: InterfaceName | None = Field(
        default=None, description="Name of the host-side tap device (<target dev>), e.g. Nova's tapXXXX. "
        "Default: libvirt's (vnetN, vifN.M), which is never kept in the definition.")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        given = [n for n in ("network", "bridge", "direct") if getattr(self, n) is not None]
        if not given:
            raise FieldError("network", "a NIC needs one of 'network' (a kind: Network), 'bridge' "
                             "(a host bridge) or 'direct' (macvtap on a host device)")
        if len(given) > 1:
            raise FieldError(given[1], f"give one of network, bridge or direct, not {' and '.join(given)}")
        if self.type is not None and self.type != given[0]:
            raise FieldError("type", f"type {self.type} does not match the NIC's {given[0]}")
        if self.portgroup is not None and self.network is None:
            raise FieldError("portgroup", "portgroup is a part of a network: it needs 'network'")
        if self.queues is not None and self.queues > 1 and self.model != "virtio":
            raise FieldError("queues", f"multiqueue needs model virtio, not {self.model}")
        if self.vlan is not None:
            if self.network is not None:
                raise FieldError("vlan", "a NIC on a kind: Network takes its VLAN from the network: give an "
                                 "Open vSwitch (virtualport: openvswitch) or hostdev network a portgroup "
                                 "with vlan: {tags: [N]} and the NIC portgroup: NAME (or the network a vlan "
                                 "of its own); else use a VLAN device (eth0.42) as the network's device")
            if self.direct is not None and self.direct.mode != "passthrough":
                raise FieldError("vlan", f"a direct (macvtap) NIC in mode {self.direct.mode} cannot be tagged "
                                 "by libvirt (only an SR-IOV VF in mode passthrough is): use a VLAN "
                                 "device (eth0.42) as 'dev' instead")
        return self

    @model_validator(mode="after")
    def _own_tap_name(self) -> Self:
        # libvirt drops these names from a definition (they are its own): a spec naming one would drift
        if self.target_dev is not None and re.match(AUTO_TAP_NAMES, self.target_dev):
            raise FieldError("targetDev", f"targetDev {self.target_dev!r} is a name libvirt gives itself "
                             "(vnet*, vif*, macvtap*, macvlan*) and does not keep: leave it out or choose another")
        return self

    @property
    def kind(self) -> Literal["network", "bridge", "direct"]:
        """The NIC's type: which source it has."""
        return "network" if self.network is not None else "bridge" if self.bridge is not None else "direct"

    @property
    def source(self) -> str:
        """The network, bridge or host device it is on."""
        return self.network or self.bridge or (self.direct.dev if self.direct is not None else "")


class CloudInit(SpecModel):
    """NoCloud seed: virtsync builds a 'cidata' ISO, keeps it in the guest's pool and
    attaches it as a CD-ROM. Inline text, or *File paths relative to the spec file.
    ${env:NAME}, ${file:PATH} and ${secret:NAME} inside the text are replaced when the specs load;
    plans, reports and logs show only a digest."""

    user_data: str | None = Field(default=None, description="#cloud-config … (inline).")
    user_data_file: str | None = Field(default=None, description="File with the user-data.")
    meta_data: str | None = Field(default=None, description="Default: instance-id and hostname from the guest.")
    meta_data_file: str | None = None
    network_config: str | None = None
    network_config_file: str | None = None

    @model_validator(mode="after")
    def _one_each(self) -> Self:
        for name in ("user_data", "meta_data", "network_config"):
            if getattr(self, name) is not None and getattr(self, name + "_file") is not None:
                raise FieldError(to_camel(name) + "File", f"give {to_camel(name)} or "
                                 f"{to_camel(name)}File, not both")
        return self


class Cpu(SpecModel):
    mode: Literal["host-model", "host-passthrough", "custom", "maximum"] | None = Field(
        default=None, description="Default: the hypervisor's default CPU model."
    )
    model: str | None = Field(default=None, description="CPU model name for mode custom.")
    topology: CpuTopology | None = Field(default=None, description="sockets × dies × cores × threads "
                                         "(= maxVcpus); next boot.")
    pinning: CpuPinning | None = Field(default=None, description="Host CPUs of the vCPUs, QEMU's emulator "
                                       "threads and I/O threads; live.")


class Graphics(SpecModel):
    type: Literal["vnc", "spice", "none"] = "vnc"
    listen: IPv4 = Field(default="127.0.0.1", description="Default: 127.0.0.1.")
    password_secret_ref: Name | None = Field(
        default=None, description="A kind: Secret whose value is the console password (changed live); "
        "plans and reports show only its digest.")
    _password: str | None = PrivateAttr(default=None)  # the Secret's value, set when the specs load

    @property
    def password(self) -> str | None:
        return self._password


class Boot(SpecModel):
    order: list[Literal["hd", "cdrom", "network"]] = Field(
        default_factory=empty_list, description="Boot device order. Default: hd."
    )
    kernel: str | None = Field(default=None, description="Direct kernel boot: kernel path on the host "
                              "(or, with 'pool', on the machine running virtsync).")
    initrd: str | None = None
    cmdline: str | None = None
    pool: Name | None = Field(
        default=None,
        description="Upload kernel and initrd (files where virtsync runs) into this pool of the guest's host "
        "(storageVolUpload: works over remote URIs, e.g. for Xen PV guests) and boot from the volumes. "
        "A changed file needs a new file name to be uploaded again.")


class XenOptions(SpecModel):
    mode: Literal["pv", "hvm", "pvh"] = Field(description="Xen guest type.")


class RestartWindow(SpecModel):
    schedule: Cron = Field(description="When the window opens (5-field cron).")
    duration: Duration = Field(default=DEFAULT_WINDOW_DURATION, description="Default: 1h.")
    timezone: Timezone = Field(default="UTC", description="Timezone of the schedule. Default: UTC.")


class Selector(SpecModel):
    match_labels: dict[LabelKey, str] = Field(description="Guests whose labels include all these.")


class GuestSpec(SpecModel):
    host: Name | None = Field(default=None, description="Host the guest runs on (or hostSelector).")
    host_selector: Selector | None = Field(
        default=None, description="Instead of host: hosts by label; `virtsync place` chooses one by capacity "
        "and records it in placement.lock.yaml next to the specs.")
    state: Literal["running", "stopped", "paused"] = Field(
        default="running", description="Power state, always enforced. Default: running."
    )
    vcpus: int = Field(default=1, ge=1, le=4096, description="vCPUs. Default: 1.")
    max_vcpus: int | None = Field(default=None, ge=1, le=4096,
                                  description="Hot-plug ceiling. Default: vcpus.")
    memory: Size = Field(default=512 * 1024**2, description="Memory. Default: 512MiB.")
    max_memory: Size | None = Field(default=None, description="Balloon ceiling. Default: memory.")
    cpu: Cpu | None = None
    machine: str | None = Field(default=None, description="Machine type, e.g. q35. "
                                "Default: the hypervisor's.")
    firmware: Literal["bios", "uefi"] = Field(default="bios", description="Default: bios.")
    xen: XenOptions | None = Field(default=None, description="Only for guests of Xen hosts.")
    boot: Boot | None = None
    disks: list[Disk] = Field(default_factory=empty_list)
    interfaces: list[Interface] = Field(default_factory=empty_list)
    graphics: Graphics | None = None
    video: Video | None = Field(default=None, description="Display adapter. Default: libvirt's for the graphics.")
    serial: CharDevice | None = Field(default=None, description="A serial port (pty): virsh console reaches it.")
    console: Console | None = Field(default=None, description="The console device (pty on the first serial "
                                    "port, or virtio hvc0).")
    tpm: Tpm | None = Field(default=None, description="An emulated TPM (swtpm); its state survives every "
                            "redefinition and recreate.")
    filesystems: list[Filesystem] = Field(default_factory=empty_list, description="Host directories shared through "
                                          "virtiofs (the guest's memory is then shared memfd).")
    hostdevs: list[Hostdev] = Field(default_factory=empty_list, description="Host devices passed through (VFIO): "
                                    "the plan checks the host lists them and has VFIO.")
    watchdog: Watchdog | None = None
    rng: Rng | None = Field(default=None, description="A virtio-rng device fed from the host.")
    panic: Panic | None = Field(default=None, description="A panic notifier device (with onCrash).")
    input: list[Input] = Field(default_factory=empty_list, description="Input devices, e.g. [{type: tablet}] "
                                "for a pointer that follows the VNC cursor.")
    secure_boot: bool = Field(default=False, description="UEFI Secure Boot with Microsoft keys enrolled (OVMF's "
                              "secure-boot build, SMM on); needs firmware: uefi and machine q35. Default: false.")
    sysinfo: Sysinfo | None = Field(default=None, description="SMBIOS system and base board strings.")
    smbios: Literal["host", "emulate", "sysinfo"] | None = Field(
        default=None, description="Where the guest's SMBIOS tables come from (<os><smbios mode>): the host's, "
        "the hypervisor's, or sysinfo (implied by sysinfo:). Default: the hypervisor's.")
    bios: Bios | None = Field(default=None, description="SeaBIOS options: useSerial, rebootTimeout.")
    boot_menu: BootMenu | None = Field(default=None, description="The firmware's boot menu: {enable, timeout}.")
    features: Features | None = Field(default=None, description="Hypervisor features: hyperv enlightenments.")
    clock: Clock | None = Field(default=None, description="Clock offset and timers. Default: utc, libvirt's timers.")
    numa: Numa | None = Field(default=None, description="Guest NUMA cells and host NUMA node bindings.")
    memory_backing: MemoryBacking | None = Field(default=None, description="Huge pages, locked, memfd/shared "
                                                 "memory.")
    iothreads: int | None = Field(default=None, ge=0, le=1024, description="I/O threads for disks (a disk's "
                                  "iothread: N). Default: none.")
    cputune: CpuTune | None = Field(default=None, description="CPU scheduler shares and bandwidth "
                                    "(period, quota); live.")
    xml_patches: list[XmlPatch] = Field(default_factory=empty_list, description="Edits of the written definition for "
                                        "what the schema does not model; compared in drift like fields.")
    on_crash: Literal["destroy", "restart", "preserve", "coredump-destroy", "coredump-restart"] | None = Field(
        default=None, description="What the hypervisor does when the guest crashes. Default: libvirt's "
        "(destroy).")
    crash_policy: Literal["restart", "report"] = Field(
        default="restart", description="A guest that should run but crashed, or that QEMU paused on an "
        "internal error (libvirt's state reason says which): restart destroys and starts it (the service "
        "backs off when it crashes again), report only reports it. A guest paused on a full disk is "
        "resumed once its pool has room for the disk. Default: restart.")
    agent: bool = Field(default=False, description="Add the qemu-guest-agent channel (IP addresses, "
                        "fsfreeze for quiesced snapshots). Default: false.")
    cloud_init: CloudInit | None = Field(default=None, description="cloud-init NoCloud seed (needs a disk "
                                         "in a pool, where the seed ISO is kept).")
    autostart: bool = Field(default=False, description="Start with the host. Default: false.")
    restart_policy: Literal["never", "onChange", "window"] = Field(
        default="never",
        description="Changes that need a restart: never (report 'pending restart'), onChange "
        "(graceful shutdown within shutdownTimeout, then destroy, then start), window (only "
        "inside 'window'). Default: never.",
    )
    window: RestartWindow | None = None
    shutdown_timeout: Duration = Field(
        default=DEFAULT_SHUTDOWN_TIMEOUT,
        description="Grace time for a shutdown before the guest is destroyed. Default: 2m.",
    )
    reconcile: Literal["enforce", "report"] = Field(
        default="enforce", description="report: only show drift, never change. Default: enforce."
    )
    ignore: list[JsonPointer] = Field(
        default_factory=empty_list, description="JSON Pointers of fields left alone, e.g. /spec/memory."
    )
    adopt: bool = Field(
        default=False,
        description="Take ownership of an existing unowned guest of this name. Default: false.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.host is None and self.host_selector is None:
            raise FieldError("host", "'host' is required: the name of a kind: Host (or a hostSelector)")
        if self.host is not None and self.host_selector is not None and "host" in self.model_fields_set:
            raise FieldError("hostSelector", "give 'host' or 'hostSelector', not both")
        if self.max_memory is not None and self.max_memory < self.memory:
            raise FieldError("maxMemory", f"maxMemory {format_size(self.max_memory)} is smaller "
                             f"than memory {format_size(self.memory)}")
        if self.max_vcpus is not None and self.max_vcpus < self.vcpus:
            raise FieldError("maxVcpus", f"maxVcpus {self.max_vcpus} is smaller than vcpus "
                             f"{self.vcpus}")
        if self.restart_policy == "window" and self.window is None:
            raise FieldError("restartPolicy", "restartPolicy window needs 'window' (schedule, "
                             "duration)")
        names = [d.name for d in self.disks]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise FieldError(("disks", i, "name"), f"disk name {name!r} is used twice; disk "
                                 "names must be unique within a guest")
        if self.secure_boot and self.firmware != "uefi":
            raise FieldError("secureBoot", "secureBoot needs firmware: uefi")
        if self.secure_boot and self.machine is not None and "q35" not in self.machine:
            raise FieldError("secureBoot", f"secureBoot needs machine q35 (SMM), not {self.machine}")
        if self.xen is not None:
            for name in ("tpm", "filesystems", "secure_boot"):
                if getattr(self, name):
                    raise FieldError(to_camel(name), f"{to_camel(name)} is not available on Xen guests "
                                     "(libvirt's libxl driver has no such device)")
        targets = [f.target for f in self.filesystems]
        for i, t in enumerate(targets):
            if t in targets[:i]:
                raise FieldError(("filesystems", i, "target"), f"mount tag {t!r} is used twice")
        if self.sysinfo is not None and self.smbios not in (None, "sysinfo"):
            raise FieldError("smbios", f"smbios {self.smbios} would hide the sysinfo: strings: use smbios: "
                             "sysinfo or leave it out")
        if self.xen is not None and self.xen.mode == "pv" and self.firmware == "uefi":
            raise FieldError("firmware", "Xen PV guests have no firmware: remove 'firmware: uefi'")
        check_tuning(self)
        return self


# ----------------------------------------------------------- SnapshotPolicy


class Retain(SpecModel):
    frequent: int = Field(default=0, ge=0, description="Snapshots every frequentPeriod. Default 0.")
    hourly: int = Field(default=0, ge=0)
    daily: int = Field(default=0, ge=0)
    weekly: int = Field(default=0, ge=0)
    monthly: int = Field(default=0, ge=0)
    yearly: int = Field(default=0, ge=0)


class Schedule(SpecModel):
    cron: Cron | None = Field(default=None, description="5-field cron expression.")
    every: Duration | None = Field(default=None, description="Interval, e.g. 15m, 4h, 1d.")
    timezone: Timezone = Field(default="UTC", description="Timezone of cron. Default: UTC.")

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.cron is None) == (self.every is None):
            raise ValueError("a schedule is either a 5-field cron expression or 'every: 4h'")
        return self


_SCHEDULE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "string",
            "description": "5-field cron expression, in UTC",
            "examples": ["0 3 * * *"],
        },
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "cron": {"type": "string", "description": "5-field cron expression"},
                "every": {"type": "string", "pattern": DURATION_PATTERN,
                          "description": "Interval, e.g. 15m, 4h, 1d"},
                "timezone": {"type": "string", "description": "Timezone of cron. Default: UTC."},
            },
        },
    ],
    "description": 'When to snapshot: "0 3 * * *" (cron, UTC unless timezone), or {every: 4h}.',
}


class SnapshotPolicySpec(SpecModel):
    selector: Selector
    schedule: Annotated[Schedule, WithJsonSchema(_SCHEDULE_SCHEMA)] = Field(
        description='When to snapshot: "0 3 * * *" (cron, UTC unless timezone), or {every: 4h}.'
    )
    retain: Retain = Field(default_factory=Retain)
    frequent_period: Duration = Field(
        default=DEFAULT_FREQUENT_PERIOD,
        description="Spacing of 'frequent' snapshots. Default: 15m.",
    )
    quiesce: Literal["auto", "required", "off"] = Field(
        default="auto",
        description="auto: freeze file systems through the guest agent, else snapshot unquiesced "
        "and record it; required: fail without the agent; off. Default: auto.",
    )
    memory: bool = Field(
        default=False,
        description="Keep a running guest's memory with each snapshot (a checkpoint it resumes from): "
        "internal snapshots hold it; where libvirt refuses internal ones (UEFI guests, raw disks) an external "
        "snapshot keeps it in a file beside the guest's first disk. Such snapshots are not quiesced. Default: "
        "false (quiesced and external snapshots are then disk-only; internal ones of running guests still "
        "hold memory, as libvirt takes them).",
    )
    before_restart: bool = Field(
        default=False, description="Snapshot before any change that restarts or recreates. "
        "Default: false."
    )

    @model_validator(mode="after")
    def _memory_or_quiesce(self) -> Self:
        if self.memory and self.quiesce == "required":
            raise FieldError("memory", "memory: true keeps the guest's memory, so its snapshots cannot be "
                             "quiesced (that needs a disk-only snapshot): use quiesce: auto or off, or "
                             "memory: false")
        return self

    @model_validator(mode="before")
    @classmethod
    def _schedule_forms(cls, data: Any) -> Any:
        # Accept schedule: "cron", schedule: {every: 4h}, and every/timezone beside schedule.
        if not isinstance(data, dict):
            return data
        data = dict(data)
        sched = data.get("schedule")
        if isinstance(sched, str):
            sched = {"cron": sched}
        if "every" in data or "timezone" in data:
            sched = dict(sched) if isinstance(sched, dict) else {}
            for key in ("every", "timezone"):
                if key in data:
                    sched[key] = data.pop(key)
        if sched is not None:
            data["schedule"] = sched
        return data


# ------------------------------------------------------------- BackupPolicy


class BackupTarget(SpecModel):
    """Where a policy's backups go, on the guest's own host: exactly one of pool or path."""

    pool: Name | None = Field(default=None, description="A dir storage pool on the guest's host; backups are "
                              "volumes in it.")
    path: str | None = Field(default=None, description="An absolute directory on the guest's host (libvirt "
                             "reaches it through a transient dir pool while a pass runs).")
    copy_to: str | None = Field(default=None, description="Also copy every backup, streamed through libvirt, into "
                                "this directory where virtsync runs (absolute, or relative to the working "
                                "directory). Default: no copy.")

    @model_validator(mode="after")
    def _one_place(self) -> Self:
        if (self.pool is None) == (self.path is None):
            raise ValueError("a backup target is either {pool: NAME} (a dir pool) or {path: DIR} on the guest's host")
        if self.path is not None and (not self.path.startswith("/") or ".." in self.path.split("/")):
            raise FieldError("path", f"{self.path!r} must be an absolute path without '..'")
        return self


class BackupPolicySpec(SpecModel):
    selector: Selector
    schedule: Annotated[Schedule, WithJsonSchema(_SCHEDULE_SCHEMA)] = Field(
        description='When to back up: "0 3 * * *" (cron, UTC unless timezone), or {every: 1d}.'
    )
    target: BackupTarget
    full_every: int = Field(default=7, ge=1, le=1000, description="Every chain is a full backup and then up to "
                            "fullEvery - 1 incrementals (1: full backups only). Default: 7.")
    retain: Retain = Field(default_factory=Retain, description="Backups to keep, by the snapshot policies' bucket "
                           "rule (hourly, daily, weekly, monthly, yearly; no frequent), applied to chains: a kept "
                           "backup keeps every backup it is built on. Default: only the newest chain.")
    quiesce: Literal["auto", "required", "never"] = Field(
        default="auto",
        description="auto: freeze file systems through the guest agent while the backup starts, else back up "
        "unfrozen and record it; required: fail (leaving nothing) without the agent; never. Default: auto.",
    )
    compress: Literal["none", "zstd"] = Field(
        default="none",
        description="zstd: the copies under target.copyTo are compressed with zstd (FILE.zst; the manifest "
        "keeps the digests of the uncompressed files, which verify and restore read through); the backups on "
        "the host stay plain qcow2. Default: none.",
    )

    @model_validator(mode="after")
    def _no_frequent(self) -> Self:
        if self.compress != "none" and self.target.copy_to is None:
            raise FieldError("compress", f"compress: {self.compress} compresses the copies: set target.copyTo")
        if self.retain.frequent:
            raise FieldError(("retain", "frequent"), "backups have no 'frequent' bucket: use hourly, daily, "
                             "weekly, monthly or yearly")
        return self

    @model_validator(mode="before")
    @classmethod
    def _schedule_forms(cls, data: Any) -> Any:
        # The same forms as a SnapshotPolicy's: "cron", {every: 1d}, every/timezone beside schedule.
        if isinstance(data, dict) and isinstance(data.get("schedule"), str):
            data = {**data, "schedule": {"cron": data["schedule"]}}
        return data


# ------------------------------------------------------------------- Secret


class SecretLibvirt(SpecModel):
    """Also define the value as a libvirt secret object (private, persistent) on the hosts whose
    specs reference it; they reference it by UUID."""

    usage: Literal["volume", "ceph", "iscsi", "tls", "vtpm"] = Field(description="What libvirt uses it for.")
    id: str | None = Field(default=None, min_length=1, description="The usage's identifier: the volume's path, "
                           "the ceph/tls/vtpm name, the iSCSI target. Default: virtsync-NAME.")


class SecretSpec(SpecModel):
    """A named value that appears in no plan, report, log, ownership record or /status (only a
    digest does). Exactly one of fromFile, fromEnv, value."""

    from_file: str | None = Field(default=None, description="A file holding the value (relative to this spec "
                                  "file, or absolute); one trailing newline is dropped.")
    from_env: str | None = Field(default=None, min_length=1, description="An environment variable of the "
                                 "process running virtsync.")
    value: str | None = Field(default=None, description="The value inline: only with allowInline: true (it is "
                              "then in git in clear text).")
    allow_inline: bool = Field(default=False, description="Accept an inline value. Default: false.")
    encryption: Literal["age"] | None = Field(default=None, description="fromFile is encrypted with age "
                                              "(binary or armored -a), so it can be kept in git: decrypted in "
                                              "memory with the identity of --age-identity FILE or "
                                              "VIRTSYNC_AGE_IDENTITY_FILE. Default: none (the file is the value "
                                              "in clear text).")
    libvirt: SecretLibvirt | None = None
    optional: bool = Field(default=False, description="The value's file or variable may not exist yet (what "
                           "export writes for a host's libvirt secret): until it does the Secret has no value, "
                           "no libvirt secret is defined or changed from it (the host's is left as it is), and "
                           "a console password from it is left as set. Default: false (a missing value is an "
                           "error at its line).")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        given = [n for n, v in (("fromFile", self.from_file), ("fromEnv", self.from_env), ("value", self.value))
                 if v is not None]
        if len(given) != 1:
            raise ValueError("a Secret takes its value from exactly one of fromFile, fromEnv or value"
                             + (f" (got {', '.join(given)})" if given else ""))
        if self.encryption is not None and self.from_file is None:
            raise FieldError("encryption", f"encryption: {self.encryption} decrypts a file: use fromFile")
        if self.value is not None and not self.allow_inline:
            raise FieldError("value", "an inline secret value is in git in clear text: use fromFile or "
                             "fromEnv, or set allowInline: true")
        return self


# ------------------------------------------------------------------- kinds


class _Resource(SpecModel):
    api_version: Literal["virtsync/v1"] = Field(alias="apiVersion")
    metadata: Metadata


class Host(_Resource):
    kind: Literal["Host"]
    spec: HostSpec


class Network(_Resource):
    kind: Literal["Network"]
    spec: NetworkSpec


class StoragePool(_Resource):
    kind: Literal["StoragePool"]
    spec: StoragePoolSpec


class Guest(_Resource):
    kind: Literal["Guest"]
    spec: GuestSpec


class SnapshotPolicy(_Resource):
    kind: Literal["SnapshotPolicy"]
    spec: SnapshotPolicySpec


class BackupPolicy(_Resource):
    kind: Literal["BackupPolicy"]
    spec: BackupPolicySpec


class Volume(_Resource):
    kind: Literal["Volume"]
    spec: VolumeSpec


class Secret(_Resource):
    kind: Literal["Secret"]
    spec: SecretSpec

    # The value, read when the specs load (spec/secrets.py); never part of a dump or the schema.
    _value: str | None = PrivateAttr(default=None)

    @property
    def secret_value(self) -> str | None:
        return self._value


Resource = Annotated[
    Host | Network | StoragePool | Guest | SnapshotPolicy | BackupPolicy | Secret | Volume,
    Field(discriminator="kind"),
]
KINDS: dict[str, type[_Resource]] = {
    "Host": Host,
    "Network": Network,
    "StoragePool": StoragePool,
    "Guest": Guest,
    "SnapshotPolicy": SnapshotPolicy,
    "BackupPolicy": BackupPolicy,
    "Secret": Secret,
    "Volume": Volume,
}
# Kinds placed on no host: every host's slice of the specs carries them.
UNPLACED: tuple[type[_Resource], ...] = (SnapshotPolicy, BackupPolicy, Secret)


def built(kind: type[_Resource]) -> type[_Resource]:
    """The model of a kind, its validator built: its spec model first, so that the kind's schema
    reuses the spec's and the spec's own serializer (dumped for digests and ownership) is not built
    again. Models are built on first use (defer_build in SpecModel): a run builds only the kinds its
    documents have, and of their parts only those validated or dumped on their own."""
    if not kind.__pydantic_complete__:
        kind.model_fields["spec"].annotation.model_rebuild()  # type: ignore[union-attr]
        kind.model_rebuild()
    return kind
