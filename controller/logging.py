"""structlog set-up: readable console lines for people, JSON lines for the service.

Only the service logs through structlog, so ``configure`` keeps its settings and structlog (with
asyncio under it) is imported when the first logger is asked for: a plan never pays for it.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import structlog

_settings: dict[str, Any] | None = None
_applied = False


def configure(*, json: bool = False, verbose: int = 0) -> None:
    global _settings, _applied
    _settings = {"json": json, "verbose": verbose}
    _applied = False
    if "structlog" in sys.modules:  # loggers exist already: apply now
        _apply()


def _apply() -> None:
    global _applied
    import structlog

    _applied = True
    if _settings is None:
        return
    json, verbose = _settings["json"], _settings["verbose"]
    level = logging.WARNING - 10 * verbose if verbose else logging.INFO
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:  # JSON lines carry the traceback as text (the console renderer formats its own)
        processors.append(structlog.processors.format_exc_info)
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(max(level, logging.DEBUG)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str = "virtsync") -> structlog.stdlib.BoundLogger:
    import structlog

    if not _applied:
        _apply()
    return structlog.get_logger(name)  # type: ignore[no-any-return]
