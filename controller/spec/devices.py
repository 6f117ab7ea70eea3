"""Spec models of a guest's devices beyond disks and NICs: TPM, shares, passthrough, consoles,
firmware strings, Windows enlightenments. Each is one field of the registry
(controller/fields/guest_devices.py), which says how it is written, compared and how a
change lands."""


import re
from typing import Literal, Self

from pydantic import Field, model_validator

from controller.spec.base import SpecModel, empty_list
from controller.spec.types import FieldError

_PCI = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")
_USB_ID = re.compile(r"^0x[0-9a-fA-F]{4}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_TARGET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,35}$")


class Tpm(SpecModel):
    model: Literal["tpm-crb", "tpm-tis"] = Field(default="tpm-crb", description="Default: tpm-crb.")
    version: Literal["2.0", "1.2"] = Field(default="2.0", description='Default: "2.0".')
    encryption_secret_ref: str | None = Field(
        default=None, description="A kind: Secret with libvirt: {usage: vtpm} whose value encrypts the TPM's "
        "state on the host. Default: not encrypted.")


class Filesystem(SpecModel):
    """A host directory shared with the guest through virtiofs (virtiofsd on the host); the
    guest's memory is then backed by shared memory (memfd), as virtiofs requires."""

    source: str = Field(description="Directory on the host (inside the host's allowedDirs).")
    target: str = Field(description="Mount tag inside the guest: mount -t virtiofs TAG /mnt.")
    readonly: bool = Field(default=False, description="Default: false.")

    @model_validator(mode="after")
    def _valid(self) -> Self:
        if not self.source.startswith("/"):
            raise FieldError("source", f"share source {self.source!r} must be an absolute directory")
        if not _TARGET.match(self.target):
            raise FieldError("target", f"mount tag {self.target!r}: use up to 36 letters, digits, '.', '_', '-'")
        return self


class UsbDevice(SpecModel):
    vendor: str = Field(description='USB vendor ID, e.g. "0x046d".')
    product: str = Field(description='USB product ID, e.g. "0xc52b".')

    @model_validator(mode="after")
    def _ids(self) -> Self:
        for name in ("vendor", "product"):
            if not _USB_ID.match(getattr(self, name)):
                raise FieldError(name, f"USB {name} ID {getattr(self, name)!r} is not of the form 0x1234")
        return self


