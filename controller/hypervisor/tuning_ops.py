"""The live calls of guest tuning: vCPU, emulator and I/O thread pinning, scheduler parameters.

Pins are made with VIR_DOMAIN_AFFECT_CURRENT: on a running guest that is the running guest only
(the executor has written the definition already), and on a guest that stopped meanwhile it is
the definition, which already says the same — so a guest that stops between plan and apply is
no failure. libvirt's test driver refuses VIR_DOMAIN_AFFECT_LIVE on pinVcpuFlags but takes
CURRENT. Scheduler parameters need the QEMU driver's cgroups: they are set live only.
"""

from __future__ import annotations

import libvirt

from controller.errors import PlanError
from controller.hypervisor.errors import libvirt_call
from controller.model.operations import LiveOp, PinEmulator, PinIOThread, PinVcpu, SetSchedulerParameters
from controller.spec.guest_tuning import parse_cpuset

_CURRENT = libvirt.VIR_DOMAIN_AFFECT_CURRENT


def cpumap(conn: libvirt.virConnect, cpuset: str) -> tuple[bool, ...]:
    """libvirt's CPU map of a set over the host's CPUs; an empty set is every host CPU."""
    count = int(conn.getCPUMap(0)[0])
    if not cpuset:
        return (True,) * count
    cpus = parse_cpuset(cpuset)
    return tuple(i in cpus for i in range(max(count, max(cpus) + 1)))


def run(host: str, conn: libvirt.virConnect, dom: libvirt.virDomain, op: LiveOp) -> str:
    """Make one tuning call on a running guest; what was done, for the change set."""
    name = dom.name()
    if isinstance(op, PinVcpu):
        with libvirt_call(host, f"pin vCPU {op.vcpu} of {name}"):
            dom.pinVcpuFlags(op.vcpu, cpumap(conn, op.cpuset), _CURRENT)
        return f"vCPU {op.vcpu} pinned to {op.cpuset or 'every host CPU'} live"
    if isinstance(op, PinEmulator):
        with libvirt_call(host, f"pin the emulator threads of {name}"):
            dom.pinEmulator(cpumap(conn, op.cpuset), _CURRENT)
        return f"emulator pinned to {op.cpuset or 'every host CPU'} live"
    if isinstance(op, PinIOThread):
        with libvirt_call(host, f"pin I/O thread {op.iothread} of {name}"):
            dom.pinIOThread(op.iothread, cpumap(conn, op.cpuset), _CURRENT)
        return f"I/O thread {op.iothread} pinned to {op.cpuset or 'every host CPU'} live"
    if isinstance(op, SetSchedulerParameters):
        with libvirt_call(host, f"set the CPU scheduler parameters of {name}"):
            dom.setSchedulerParametersFlags(op.params(), libvirt.VIR_DOMAIN_AFFECT_LIVE)
        return "CPU shares and bandwidth set live"
    raise PlanError(f"not a tuning operation: {op.op}")
