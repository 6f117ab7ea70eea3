"""Validated scalar types shared by the spec models (names, sizes, MACs, CIDRs, cron)."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from controller.spec.units import DURATION_HINT, SIZE_HINT, parse_duration, parse_size

# libvirt accepts almost any name, but names also become file names (volumes,
# NVRAM, logs) and bridge names; this keeps them safe everywhere.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
_NAME_RE = re.compile(NAME_PATTERN)
_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_LABEL_KEY_RE = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_IFNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")


class FieldError(ValueError):
    """A model-level check about one field: the diagnostic points at that field, not the model."""

    def __init__(self, field: str | tuple[str | int, ...], message: str):
        super().__init__(message)
        self.path: tuple[str | int, ...] = (field,) if isinstance(field, str) else field


def _name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def _size(value: object) -> object:
    if isinstance(value, bool):
        return value  # let strict validation reject it
    if isinstance(value, int):
        raise ValueError(f"a bare number has no unit; expected {SIZE_HINT}")
    if isinstance(value, str):
        return parse_size(value)
    return value


def _duration(value: object) -> object:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"a bare number has no unit; expected {DURATION_HINT}")
    return value


def _mac(value: str) -> str:
    if not _MAC_RE.match(value):
        raise ValueError(f"{value!r} is not a MAC address like 52:54:00:12:34:56")
    if int(value[:2], 16) & 1:
        raise ValueError(f"{value!r} is a multicast MAC address; guests need a unicast one")
    return value.lower()


def _ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address") from None


def _ipv4_interface(value: str) -> str:
    if "/" not in value:
        raise ValueError(f"{value!r} needs a prefix length, e.g. 192.168.150.1/24")
    try:
        iface = ipaddress.IPv4Interface(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address with prefix (CIDR)") from None
    if iface.network.prefixlen > 30:
        raise ValueError(f"{value!r}: a /{iface.network.prefixlen} leaves no room for guests")
    if iface.ip in (iface.network.network_address, iface.network.broadcast_address):
        raise ValueError(f"{value!r}: the host address cannot be the network or broadcast address")
    return str(iface)


_CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
                ("weekday", 0, 7))
_CRON_NAMES = {
    "month": {m: i for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)},
    "weekday": {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))},
}


def _cron_field_problem(field: str, text: str, low: int, high: int) -> str | None:
    """Why one cron field is wrong (None if this check finds nothing), naming the field and its range."""
    names = _CRON_NAMES.get(field, {})
    for item in text.split(","):
        base, _, step = item.partition("/")
        if step and (not step.isdigit() or int(step) == 0):
            return f"{field} step {step!r} must be a whole number of at least 1"
        if base == "*":
            continue
        for bound in base.split("-", 1):
            value = names[bound.lower()] if bound.lower() in names else (int(bound) if bound.isdigit() else None)
            if value is None:
                named = f" or a name like {', '.join(list(names)[:3])}" if names else ""
                return f"{field} {bound!r} is not a number {low}-{high}{named}"
            if not low <= value <= high:
                return f"{field} {bound} is out of range {low}-{high}"
    return None


def _cron(value: str) -> str:
    fields = value.split()
    if len(fields) != 5:
        raise ValueError(
            f"{value!r} is not a 5-field cron expression (minute hour day month weekday)"
        )
    from croniter import croniter  # here, not at import: a plan of specs without cron needs none

    if not croniter.is_valid(value):
        for text, (field, low, high) in zip(fields, _CRON_FIELDS, strict=True):
            why = _cron_field_problem(field, text, low, high)
            if why:
                raise ValueError(f"{value!r}: {why}")
        raise ValueError(f"{value!r} is not a valid cron expression (minute hour day month weekday)")
    return value


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        hint = "an IANA name such as Europe/Berlin"
        raise ValueError(f"unknown timezone {value!r} ({hint})") from None
    return value


def _label_key(value: str) -> str:
    if len(value) > 253 or not _LABEL_KEY_RE.match(value):
        raise ValueError(f"{value!r} is not a valid label key")
    return value


def _ifname(value: str) -> str:
    if not _IFNAME_RE.match(value):
        raise ValueError(f"{value!r} is not a valid interface name (1-15 characters, no spaces)")
    return value


def _json_pointer(value: str) -> str:
    if not value.startswith("/spec/") or value.endswith("/"):
        raise ValueError(f"{value!r} is not a JSON Pointer into the spec, e.g. /spec/memory")
    return value


# The JSON Schema's patterns of sizes and durations (the schema generator recognises them
# to write int defaults, bytes and seconds, the way people write them).
SIZE_PATTERN = r"^\d+(\.\d+)?\s*([KMGT]i?B?|B)$"
DURATION_PATTERN = r"^(\d+[smhdw])+$"

Name = Annotated[str, AfterValidator(_name), Field(pattern=NAME_PATTERN)]
LabelKey = Annotated[str, AfterValidator(_label_key)]
Size = Annotated[
    int,
    BeforeValidator(_size),
    Field(gt=0),
    WithJsonSchema({"type": "string", "pattern": SIZE_PATTERN,
                    "description": SIZE_HINT, "examples": ["512MiB", "2GiB"]}),
]
Duration = Annotated[
    int,
    BeforeValidator(_duration),
    Field(gt=0),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "description": DURATION_HINT}),
]
Mac = Annotated[str, AfterValidator(_mac), Field(examples=["52:54:00:00:00:01"])]
IPv4 = Annotated[str, AfterValidator(_ipv4), Field(examples=["192.168.150.10"])]
IPv4Interface = Annotated[
    str, AfterValidator(_ipv4_interface), Field(examples=["192.168.150.1/24"])
]
Cron = Annotated[str, AfterValidator(_cron), Field(examples=["0 3 * * *"])]
InterfaceName = Annotated[str, AfterValidator(_ifname)]
Timezone = Annotated[str, AfterValidator(_timezone), Field(examples=["UTC", "Europe/Berlin"])]
JsonPointer = Annotated[str, AfterValidator(_json_pointer), Field(examples=["/spec/memory"])]