class Hostdev(SpecModel):
    """A host device passed through to the guest (VFIO): exactly one of pci, usb, mdev."""

    pci: str | None = Field(default=None, description='PCI address on the host, e.g. "0000:03:00.0".')
    usb: UsbDevice | None = None
    mdev: str | None = Field(default=None, description="UUID of a mediated device (vGPU) on the host.")

    @model_validator(mode="after")
    def _one(self) -> Self:
        given = [n for n in ("pci", "usb", "mdev") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("a hostdev is exactly one of pci: ADDRESS, usb: {vendor, product}, mdev: UUID"
                             + (f" (got {', '.join(given)})" if given else ""))
        if self.pci is not None and not _PCI.match(self.pci):
            raise FieldError("pci", f"PCI address {self.pci!r} is not of the form 0000:03:00.0")
        if self.mdev is not None and not _UUID.match(self.mdev):
            raise FieldError("mdev", f"mdev {self.mdev!r} is not a UUID")
        return self

    @property
    def key(self) -> str:
        """How the host names the device: pci_0000_03_00_0, usb 0x046d:0xc52b, the mdev UUID."""
        if self.pci is not None:
            return "pci " + self.pci.lower()
        if self.usb is not None:
            return f"usb {self.usb.vendor.lower()}:{self.usb.product.lower()}"
        return f"mdev {(self.mdev or '').lower()}"


class Video(SpecModel):
    model: Literal["virtio", "qxl", "vga", "bochs", "cirrus", "ramfb", "none"] = Field(
        description="Display adapter model.")
    vram: int | None = Field(default=None, ge=1, description="Video memory in KiB (<model vram>). Left out: "
                             "the definition's (libvirt's default for the model).")
    heads: int | None = Field(default=None, ge=1, le=16, description="Number of screens (<model heads>). "
                              "Left out: the definition's.")


class CharDevice(SpecModel):
    type: Literal["pty"] = Field(default="pty", description="Host side of the character device. Default: pty.")


class Console(SpecModel):
    type: Literal["pty"] = Field(default="pty", description="Default: pty.")
    target: Literal["serial", "virtio"] = Field(
        default="serial", description="serial: the first serial port (ttyS0); virtio: hvc0. Default: serial.")


class Watchdog(SpecModel):
    model: Literal["i6300esb", "itco", "ib700", "diag288"] = Field(default="i6300esb", description="Default: i6300esb.")
    action: Literal["reset", "shutdown", "poweroff", "pause", "none", "dump", "inject-nmi"] = Field(
        default="reset", description="What happens when the guest stops feeding it. Default: reset.")


class RngRate(SpecModel):
    bytes: int = Field(ge=1, description="Bytes the guest may read per period.")
    period: int | None = Field(default=None, ge=1, description="The period in milliseconds. Default: QEMU's "
                               "(1000).")


class Rng(SpecModel):
    backend: Literal["/dev/urandom", "/dev/random", "/dev/hwrng", "builtin"] = Field(
        default="/dev/urandom", description="The host's entropy source (a virtio-rng device). Default: /dev/urandom.")
    rate: RngRate | None = Field(default=None, description="Limit on the entropy the guest reads (<rate>). "
                                 "Left out: the definition's rate, if any, stays.")


class Bios(SpecModel):
    """SeaBIOS options, <os><bios>."""

    use_serial: bool | None = Field(default=None, description="BIOS messages on the serial port (with a "
                                    "serial: device). Left out: as defined.")
    reboot_timeout: int | None = Field(default=None, ge=-1, le=65535, description="Milliseconds before a "
                                       "failed boot is retried; -1: never. Left out: as defined.")


class BootMenu(SpecModel):
    """The firmware's interactive boot menu, <os><bootmenu>."""

    enable: bool = Field(description="Show the boot menu.")
    timeout: int | None = Field(default=None, ge=0, le=65535, description="Milliseconds the menu waits "
                                "(with enable: true). Left out: as defined.")


class Panic(SpecModel):
    model: Literal["isa", "pvpanic", "hyperv"] = Field(
        default="isa", description="isa (pvpanic ISA device, x86), pvpanic (PCI), hyperv (Windows). Default: isa.")


class Input(SpecModel):
    type: Literal["tablet", "mouse", "keyboard"]
    bus: Literal["usb", "virtio", "ps2"] = Field(default="usb", description="Default: usb.")


class SmbiosSystem(SpecModel):
    manufacturer: str | None = None
    product: str | None = None
    version: str | None = None
    serial: str | None = None
    uuid: str | None = None
    sku: str | None = None
    family: str | None = None


class SmbiosBaseBoard(SpecModel):
    manufacturer: str | None = None
    product: str | None = None
    version: str | None = None
    serial: str | None = None
    asset: str | None = None
    location: str | None = None


class Sysinfo(SpecModel):
    """SMBIOS strings the guest's firmware reports (dmidecode; licensing, inventory)."""

    system: SmbiosSystem | None = None
    base_board: SmbiosBaseBoard | None = None


class HyperV(SpecModel):
    """Hyper-V enlightenments for Windows guests (each: on when true)."""

    relaxed: bool = False
    vapic: bool = False
    spinlocks: int | None = Field(default=None, ge=4095, description="Spinlock retries (≥ 4095); on when given.")
    vpindex: bool = False
    runtime: bool = False
    synic: bool = False
    stimer: bool = False
    reset: bool = False
    frequencies: bool = False
    reenlightenment: bool = False
    tlbflush: bool = False
    ipi: bool = False
    vendor_id: str | None = Field(default=None, max_length=12, description="Hypervisor vendor ID string.")

    @model_validator(mode="after")
    def _deps(self) -> Self:
        # libvirt/QEMU refuse these without their prerequisites; say so at validation.
        if (self.synic or self.stimer) and not self.vpindex:
            raise FieldError("vpindex", "hyperv synic and stimer need vpindex: true")
        if self.stimer and not self.synic:
            raise FieldError("synic", "hyperv stimer needs synic: true")
        return self


class Features(SpecModel):
    hyperv: HyperV | None = None


class Timer(SpecModel):
    name: Literal["rtc", "pit", "hpet", "kvmclock", "hypervclock", "tsc"]
    tickpolicy: Literal["delay", "catchup", "merge", "discard"] | None = None
    present: bool | None = Field(default=None, description="false removes the timer from the guest.")


class Clock(SpecModel):
    offset: Literal["utc", "localtime"] = Field(default="utc", description="Windows expects localtime. Default: utc.")
    timers: list[Timer] = Field(default_factory=empty_list)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        names = [t.name for t in self.timers]
        for i, n in enumerate(names):
            if n in names[:i]:
                raise FieldError(("timers", i, "name"), f"timer {n!r} is given twice")
        return self
