"""`virtsync explain FIELD`: from the field registry, what a field maps to in libvirt XML, how a
change lands (impact, live call) and an example written by the field's own writer."""

from __future__ import annotations

import pytest

from controller.cli import main
from controller.explain import entries, example, find, render


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_explain_memory_names_its_xml_its_impact_and_its_live_call(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "explain", "memory")
    assert code == 0
    assert out.startswith("Guest.memory  (/spec/memory)")
    assert "impact: live (depends on the case" in out
    assert "setMemoryFlags" in out and "libvirt XML: /domain/currentMemory" in out
    assert "memory: 128MiB" in out and '<currentMemory unit="KiB">131072</currentMemory>' in out
    assert "memory: 192MiB" in out and '<currentMemory unit="KiB">196608</currentMemory>' in out


def test_explain_a_disk_field_shows_the_xml_its_writer_writes(capsys: pytest.CaptureFixture[str]) -> None:
    for spelling in ("Guest.disks.cache", "disks.cache", "/spec/disks/0/cache", "guest.disks[0].cache"):
        code, out, _ = _run(capsys, "explain", spelling)
        assert code == 0, spelling
        assert out.startswith("Guest.disks.cache  (/spec/disks/N/cache)"), out
        assert "impact: next boot" in out
        assert 'cache="none"' in out and 'cache="writeback"' in out, out


def test_explain_a_live_disk_and_nic_field_names_the_planned_live_call() -> None:
    (iotune,) = find("disks.iotune")
    ex = example(iotune)
    assert ex is not None and ex.impact_running == "live" and ex.live_calls == ("blkiotune",)
    (bandwidth,) = find("interfaces.bandwidth")
    ex = example(bandwidth)
    assert ex is not None and ex.live_calls == ("domiftune",)
    assert "live call: domiftune" in render(bandwidth)


def test_explain_network_ipv4_and_its_dhcp_range(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "explain", "Network.ipv4")
    assert code == 0 and "holds address, dhcp and dhcp.hosts" in out
    code, out, _ = _run(capsys, "explain", "Network.ipv4.dhcp")
    assert code == 0 and "libvirt XML: /network/ip/dhcp/range" in out
    assert '<range start="192.168.150.10" end="192.168.150.99"/>' in out
    assert "on a running network: live; live call: networkUpdate (DHCP range)" in out


def test_explain_a_bare_name_inside_a_list_or_block_finds_the_field(capsys: pytest.CaptureFixture[str]) -> None:
    assert [e.title for e in find("cache")] == ["Guest.disks.cache"]
    assert [e.title for e in find("hosts")] == ["Network.ipv4.dhcp.hosts", "Network.dns.hosts"]
    assert [e.title for e in find("bridge")] == ["Network.bridge"], "a kind's own field comes first"
    code, out, _ = _run(capsys, "explain", "linkState")
    assert code == 0 and out.startswith("Guest.interfaces.linkState")


def test_explain_a_name_of_several_kinds_explains_each(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "explain", "autostart")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines() if line and not line.startswith(" ")] == [
        "Guest.autostart", "Network.autostart", "StoragePool.autostart"]
    code, out, _ = _run(capsys, "explain", "StoragePool.autostart")
    assert code == 0 and out.count("autostart  (") == 1


def test_explain_unknown_field_exits_64_with_close_matches(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "explain", "memroy")
    assert code == 64 and out == ""
    assert "unknown field 'memroy'" in err and "did you mean memory, maxMemory" in err
    code, _, err = _run(capsys, "explain", "Guest.disk.cache")
    assert code == 64 and "Guest.disks.cache" in err
    code, _, err = _run(capsys, "explain")
    assert code == 64 and "name a field" in err


def test_every_registry_field_can_be_explained_and_listed(capsys: pytest.CaptureFixture[str]) -> None:
    code, listed, _ = _run(capsys, "explain", "--list")
    assert code == 0
    all_entries = entries()
    assert len(listed.splitlines()) == len(all_entries)
    for e in all_entries:
        assert find(e.title) == [e], e.title
        text = render(e)
        assert text.startswith(f"{e.title}  ("), text
        if e.field is not None and not e.field.planned_by and len(e.field.samples) >= 2:
            assert "example (the registry's samples" in text, text
