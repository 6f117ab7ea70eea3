"""Spec models of disk and NIC tuning: a disk's I/O limits, a NIC's bandwidth and its macvtap source.

Each is the value of one item field of the registry (controller/fields/devices.py), which says
how it is written, compared and how a change lands.
"""


from typing import Literal, Self

from pydantic import Field, model_validator

from controller.spec.base import SpecModel
from controller.spec.types import FieldError, InterfaceName

# libvirt's <iotune> children, by the spec's (camelCase) field names' snake_case form.
IOTUNE_KEYS = ("total_bytes_sec", "read_bytes_sec", "write_bytes_sec",
               "total_iops_sec", "read_iops_sec", "write_iops_sec")


class IoTune(SpecModel):
    """Block I/O limits of one disk (libvirt ``<iotune>``); a limit left out is no limit."""

    total_bytes_sec: int | None = Field(default=None, ge=1,
                                        description="Bytes per second, reads and writes together.")
    read_bytes_sec: int | None = Field(default=None, ge=1, description="Bytes per second read.")
    write_bytes_sec: int | None = Field(default=None, ge=1, description="Bytes per second written.")
    total_iops_sec: int | None = Field(default=None, ge=1,
                                       description="I/O operations per second, reads and writes together.")
    read_iops_sec: int | None = Field(default=None, ge=1, description="Read operations per second.")
    write_iops_sec: int | None = Field(default=None, ge=1, description="Write operations per second.")

    @model_validator(mode="after")
    def _total_or_each(self) -> Self:
        # libvirt refuses a total limit together with a read or write limit of the same unit.
        for unit, camel in (("bytes", "Bytes"), ("iops", "Iops")):
            if getattr(self, f"total_{unit}_sec") is not None:
                for side in ("read", "write"):
                    if getattr(self, f"{side}_{unit}_sec") is not None:
                        raise FieldError(f"{side}{camel}Sec", f"give total{camel}Sec or read{camel}Sec/"
                                         f"write{camel}Sec, not both (libvirt refuses the mix)")
        return self

    def values(self) -> tuple[tuple[str, int], ...]:
        """The limits set, as libvirt names them."""
        return tuple((k, v) for k in IOTUNE_KEYS if (v := getattr(self, k)) is not None)


class BandwidthLimit(SpecModel):
    """One direction of a NIC's traffic shaping, in libvirt's units."""

    average: int = Field(ge=1, le=2**32 - 1, description="Average rate in KiB/s.")
    peak: int | None = Field(default=None, ge=1, le=2**32 - 1,
                             description="Peak rate in KiB/s (while the burst lasts).")
    burst: int | None = Field(default=None, ge=1, le=2**32 - 1, description="KiB sent at peak rate.")


class Bandwidth(SpecModel):
    inbound: BandwidthLimit | None = Field(default=None, description="Traffic to the guest.")
    outbound: BandwidthLimit | None = Field(default=None, description="Traffic from the guest.")


class DirectSource(SpecModel):
    """A macvtap NIC on a host device (``<interface type='direct'>``)."""

    dev: InterfaceName = Field(description="Host network device the macvtap sits on, e.g. eth0.")
    mode: Literal["bridge", "vepa", "private", "passthrough"] = Field(
        default="bridge", description="macvtap mode. bridge: guests on the same device reach each other "
        "(never the host itself); passthrough: an SR-IOV VF given to one guest. Default: bridge.")

