"""The base of every spec model: strict, frozen, camelCase in YAML.

The modules that define spec models evaluate their annotations as they are written (no
``from __future__ import annotations``): pydantic evaluates each string annotation through a
ForwardRef, which compiles it, and ~370 of them were 18 ms of every process that loads specs
(issue 17). A validator returns ``Self``; a name defined later, or imported for type checking
only, is quoted.
"""

import os
import sys
import types
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


def _without_pydantic_plugins() -> None:
    """pydantic looks for plugins when it builds its first validator (not at import): importing
    importlib.metadata and reading the entry points of every installed distribution cost a no-op
    plan ~25 ms of CPU (issue 17). virtsync uses no pydantic plugin, so it loads none, as
    PYDANTIC_DISABLE_PLUGINS=__all__ would say; a PYDANTIC_DISABLE_PLUGINS that is set (to
    anything) leaves the choice to pydantic's own loader."""
    name = "pydantic.plugin._loader"  # whose get_plugins() pydantic asks, imported on first use
    if "PYDANTIC_DISABLE_PLUGINS" in os.environ or name in sys.modules:
        return
    loader = types.ModuleType(name, "No pydantic plugins (controller/spec/base.py).")
    loader.get_plugins = tuple  # type: ignore[attr-defined]  # get_plugins() -> () : none
    sys.modules[name] = loader


_without_pydantic_plugins()


# Default factories of list and mapping fields. Python functions, not the builtins list and dict:
# pydantic reads each default factory's signature when it builds a validator, and a builtin's is
# parsed from its text signature with the tokenizer (~4 ms of a Guest's ~20 ms build, issue 17).


def empty_list() -> list[Any]:
    return []


def empty_dict() -> dict[Any, Any]:
    return {}


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
