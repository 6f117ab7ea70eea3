"""Sizes and durations as people write them: ``512MiB``, ``2GiB``, ``90s``, ``4h``."""

from __future__ import annotations

import re

_SIZE_UNITS = {
    "b": 1,
    "k": 1024, "kib": 1024, "kb": 1000,
    "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
    "g": 1024**3, "gib": 1024**3, "gb": 1000**3,
    "t": 1024**4, "tib": 1024**4, "tb": 1000**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_RE = re.compile(r"^(?:(\d+)([smhdw]))+$")
_DURATION_PART = re.compile(r"(\d+)([smhdw])")

SIZE_HINT = "a size with a unit, e.g. 512MiB, 2GiB, 20G (K/M/G/T are binary, KB/MB/GB decimal)"
DURATION_HINT = "a duration such as 30s, 15m, 4h, 1d, 1h30m"


def parse_size(text: str) -> int:
    """Bytes in ``text``; a bare number is refused because its unit is a guess."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"expected {SIZE_HINT}, got {text!r}")
    number, unit = m.groups()
    factor = _SIZE_UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(f"unknown size unit {unit!r} in {text!r}; expected {SIZE_HINT}")
    value = float(number) * factor
    if value != int(value):
        raise ValueError(f"{text!r} is not a whole number of bytes")
    return int(value)


def format_size(n: int) -> str:
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n}B"


def format_duration(seconds: int) -> str:
    """``seconds`` as a duration parse_duration reads back: 3600 → 1h, 5400 → 1h30m."""
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {seconds}")
    parts = []
    for unit, factor in sorted(_DURATION_UNITS.items(), key=lambda kv: -kv[1]):
        count, seconds = divmod(seconds, factor)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def parse_duration(text: str) -> int:
    """Seconds in ``text`` (``90s``, ``15m``, ``1h30m``)."""
    compact = text.replace(" ", "")
    if not _DURATION_RE.match(compact):
        raise ValueError(f"expected {DURATION_HINT}, got {text!r}")
    total = sum(int(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(compact))
    if total <= 0:
        raise ValueError(f"duration must be positive, got {text!r}")
    return total
