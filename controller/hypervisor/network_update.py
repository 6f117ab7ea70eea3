"""networkUpdate: one item of a network changed in its definition and/or while it runs.

The plan names each edit by command, section and target (plan/actions.py NetworkEdit); this
module is the one place they become libvirt's constants. What libvirt does to the running
network per section (libvirt 9.0's bridge driver): DHCP hosts and DNS hosts rewrite dnsmasq's
hosts files and SIGHUP it (same process); a DHCP range, SRV and TXT records are in dnsmasq's
config file, so libvirt restarts dnsmasq; port groups and forward interfaces touch no daemon.
In no case is the network (its bridge) restarted.
"""

from __future__ import annotations

import libvirt

from controller.hypervisor.errors import libvirt_call

COMMANDS: dict[str, int] = {
    "add": libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
    "delete": libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
    "modify": libvirt.VIR_NETWORK_UPDATE_COMMAND_MODIFY,
}
SECTIONS: dict[str, int] = {
    "host": libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
    "range": libvirt.VIR_NETWORK_SECTION_IP_DHCP_RANGE,
    "dns-host": libvirt.VIR_NETWORK_SECTION_DNS_HOST,
    "dns-srv": libvirt.VIR_NETWORK_SECTION_DNS_SRV,
    "dns-txt": libvirt.VIR_NETWORK_SECTION_DNS_TXT,
    "portgroup": libvirt.VIR_NETWORK_SECTION_PORTGROUP,
    "forward-interface": libvirt.VIR_NETWORK_SECTION_FORWARD_INTERFACE,
}
TARGETS: dict[str, int] = {
    "live": libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE,
    "config": libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG,
    "both": libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG,
}
# libvirt's sections that have no modify: a changed item is deleted and added (plan/networks.py)
NO_MODIFY = frozenset({"range", "dns-host", "dns-srv", "dns-txt", "forward-interface"})


def call_args(command: str, section: str, xml: str, target: str, parent: int = -1
              ) -> tuple[int, int, int, str, int]:
    """virNetwork.update's arguments: (command, section, parentIndex, xml, flags). For the DHCP
    sections parentIndex is the <ip> by position (the IPv6 one for a DHCPv6 range); -1 is the
    first IPv4 <ip>, and the other sections ignore it."""
    if command == "modify" and section in NO_MODIFY:
        raise ValueError(f"libvirt cannot modify a {section} in place: delete it and add it")
    return COMMANDS[command], SECTIONS[section], parent, xml, TARGETS[target]


def update(net: libvirt.virNetwork, host: str, command: str, section: str, xml: str, target: str,
           parent: int = -1) -> None:
    cmd, sec, parent, fragment, flags = call_args(command, section, xml, target, parent)
    with libvirt_call(host, f"update network {net.name()} ({command} {section}, {target})"):
        net.update(cmd, sec, parent, fragment, flags)
