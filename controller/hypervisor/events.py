"""libvirt lifecycle events (domains and networks) through libvirt's event loop.

The default event implementation must be registered before any connection is
opened; ``start_event_loop`` does that once per process and runs the loop in a
daemon thread. Callbacks receive (kind, name) and must be quick: they only
enqueue work.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import libvirt

from controller.hypervisor.connection import HostConnection

Callback = Callable[[str, str, str], None]  # (host, kind, name)

_loop_started = False
_loop_lock = threading.Lock()


def start_event_loop() -> None:
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


class HostEvents:
    """Keeps lifecycle callbacks registered on a host's (re)opened connection."""

    def __init__(self, conn: HostConnection, on_event: Callback):
        self.conn = conn
        self.on_event = on_event
        self._registered: Any = None  # the virConnect callbacks are registered on
        self._ids: list[tuple[str, int]] = []

    def ensure(self) -> bool:
        """Register on the current connection if needed; True when (re)registered."""
        c = self.conn.get()
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
        with contextlib.suppress(libvirt.libvirtError):
            c.setKeepAlive(5, 3)  # notice a dead daemon within ~20 s even when idle
        self._registered = c
        self._ids = ids
        return True
