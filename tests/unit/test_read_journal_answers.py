"""What of a libvirt answer the no-op memo compares: all of it, but what changes between calls
that virtsync never reads (a lease's expiry time, the CPU's current MHz)."""

from __future__ import annotations

from controller.hypervisor.read_journal import answer_text


def _lease(mac: str, ip: str, expiry: int) -> dict[str, object]:
    return {"iface": "virbr0", "expirytime": expiry, "type": 0, "mac": mac, "iaid": None,
            "ipaddr": ip, "prefix": 24, "hostname": None, "clientid": "01:" + mac}


def test_a_renewed_lease_is_the_same_answer_and_a_new_address_is_not() -> None:
    before = [_lease("52:54:00:00:00:01", "192.168.122.10", 1000), _lease("52:54:00:00:00:02", "192.168.122.11", 1001)]
    renewed = [_lease("52:54:00:00:00:02", "192.168.122.11", 2001), _lease("52:54:00:00:00:01", "192.168.122.10", 2000)]
    moved = [_lease("52:54:00:00:00:01", "192.168.122.12", 1000), _lease("52:54:00:00:00:02", "192.168.122.11", 1001)]
    text = answer_text("DHCPLeases", before, [])
    assert answer_text("DHCPLeases", renewed, []) == text  # expiry moved on, order differs
    assert answer_text("DHCPLeases", moved, []) != text
    assert answer_text("DHCPLeases", before[:1], []) != text  # a lease gone


def test_node_info_is_compared_without_the_current_mhz_only() -> None:
    info = ["x86_64", 24000, 2, 2000, 1, 1, 2, 1]
    assert answer_text("getInfo", [*info[:3], 2400, *info[4:]], []) == answer_text("getInfo", info, [])
    assert answer_text("getInfo", [info[0], 32000, *info[2:]], []) != answer_text("getInfo", info, [])


def test_other_answers_are_compared_whole() -> None:
    assert answer_text("XMLDesc", "<domain/>", []) != answer_text("XMLDesc", "<domain type='kvm'/>", [])
