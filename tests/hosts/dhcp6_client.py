"""A minimal DHCPv6 client, run in a network namespace of its own on one end of a veth.

Usage: python3 dhcp6_client.py IFACE MAC [SECONDS]. Waits for IFACE to be moved into its
namespace, brings it up, sends DHCPv6 SOLICITs (RFC 8415) from its link-local address and
prints one JSON line: the address the first ADVERTISE offers (IA_NA/IAADDR), the server's
DUID, and the routes router advertisements gave the interface (``proto ra``). Only the
standard library: the test hosts have no DHCPv6 client installed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time

SOLICIT, ADVERTISE = 1, 2
OPT_CLIENTID, OPT_SERVERID, OPT_IA_NA, OPT_IAADDR, OPT_ELAPSED = 1, 2, 3, 5, 8


def _options(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    while len(data) >= 4:
        code, length = struct.unpack("!HH", data[:4])
        out.append((code, data[4:4 + length]))
        data = data[4 + length:]
    return out


def solicit(xid: bytes, mac: bytes, elapsed: int) -> bytes:
    duid = struct.pack("!HH", 3, 1) + mac  # DUID-LL, Ethernet
    ia_na = struct.pack("!III", 1, 0, 0)  # IAID 1, T1/T2 left to the server
    body = b"".join(struct.pack("!HH", code, len(v)) + v for code, v in (
        (OPT_CLIENTID, duid), (OPT_ELAPSED, struct.pack("!H", min(elapsed, 0xFFFF))), (OPT_IA_NA, ia_na)))
    return bytes([SOLICIT]) + xid + body


def offered(reply: bytes, xid: bytes) -> tuple[str, str] | None:
    """(address, server DUID hex) of an ADVERTISE answering ``xid``."""
    if len(reply) < 4 or reply[0] != ADVERTISE or reply[1:4] != xid:
        return None
    opts = dict(_options(reply[4:]))
    ia = opts.get(OPT_IA_NA)
    if ia is None or len(ia) < 12:
        return None
    for code, value in _options(ia[12:]):
        if code == OPT_IAADDR and len(value) >= 24:
            return str(ipaddress.IPv6Address(value[:16])), opts.get(OPT_SERVERID, b"").hex()
    return None


def _wait_for(iface: str, deadline: float) -> int:
    while True:
        try:
            return socket.if_nametoindex(iface)
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{iface} never appeared in this namespace") from None
            time.sleep(0.05)


def _ip(*argv: str) -> str:
    return subprocess.run(["ip", *argv], capture_output=True, text=True, check=True).stdout


def main() -> None:
    iface, mac_text = sys.argv[1], sys.argv[2]
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 20
    deadline = time.monotonic() + seconds
    index = _wait_for(iface, deadline)
    with open(f"/proc/sys/net/ipv6/conf/{iface}/accept_dad", "w") as f:
        f.write("0")  # the link-local address is usable at once
    _ip("link", "set", "lo", "up")
    _ip("link", "set", iface, "address", mac_text, "up")
    while "fe80" not in _ip("-6", "addr", "show", "dev", iface):
        if time.monotonic() > deadline:
            raise SystemExit(f"{iface} got no link-local address")
        time.sleep(0.05)
    mac = bytes.fromhex(mac_text.replace(":", ""))
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
    sock.bind(("::", 546))
    xid = os.urandom(3)
    start = time.monotonic()
    got: tuple[str, str] | None = None
    while got is None and time.monotonic() < deadline:
        elapsed = int((time.monotonic() - start) * 100)  # hundredths of a second
        sock.sendto(solicit(xid, mac, elapsed), ("ff02::1:2", 547, 0, index))
        ready, _, _ = select.select([sock], [], [], 1.0)
        if ready:
            got = offered(sock.recv(4096), xid)
    ra: list[str] = []
    while got is not None and not ra and time.monotonic() < deadline:
        ra = [r for r in _ip("-6", "route", "show", "dev", iface).splitlines() if "proto ra" in r]
        if not ra:
            time.sleep(0.2)
    print(json.dumps({"address": got[0] if got else None, "server": got[1] if got else None, "ra_routes": ra}))


if __name__ == "__main__":
    main()
