"""The field-policy table: how a change of each field reaches a guest or network.

One table, read by the planner and shown by ``virtsync plan`` and the docs,
like terraform-provider-libvirt's registry. ``live`` changes go to the running
object and its definition; ``next-boot`` ones only to the definition (a
running guest then shows "pending restart"); ``recreate`` needs the object
undefined and defined again under the same UUID.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.plan.actions import Impact


@dataclass(frozen=True)
class FieldPolicy:
    impact: Impact
    how: str


GUEST_FIELDS: dict[str, FieldPolicy] = {
    "memory": FieldPolicy(Impact.LIVE, "balloon (setMemoryFlags) up to maxMemory; beyond it the "
                          "ceiling grows at next boot"),
    "maxMemory": FieldPolicy(Impact.NEXT_BOOT, "memory ceiling in the definition"),
    "vcpus": FieldPolicy(Impact.LIVE, "vCPU hot-plug (setVcpusFlags) up to maxVcpus; beyond it "
                         "next boot"),
    "maxVcpus": FieldPolicy(Impact.NEXT_BOOT, "vCPU ceiling in the definition"),
    "cpu": FieldPolicy(Impact.NEXT_BOOT, "CPU mode and model"),
    "machine": FieldPolicy(Impact.RECREATE, "machine type changes device addressing"),
    "firmware": FieldPolicy(Impact.RECREATE, "BIOS ⇄ UEFI; NVRAM kept"),
    "xen": FieldPolicy(Impact.RECREATE, "Xen guest type (pv/hvm/pvh)"),
    "boot": FieldPolicy(Impact.NEXT_BOOT, "boot order, kernel, initrd, command line"),
    "disks[+]": FieldPolicy(Impact.LIVE, "attach (hot-plug) after the volume is made"),
    "disks[-]": FieldPolicy(Impact.LIVE, "detach; the volume is kept unless deletePolicy: delete"),
    "disks[].size": FieldPolicy(Impact.LIVE, "grow the volume (blockResize while running); never "
                                "shrunk"),
    "disks[].bus": FieldPolicy(Impact.NEXT_BOOT, "disk bus"),
    "interfaces[+]": FieldPolicy(Impact.LIVE, "attach NIC (hot-plug)"),
    "interfaces[-]": FieldPolicy(Impact.LIVE, "detach NIC"),
    "interfaces[].model": FieldPolicy(Impact.NEXT_BOOT, "NIC model"),
    "interfaces[].network": FieldPolicy(Impact.NEXT_BOOT, "NIC network"),
    "interfaces[].bootRom": FieldPolicy(Impact.NEXT_BOOT, "NIC boot ROM"),
    "interfaces[].mac": FieldPolicy(Impact.LIVE, "a new MAC is a new NIC: detach + attach"),
    "graphics": FieldPolicy(Impact.NEXT_BOOT, "graphics console"),
    "autostart": FieldPolicy(Impact.LIVE, "setAutostart"),
    "state": FieldPolicy(Impact.LIVE, "start, shutdown (then destroy after shutdownTimeout), "
                         "suspend, resume"),
}

NETWORK_FIELDS: dict[str, FieldPolicy] = {
    "ipv4.dhcp.hosts": FieldPolicy(Impact.LIVE, "networkUpdate (static leases)"),
    "ipv4.dhcp.range": FieldPolicy(Impact.LIVE, "networkUpdate (delete + add range)"),
    "ipv4.address": FieldPolicy(Impact.RECREATE, "restart the network; guests' NICs re-plugged"),
    "mode": FieldPolicy(Impact.RECREATE, "forward mode"),
    "bridge": FieldPolicy(Impact.RECREATE, "bridge device"),
    "forwardDev": FieldPolicy(Impact.RECREATE, "forward device"),
    "mtu": FieldPolicy(Impact.RECREATE, "MTU"),
    "domain": FieldPolicy(Impact.RECREATE, "DNS domain"),
    "autostart": FieldPolicy(Impact.LIVE, "setAutostart"),
    "active": FieldPolicy(Impact.LIVE, "start the network; guests' NICs re-plugged"),
}

POOL_FIELDS: dict[str, FieldPolicy] = {
    "path": FieldPolicy(Impact.RECREATE, "refused: a pool's volumes would be left behind"),
    "autostart": FieldPolicy(Impact.LIVE, "setAutostart"),
    "active": FieldPolicy(Impact.LIVE, "start the pool"),
}


def guest_impact(field: str) -> Impact:
    return GUEST_FIELDS[field].impact
