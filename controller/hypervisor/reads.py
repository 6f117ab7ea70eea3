"""Which libvirt methods only read: the calls that may be asked twice (deadline.py) and the
only ones a no-op's replay makes (read_journal.py). No import but the standard library's: the
no-op memo's answer loads this without the rest of virtsync."""

from __future__ import annotations

# Methods answered from the client's own copy, never the daemon (virDomainGetName, …GetUUID,
# …GetID read the handle): handing them to a worker would only cost a thread switch each, and
# an observe of 1,000 domains makes thousands of them.
LOCAL_CALLS = frozenset({"name", "UUID", "UUIDString", "ID"})


_READ_PREFIXES = ("list", "lookup", "get", "is", "num", "has")
_READS = frozenset({"XMLDesc", "info", "state", "autostart", "memoryStats", "blockInfo", "jobInfo", "capabilities",
                    "vcpus", "vcpuPinInfo", "emulatorPinInfo", "schedulerParameters", "schedulerParametersFlags",
                    "interfaceParameters", "blockIoTune", "hostname", "blockStats", "interfaceStats",
                    "interfaceAddresses", "snapshotCurrent", "snapshotNum"})


def is_read(method: str) -> bool:
    """A call that only reads, safe to ask twice. libvirt-python reads a failed call's error after
    the call has returned; a libvirt object freed in that moment (the garbage collector's) resets
    the thread's last error, and the exception comes without a code: the test driver's "no
    secret driver" (VIR_ERR_NO_SUPPORT) then looked like a real failure."""
    return method in _READS or method.startswith(_READ_PREFIXES)
