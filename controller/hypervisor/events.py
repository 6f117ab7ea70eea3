"""libvirt lifecycle events (domains and networks) through libvirt's event loop.

The event loop (``start_event_loop``) runs before any connection is opened. Callbacks
receive (kind, name) and must be quick: they only enqueue work.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import libvirt

from controller.hypervisor.connection import HostConnection
from controller.hypervisor.event_loop import start_event_loop

__all__ = ["HostEvents", "start_event_loop"]

Callback = Callable[[str, str, str], None]  # (host, kind, name)


class HostEvents:
    """Keeps lifecycle callbacks registered on a host's (re)opened connection."""

    def __init__(self, conn: HostConnection, on_event: Callback):
        self.conn = conn
        self.on_event = on_event
        self._registered: Any = None  # the virConnect callbacks are registered on
        self._ids: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        conn.on_close(self._forget)

    def ensure(self) -> bool:
        """Register on the current connection if needed; True when (re)registered."""
        c = self.conn.get(lane=0)  # whichever thread asks: one registration per host
        with self._lock:
            if c is self._registered:
                return False
        host = self.conn.host

        def dom_cb(_conn: Any, dom: Any, _event: int, _detail: int, _opaque: Any) -> None:
            self.on_event(host, "Guest", dom.name())

        def net_cb(_conn: Any, net: Any, _event: int, _detail: int, _opaque: Any) -> None:
            self.on_event(host, "Network", net.name())

        ids = [("dom", c.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, dom_cb,
                                                None))]
        with contextlib.suppress(libvirt.libvirtError):  # without network events: resyncs
            ids.append(("net", c.networkEventRegisterAny(None, libvirt.VIR_NETWORK_EVENT_ID_LIFECYCLE,
                                                         net_cb, None)))
        with self._lock:
            self._registered = c
            self._ids = ids
        return True

    def _forget(self, raw: Any) -> None:
        """Undo the registrations on a connection about to be closed: until then libvirt-python
        holds that connection (and its socket) alive for the callbacks."""
        with self._lock:
            if getattr(self._registered, "unbounded", self._registered) is not raw:
                return
            ids, self._registered, self._ids = self._ids, None, []
        for kind, cb_id in ids:
            with contextlib.suppress(libvirt.libvirtError):  # a dead connection cannot answer
                if kind == "dom":
                    raw.domainEventDeregisterAny(cb_id)
                else:
                    raw.networkEventDeregisterAny(cb_id)
