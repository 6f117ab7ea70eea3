"""The base of every spec model: strict, frozen, camelCase in YAML."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class SpecModel(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        alias_generator=to_camel,
        populate_by_name=True,
        # Validators are built on first use (spec/models.py built()): building all ~85 models at
        # import cost a no-op plan more than planning did (issue 17).
        defer_build=True,
    )
