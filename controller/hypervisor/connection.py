"""One persistent libvirt connection per host, reopened when it dies."""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import libvirt

from controller.errors import HostUnreachable
from controller.hypervisor.errors import map_error, quiet_libvirt


class HostConnection:
    def __init__(self, host: str, uri: str, timeout: float = 10.0):
        self.host = host
        self.uri = uri
        self.timeout = timeout
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()

    def get(self) -> libvirt.virConnect:
        """The open connection; opened (again) when there is none or it died."""
        with self._lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                self._drop()
            self._conn = self._open()
            return self._conn

    def _open(self) -> libvirt.virConnect:
        quiet_libvirt()
        # libvirt.open blocks for as long as the transport does (an SSH or TCP
        # host that drops packets): bound it so one dead host never stalls a run.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"connect-{self.host}")
        future = pool.submit(libvirt.open, self.uri)
        pool.shutdown(wait=False)
        try:
            conn = future.result(timeout=self.timeout)
        except FutureTimeout:
            raise HostUnreachable(f"no answer from {self.uri} within {self.timeout:g}s",
                                  host=self.host) from None
        except libvirt.libvirtError as exc:
            err = map_error(exc, self.host, f"cannot connect to {self.uri}")
            raise HostUnreachable(str(err).removeprefix(f"{self.host}: "), host=self.host) from None
        if conn is None:
            raise HostUnreachable(f"cannot connect to {self.uri}", host=self.host)
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                self._conn.close()
        self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop()


class ConnectionPool:
    """Connections by host name, shared by everything in one process."""

    def __init__(self) -> None:
        self._conns: dict[str, HostConnection] = {}
        self._lock = threading.Lock()

    def for_host(self, host: str, uri: str, timeout: float = 10.0) -> HostConnection:
        with self._lock:
            conn = self._conns.get(host)
            if conn is None or conn.uri != uri:
                if conn is not None:
                    conn.close()
                conn = HostConnection(host, uri, timeout)
                self._conns[host] = conn
            return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._conns.values():
                conn.close()
            self._conns.clear()
