"""The one place where libvirt's errors become virtsync's typed errors.

Like httpx's map_httpcore_exceptions: callers wrap libvirt calls in
``libvirt_call(host, what)`` and never see libvirt.libvirtError.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import libvirt

from controller.errors import (
    ConflictError,
    HostError,
    HostUnreachable,
    ObjectNotFound,
    OperationFailed,
    UnsupportedError,
    VirtsyncError,
)

_NOT_FOUND = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_NETWORK,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
    libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT,
}
_UNSUPPORTED = {
    libvirt.VIR_ERR_NO_SUPPORT,
    libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
    libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
}
_UNREACHABLE = {
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_SYSTEM_ERROR,
}
_TRANSIENT = {
    libvirt.VIR_ERR_OPERATION_TIMEOUT,
    libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
    libvirt.VIR_ERR_OPERATION_INVALID,  # usually a state race: re-observe and retry
    libvirt.VIR_ERR_RESOURCE_BUSY if hasattr(libvirt, "VIR_ERR_RESOURCE_BUSY") else -1,
}


# A define or create that found the object there already: it appeared since it was observed.
_EXISTS = {getattr(libvirt, name) for name in ("VIR_ERR_DOM_EXIST", "VIR_ERR_STORAGE_VOL_EXIST",
                                               "VIR_ERR_NETWORK_EXIST") if hasattr(libvirt, name)}


def map_error(exc: libvirt.libvirtError, host: str, what: str) -> HostError:
    code = exc.get_error_code()
    domain = exc.get_error_domain()
    text = exc.get_error_message() or str(exc)
    message = f"{what}: {text}"
    if code in _EXISTS or (code == libvirt.VIR_ERR_OPERATION_FAILED and "already exists" in text):
        return ConflictError(message, host=host)
    if "keepalive timeout" in text:  # libvirt cut off a daemon that stopped answering
        return HostUnreachable(f"{what}: no answer from the daemon (libvirt's keepalive gave up on it)",
                               host=host)
    if "client socket is closed" in text:  # the call waited on a connection keepalive (or the daemon) closed
        return HostUnreachable(f"{what}: no answer from the daemon (its connection was closed: libvirt's "
                               "keepalive gave up on it, or the daemon went away)", host=host)
    if code in _NOT_FOUND:
        return ObjectNotFound(message, host=host)
    if code in _UNSUPPORTED:
        return UnsupportedError(message, host=host)
    if code in _UNREACHABLE and (code != libvirt.VIR_ERR_SYSTEM_ERROR or domain in (
            libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE)):
        return HostUnreachable(message, host=host)
    return OperationFailed(message, host=host, retryable=code in _TRANSIENT)


@contextmanager
def libvirt_call(host: str, what: str) -> Iterator[None]:
    try:
        yield
    except libvirt.libvirtError as exc:
        raise map_error(exc, host, what) from None


def quiet_libvirt() -> None:
    """libvirt prints every error to stderr by default; virtsync reports them itself."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def is_not_found(exc: libvirt.libvirtError) -> bool:
    return exc.get_error_code() in _NOT_FOUND


def as_virtsync_error(exc: BaseException, host: str, what: str) -> VirtsyncError:
    """Any exception raised while acting on ``host`` as a typed error: a libvirt error mapped
    like every other (a call that slipped past ``libvirt_call``), anything else an internal
    error that a retry will not cure."""
    if isinstance(exc, VirtsyncError):
        return exc
    if isinstance(exc, libvirt.libvirtError):
        return map_error(exc, host, what)
    return OperationFailed(f"{what}: internal error: {type(exc).__name__}: {exc}", host=host, retryable=False)
