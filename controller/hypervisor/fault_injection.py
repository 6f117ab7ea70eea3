"""Crash-point tests: die right after the k-th libvirt call that changes state.

VIRTSYNC_TEST_KILL_AFTER_CALLS=k makes the process end with ``os._exit(137)`` (what a
``kill -9`` leaves: no cleanup, no flushed buffers, no released lock) right after its k-th
state-changing call has returned, so a test can stop virtsync (CLI or service) between any
two writes it makes and check that the next run repairs the host. VIRTSYNC_TEST_CALL_LOG=FILE
appends each such call's name (``virDomain.create``) to FILE, so a test can count the calls
of a run without faults. deadline.Bounded calls ``after_call`` for every call it makes.
"""

from __future__ import annotations

import os
import threading
from typing import Any

# The methods that change a host, by the libvirt class that has them (names as
# libvirt-python spells them; a name that only reads on one class, such as a stream's
# ``finish`` of a download, is listed for none). Kept to what controller/hypervisor calls,
# plus their siblings libvirt has, so a new call site is counted too.
MUTATING: dict[str, frozenset[str]] = {
    "virConnect": frozenset({
        "defineXML", "defineXMLFlags", "createXML", "createXMLWithFiles",
        "networkDefineXML", "networkDefineXMLFlags", "networkCreateXML", "networkCreateXMLFlags",
        "storagePoolDefineXML", "storagePoolCreateXML", "secretDefineXML",
        "nwfilterDefineXML", "nodeDeviceCreateXML", "restore", "restoreFlags",
    }),
    "virDomain": frozenset({
        "create", "createWithFlags", "destroy", "destroyFlags", "undefine", "undefineFlags",
        "shutdown", "shutdownFlags", "reboot", "reset", "suspend", "resume",
        "setMemory", "setMemoryFlags", "setMaxMemory", "setVcpus", "setVcpusFlags",
        "attachDevice", "attachDeviceFlags", "detachDevice", "detachDeviceFlags", "detachDeviceAlias",
        "updateDeviceFlags", "setMetadata", "setAutostart", "setBlockIoTune", "setInterfaceParameters",
        "setSchedulerParameters", "setSchedulerParametersFlags", "setMemoryParameters",
        "setNumaParameters", "setBlkioParameters", "pinVcpu", "pinVcpuFlags", "pinEmulator",
        "snapshotCreateXML", "revertToSnapshot", "checkpointCreateXML",
        "migrate", "migrate2", "migrate3", "migrateToURI", "migrateToURI2", "migrateToURI3",
        "managedSave", "managedSaveRemove", "save", "saveFlags", "rename",
        "blockCommit", "blockCopy", "blockPull", "blockRebase", "blockResize", "blockJobAbort",
        "backupBegin", "abortJob",
    }),
    "virDomainSnapshot": frozenset({"delete"}),
    "virDomainCheckpoint": frozenset({"delete"}),
    "virNetwork": frozenset({"create", "destroy", "undefine", "setAutostart", "update"}),
    "virNetworkPort": frozenset({"delete", "setParameters"}),
    "virStoragePool": frozenset({
        "create", "destroy", "undefine", "build", "delete", "setAutostart",
        "createXML", "createXMLFrom",
    }),
    "virStorageVol": frozenset({"delete", "wipe", "wipePattern", "resize", "upload"}),
    # an upload's bytes reach the volume through its stream
    "virStream": frozenset({"send", "sendAll", "sparseSendAll"}),
    "virSecret": frozenset({"setValue", "undefine"}),
}

KILL_ENV = "VIRTSYNC_TEST_KILL_AFTER_CALLS"
LOG_ENV = "VIRTSYNC_TEST_CALL_LOG"

_lock = threading.Lock()
_count = 0
_pid = 0  # the process the count belongs to (a forked child starts from nothing)


def is_mutating(target: Any, name: str) -> bool:
    """Whether calling ``name`` on the libvirt object ``target`` changes the host."""
    for cls in type(target).__mro__:
        names = MUTATING.get(cls.__name__)
        if names is not None:
            return name in names
    return False


def after_call(target: Any, name: str) -> None:
    """Count a call that has returned; die if it was the k-th state-changing one asked for."""
    if not is_mutating(target, name):  # first: reads are most calls, and the environment is slower to ask
        return
    kill, log = os.environ.get(KILL_ENV), os.environ.get(LOG_ENV)
    if not (kill or log):
        return
    global _count, _pid
    with _lock:
        if _pid != os.getpid():
            _pid, _count = os.getpid(), 0
        _count += 1
        n = _count
        if log:
            with open(log, "a") as f:
                f.write(f"{n} {type(target).__name__}.{name}\n")
        if kill and n == int(kill):
            os._exit(137)
