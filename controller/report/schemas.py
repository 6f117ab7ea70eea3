"""JSON Schemas of the machine-readable reports (plan, drift)."""

from __future__ import annotations

from typing import Any


def output_schemas() -> dict[str, dict[str, Any]]:
    return {}
