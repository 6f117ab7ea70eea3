"""libvirt's default event loop, run once per process in a daemon thread.

Keepalive (every connection) and lifecycle events (the service) need it, and libvirt wants
it registered before a connection is opened: HostConnection starts it before each open.
"""

from __future__ import annotations

import threading

import libvirt

_started = False
_lock = threading.Lock()


def start_event_loop() -> None:
    global _started
    with _lock:
        if _started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _started = True
