"""The exception tree, and what a retry can do about each error.

    VirtsyncError                 retryable=False unless said otherwise
    ├── UsageError                bad command line (exit 64)
    ├── SpecError                 invalid specs; carries every Diagnostic of the run
    ├── PlanError                 the plan cannot be made (name clash, missing object…)
    │   └── StalePlanError        a saved plan no longer matches the hosts
    ├── GuardRefusal              a safety guard (mass deletion, in-use network) said no
    └── HostError                 anything a host said; `host` names it
        ├── HostUnreachable       retryable: connection refused, daemon restarting
        ├── ConflictError         retryable: the object changed since it was observed
        ├── ObjectNotFound        the object vanished (usually: re-observe, then retry)
        ├── UnsupportedError      the host's driver cannot do this (never retry)
        └── OperationFailed       libvirt refused an operation; `retryable` per cause

Like kopf's TemporaryError/PermanentError: the error says whether trying again
can help and after how long, so the service's backoff needs no guessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Diagnostic:
    """One problem in the spec set, pointing at file:line:column (1-based)."""

    file: str
    line: int
    column: int
    message: str
    severity: str = "error"  # error | warning

    def render(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.severity}: {self.message}"

    def as_json(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "severity": self.severity,
            "message": self.message,
        }


class VirtsyncError(Exception):
    retryable: bool = False
    delay: float = 0.0  # seconds a retry should wait at least

    def __init__(self, message: str, *, retryable: bool | None = None, delay: float | None = None):
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable
        if delay is not None:
            self.delay = delay


class UsageError(VirtsyncError):
    pass


class SpecError(VirtsyncError):
    def __init__(self, diagnostics: Sequence[Diagnostic]):
        self.diagnostics = list(diagnostics)
        errors = [d for d in self.diagnostics if d.severity == "error"]
        first = errors[0].render() if errors else "invalid specs"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(first + more)


class PlanError(VirtsyncError):
    pass


class StalePlanError(PlanError):
    pass


class GuardRefusal(VirtsyncError):
    pass


class HostError(VirtsyncError):
    def __init__(
        self,
        message: str,
        *,
        host: str = "",
        retryable: bool | None = None,
        delay: float | None = None,
    ):
        self.host = host
        super().__init__(f"{host}: {message}" if host else message, retryable=retryable, delay=delay)


class HostUnreachable(HostError):
    retryable = True
    delay = 2.0


class ConflictError(HostError):
    retryable = True
    delay = 0.5


class ObjectNotFound(HostError):
    retryable = True


class UnsupportedError(HostError):
    retryable = False


class OperationFailed(HostError):
    pass
