"""load_specs(): files → validated spec set, and every whole-set check at file:line:column."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.errors import Diagnostic, SpecError
from controller.spec.loader import LoadResult, find_spec_files, load_specs
from controller.spec.models import Guest, Host, Network, SnapshotPolicy, StoragePool
from controller.spec.yaml_reader import Limits

pytestmark = pytest.mark.timeout(10)


def host(name: str = "h1", uri: str = "qemu:///system", extra: str = "") -> str:
    head = f"apiVersion: virtsync/v1\nkind: Host\nmetadata:\n  name: {name}\n"
    return f"{head}spec:\n  uri: {uri}\n{extra}"


def network(name: str = "lan", host: str = "h1", body: str = "") -> str:
    head = f"apiVersion: virtsync/v1\nkind: Network\nmetadata:\n  name: {name}\n"
    return f"{head}spec:\n  host: {host}\n{body}"


def pool(name: str = "images", host: str = "h1", path: str = "/var/lib/libvirt/images") -> str:
    return (f"apiVersion: virtsync/v1\nkind: StoragePool\nmetadata:\n  name: {name}\nspec:\n"
            f"  host: {host}\n  path: {path}\n")


def guest(name: str = "g1", host: str = "h1", body: str = "", labels: str = "") -> str:
    meta = f"  labels: {labels}\n" if labels else ""
    return (f"apiVersion: virtsync/v1\nkind: Guest\nmetadata:\n  name: {name}\n{meta}spec:\n"
            f"  host: {host}\n{body}")


def policy(name: str = "nightly", labels: str = "{app: web}") -> str:
    return (f"apiVersion: virtsync/v1\nkind: SnapshotPolicy\nmetadata:\n  name: {name}\nspec:\n"
            f"  selector:\n    matchLabels: {labels}\n  schedule: \"0 3 * * *\"\n")


def subnet(cidr: str = "192.168.150.1/24", dhcp: str = "") -> str:
    return f"  ipv4:\n    address: {cidr}\n{dhcp}"


def write(path: Path, *docs: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("---\n".join(docs), encoding="utf-8")
    return path


def pos(path: Path, needle: str, nth: int = 1) -> tuple[int, int]:
    """Line and column (1-based) of the nth occurrence of ``needle`` in the file."""
    text = path.read_text(encoding="utf-8")
    at = -1
    for _ in range(nth):
        at = text.index(needle, at + 1)
    line = text.count("\n", 0, at) + 1
    return line, at - (text.rfind("\n", 0, at) + 1) + 1


def errors(result: LoadResult) -> list[Diagnostic]:
    return result.errors


def only_error(result: LoadResult) -> Diagnostic:
    assert len(result.errors) == 1, [d.render() for d in result.diagnostics]
    return result.errors[0]


# ------------------------------------------------------------- valid sets


HOMELAB = (
    host(extra="  storage:\n    allowedDirs: [/var/lib/libvirt/images, /srv/vm]\n"),
    host("x1", "xen:///system"),
    network(
        body=subnet(
            dhcp="    dhcp:\n      start: 192.168.150.100\n      end: 192.168.150.200\n"
            "      hosts:\n        - {mac: '52:54:00:00:00:10', ip: 192.168.150.10,"
            " name: web}\n"
        )
    ),
    network("lan", "x1", subnet("10.0.0.1/24")),  # the same name on another host is fine
    pool(),
    pool("images", "x1"),
    guest(
        body="  memory: 2GiB\n  maxMemory: 4GiB\n  disks:\n    - {name: root, pool: images, "
        "size: 20GiB, from: debian-12}\n    - {name: data, path: /srv/vm/data.raw, "
        "format: raw}\n  interfaces:\n    - {network: lan, mac: '52:54:00:00:00:10'}\n"
        "  ignore: [/spec/memory]\n",
        labels="{app: web}",
    ),
    guest(
        "pv1",
        "x1",
        "  xen: {mode: pv}\n  disks:\n    - {name: root, pool: images, size: 8GiB,"
        " bus: xen}\n  interfaces:\n    - {network: lan, model: netfront}\n",
    ),
    policy(),
)


def test_valid_set_loads_with_every_kind(tmp_path: Path) -> None:
    write(tmp_path / "lab.yaml", *HOMELAB)
    result = load_specs([tmp_path])
    assert result.diagnostics == []
    specs = result.raise_for_errors()
    assert [h.metadata.name for h in specs.hosts] == ["h1", "x1"]
    assert len(specs.networks) == 2 and len(specs.pools) == 2 and len(specs.guests) == 2
    assert specs.policies[0].spec.schedule.cron == "0 3 * * *"
    g1 = specs.guests[0]
    assert g1.spec.memory == 2 * 1024**3
    assert g1.spec.interfaces[0].mac == "52:54:00:00:00:10"
    kinds = [type(i.obj) for i in specs.items]
    assert kinds == [Host, Host, Network, Network, StoragePool, StoragePool, Guest, Guest,
                     SnapshotPolicy]
    assert all(i.file == str(tmp_path / "lab.yaml") for i in specs.items)


def test_objects_may_refer_to_objects_in_other_files(tmp_path: Path) -> None:
    write(tmp_path / "hosts" / "h1.yaml", host(), pool())
    write(tmp_path / "nets.yml", network(body=subnet()))
    write(tmp_path / "guests" / "web" / "g1.yaml",
          guest(body="  interfaces:\n    - network: lan\n  disks:\n    - {name: r, pool: images, "
                     "size: 1GiB}\n"))
    result = load_specs([tmp_path])
    assert result.errors == []
    assert len(result.specs.items) == 4


def test_empty_documents_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("---\n" + host() + "---\n---\n# nothing\n")
    result = load_specs([path])
    assert result.diagnostics == []
    assert len(result.specs.hosts) == 1


def test_selector_that_matches_no_guest_is_only_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yaml", host(), guest(labels="{app: db}"), policy())
    result = load_specs([path])
    assert result.errors == []
    (warning,) = result.diagnostics
    assert warning.severity == "warning"
    assert "matches no guest" in warning.message
    assert (warning.line, warning.column) == pos(path, "matchLabels")
    assert result.raise_for_errors() is result.specs


def test_raise_for_errors_carries_every_diagnostic(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yaml", host(), host())
    result = load_specs([path])
    with pytest.raises(SpecError) as info:
        result.raise_for_errors()
    assert info.value.diagnostics == result.diagnostics
    assert str(info.value).startswith(f"{path}:")


# ----------------------------------------------------------- whole-set checks

# (documents, needle locating the error (nth occurrence), message substring)
CHECKS = {
    "duplicate-host": (
        [host(), host()],
        ("h1", 2),
        "duplicate Host 'h1' (also defined at {file}:4)",
    ),
    "duplicate-network-on-host": (
        [host(), network(body=subnet()), network(body=subnet("10.1.0.1/24"))],
        ("lan", 2),
        "duplicate Network 'lan' on host 'h1' (also defined at {file}:",
    ),
    "duplicate-pool-on-host": (
        [host(), pool(), pool()],
        ("images", 3),
        "duplicate StoragePool 'images' on host 'h1'",
    ),
    "duplicate-guest": ([host(), guest(), guest()], ("g1", 2), "duplicate Guest 'g1'"),
    "duplicate-policy": (
        [host(), guest(labels="{app: web}"), policy(), policy()],
        ("nightly", 2),
        "duplicate SnapshotPolicy 'nightly'",
    ),
    "uri-without-scheme": (
        [host(uri="/var/run/libvirt")],
        ("/var/run/libvirt", 1),
        "is not a libvirt URI",
    ),
    "xen-uri-with-other-hypervisor": (
        [host(uri="xen:///system", extra="  hypervisor: qemu\n")],
        ("qemu\n", 1),
        "hypervisor qemu does not match the Xen URI",
    ),
    "allowed-dir-with-dotdot": (
        [host(extra="  storage:\n    allowedDirs:\n      - /srv\n      - /srv/../etc\n")],
        ("/srv/../etc", 1),
        "'/srv/../etc' must be an absolute path without '..'",
    ),
    "network-unknown-host": (
        [host(), network(host="h2")],
        ("h2", 1),
        "unknown host 'h2' (hosts: h1)",
    ),
    "pool-unknown-host-none-defined": (
        [pool(host="h2")],
        ("h2", 1),
        "unknown host 'h2' (hosts: none defined)",
    ),
    "guest-unknown-host": (
        [host(), host("h0"), guest(host="h3")],
        ("h3", 1),
        "unknown host 'h3' (hosts: h0, h1)",
    ),
    "guest-network-of-another-host": (
        [host(), host("h2"), network(host="h2"), guest(body="  interfaces:\n    - network: lan\n")],
        ("lan\n", 2),
        "network 'lan' is declared on host 'h2', not on host 'h1': networks and storage pools belong to one host",
    ),
    "guest-pool-of-another-host": (
        [
            host(),
            host("h2"),
            pool(host="h2"),
            guest(body="  disks:\n    - {name: root, pool: images, size: 1GiB}\n"),
        ],
        ("images, size", 1),
        "storage pool 'images' is declared on host 'h2', not on host 'h1'",
    ),
    "bridge-used-twice": (
        [host(), network(body="  bridge: virbr9\n"), network("lan2", body="  bridge: virbr9\n")],
        ("virbr9", 2),
        "bridge 'virbr9' is already used by network 'lan'",
    ),
    "subnets-overlap": (
        [host(), network(body=subnet("10.0.0.1/16")), network("lan2", body=subnet("10.0.5.1/24"))],
        ("10.0.5.1/24", 1),
        "subnet 10.0.5.0/24 overlaps network 'lan' (10.0.0.0/16)",
    ),
    "dhcp-start-outside-subnet": (
        [
            host(),
            network(
                body=subnet(
                    "192.168.150.254/24", "    dhcp: {start: 10.9.9.9, end: 192.168.150.20}\n"
                )
            ),
        ],
        ("10.9.9.9", 1),
        "DHCP range start 10.9.9.9 is not a usable address of 192.168.150.0/24",
    ),
    "dhcp-end-is-broadcast": (
        [
            host(),
            network(
                body=subnet(
                    dhcp="    dhcp:\n      start: 192.168.150.2\n      end: 192.168.150.255\n"
                )
            ),
        ],
        ("192.168.150.255", 1),
        "DHCP range end 192.168.150.255 is not a usable address",
    ),
    "dhcp-start-after-end": (
        [
            host(),
            network(body=subnet(dhcp="    dhcp: {start: 192.168.150.9, end: 192.168.150.5}\n")),
        ],
        ("192.168.150.9", 1),
        "DHCP range start 192.168.150.9 is after its end 192.168.150.5",
    ),
    "dhcp-range-includes-host": (
        [
            host(),
            network(
                body=subnet(
                    "192.168.150.50/24", "    dhcp: {start: 192.168.150.2, end: 192.168.150.99}\n"
                )
            ),
        ],
        ("192.168.150.2,", 1),
        "includes the host's own address 192.168.150.50",
    ),
    "static-lease-outside-subnet": (
        [
            host(),
            network(
                body=subnet(
                    dhcp="    dhcp:\n      start: 192.168.150.100\n"
                    "      end: 192.168.150.200\n      hosts:\n"
                    "        - {mac: '52:54:00:00:00:01', ip: 10.0.0.7}\n"
                )
            ),
        ],
        ("10.0.0.7", 1),
        "static lease 10.0.0.7 is not a usable guest address of 192.168.150.0/24",
    ),
    "static-lease-is-host-address": (
        [
            host(),
            network(
                body=subnet(
                    dhcp="    dhcp:\n      start: 192.168.150.100\n"
                    "      end: 192.168.150.200\n      hosts:\n"
                    "        - {mac: '52:54:00:00:00:01', ip: 192.168.150.1}\n"
                )
            ),
        ],
        ("192.168.150.1}", 1),
        "static lease 192.168.150.1 is not a usable guest address",
    ),
    "static-lease-ip-reused": (
        [
            host(),
            network(
                body=subnet(
                    dhcp="    dhcp:\n      start: 192.168.150.100\n"
                    "      end: 192.168.150.200\n      hosts:\n"
                    "        - {mac: '52:54:00:00:00:01', ip: 192.168.150.7}\n"
                    "        - {mac: '52:54:00:00:00:02', ip: 192.168.150.7}\n"
                )
            ),
        ],
        ("192.168.150.7", 2),
        "ip 192.168.150.7 is also used by static lease hosts[0]",
    ),
    "static-lease-mac-reused": (
        [
            host(),
            network(
                body=subnet(
                    dhcp="    dhcp:\n      start: 192.168.150.100\n"
                    "      end: 192.168.150.200\n      hosts:\n"
                    "        - {mac: '52:54:00:00:00:01', ip: 192.168.150.7}\n"
                    "        - {mac: '52:54:00:00:00:01', ip: 192.168.150.8}\n"
                )
            ),
        ],
        ("'52:54:00:00:00:01'", 2),
        "mac 52:54:00:00:00:01 is also used by static lease hosts[0]",
    ),
    "static-lease-name-reused": (
        [
            host(),
            network(
                body=subnet(
                    dhcp="    dhcp:\n      start: 192.168.150.100\n"
                    "      end: 192.168.150.200\n      hosts:\n"
                    "        - {mac: '52:54:00:00:00:01', ip: 192.168.150.7,"
                    " name: web}\n        - {mac: '52:54:00:00:00:02', "
                    "ip: 192.168.150.8, name: web}\n"
                )
            ),
        ],
        ("web", 2),
        "name web is also used by static lease hosts[0]",
    ),
    "guest-mac-reused-on-host": (
        [
            host(),
            network(body=subnet()),
            network("lan2", body=subnet("10.0.0.1/24")),
            guest(body="  interfaces:\n    - {network: lan, mac: '52:54:00:AA:00:01'}\n"),
            guest("g2", body="  interfaces:\n    - {network: lan2, mac: '52:54:00:aa:00:01'}\n"),
        ],
        ("'52:54:00:aa:00:01'", 1),
        "MAC 52:54:00:aa:00:01 is also used by guest 'g1' (interfaces[0])",
    ),
    "pool-path-outside-allowed-dirs": (
        [host(), pool(path="/var/lib/libvirt/imagesX")],
        ("/var/lib/libvirt/imagesX", 1),
        "'/var/lib/libvirt/imagesX' is outside the host's allowed directories",
    ),
    "pool-path-is-system-path": (
        [host(extra="  storage:\n    allowedDirs: [/]\n"), pool(path="/proc/self")],
        ("/proc/self", 1),
        "'/proc/self' is a device or system path",
    ),
    "xen-options-on-kvm-host": (
        [host(extra="  hypervisor: kvm\n"), guest(body="  xen:\n    mode: hvm\n")],
        ("mode: hvm", 1),
        "'xen' applies only to guests of Xen hosts; host 'h1' is not one",
    ),
    "netfront-on-kvm-host": (
        [host(), network(), guest(body="  interfaces:\n    - {network: lan, model: netfront}\n")],
        ("netfront", 1),
        "model netfront exists only on Xen hosts",
    ),
    "xen-bus-on-kvm-host": (
        [
            host(),
            pool(),
            guest(body="  disks:\n    - {name: r, pool: images, size: 1GiB, bus: xen}\n"),
        ],
        ("xen}", 1),
        "bus xen exists only on Xen hosts",
    ),
    "disk-path-outside-allowed-dirs": (
        [host(), guest(body="  disks:\n    - {name: r, path: /etc/shadow}\n")],
        ("/etc/shadow", 1),
        "'/etc/shadow' is outside the host's allowed directories",
    ),
    "disk-path-with-dotdot": (
        [host(), guest(body="  disks:\n    - {name: r, path: /var/lib/libvirt/images/../x}\n")],
        ("/var/lib/libvirt/images/..", 1),
        "contains '..'",
    ),
    "disk-path-is-a-device": (
        [
            host(extra="  storage:\n    allowedDirs: [/dev]\n"),
            guest(body="  disks:\n    - {name: r, path: /dev/sda, format: raw}\n"),
        ],
        ("/dev/sda", 1),
        "'/dev/sda' is a device or system path",
    ),
    "disk-from-file-outside-allowed-dirs": (
        [
            host(),
            pool(),
            guest(body="  disks:\n    - {name: r, pool: images, from: ./base.qcow2}\n"),
        ],
        ("./base.qcow2", 1),
        "'./base.qcow2' is not an absolute path",
    ),
    "boot-initrd-outside-allowed-dirs": (
        [
            host(),
            guest(
                body="  boot:\n    kernel: /var/lib/libvirt/images/vmlinuz\n"
                "    initrd: /boot/initrd.img\n"
            ),
        ],
        ("/boot/initrd.img", 1),
        "'/boot/initrd.img' is outside the host's allowed directories",
    ),
    "ignore-pointer-to-unknown-field": (
        [host(), guest(body="  ignore: [/spec/memory, /spec/colour/x]\n")],
        ("/spec/colour", 1),
        "ignore '/spec/colour/x': /spec/colour is not a Guest field",
    ),
}


@pytest.mark.parametrize("case", list(CHECKS))
def test_whole_set_check_points_at_the_offending_value(tmp_path: Path, case: str) -> None:
    docs, (needle, nth), message = CHECKS[case]
    path = write(tmp_path / "set.yaml", *docs)
    diag = only_error(load_specs([path]))
    assert diag.file == str(path)
    assert message.format(file=path) in diag.message
    assert (diag.line, diag.column) == pos(path, needle, nth), diag.render()


def test_duplicate_names_across_files_name_the_first_file(tmp_path: Path) -> None:
    first = write(tmp_path / "a.yaml", host())
    second = write(tmp_path / "b.yaml", host(uri="test:///default"))
    diag = only_error(load_specs([tmp_path]))
    assert diag.file == str(second)
    assert diag.message == f"duplicate Host 'h1' (also defined at {first}:4)"


def test_same_network_name_on_two_hosts_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yaml", host(), host("h2"), network(), network(host="h2"), pool(),
                 pool(host="h2"))
    assert load_specs([path]).diagnostics == []


def test_xen_fields_are_fine_on_a_xen_host(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yaml", host(uri="qemu:///system", extra="  hypervisor: xen\n"),
                 network(), guest(body="  xen: {mode: hvm}\n  interfaces:\n"
                                       "    - {network: lan, model: netfront}\n"))
    assert load_specs([path]).diagnostics == []


def test_disk_from_a_volume_name_is_not_a_path(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.yaml",
        host(),
        pool(),
        guest(body="  disks:\n    - {name: r, pool: images, from: debian-12.qcow2}\n"),
    )
    assert load_specs([path]).diagnostics == []


# ------------------------------------------------------------------ symlinks


def _symlink_set(tmp_path: Path, uri: str) -> tuple[Path, Path]:
    images = tmp_path / "images"
    images.mkdir()
    outside = tmp_path / "secret.img"
    outside.write_bytes(b"")
    (images / "escape.img").symlink_to(outside)
    (images / "inside.img").write_bytes(b"")
    path = write(tmp_path / "specs" / "a.yaml",
                 host(uri=uri, extra=f"  storage:\n    allowedDirs: [{images}]\n"),
                 guest(body=f"  disks:\n    - {{name: a, path: {images}/inside.img}}\n"
                            f"    - {{name: b, path: {images}/escape.img}}\n"))
    return path, images


def test_symlink_escaping_the_allowed_dirs_of_a_local_host_is_refused(tmp_path: Path) -> None:
    path, images = _symlink_set(tmp_path, "qemu:///system")
    diag = only_error(load_specs([path]))
    assert diag.message == (
        f"'{images}/escape.img' resolves through a symlink to "
        f"'{tmp_path}/secret.img', outside the allowed directories (spec.storage.allowedDirs of Host 'h1')"
    )
    assert (diag.line, diag.column) == pos(path, f"{images}/escape.img")


def test_symlinks_are_not_followed_for_remote_hosts(tmp_path: Path) -> None:
    # The paths live on the remote machine; the local file system says nothing about them.
    path, _ = _symlink_set(tmp_path, "qemu+ssh://root@far.example/system")
    assert load_specs([path]).diagnostics == []


def test_allowed_dir_that_is_itself_a_symlink_still_contains_its_files(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "disk.img").write_bytes(b"")
    (tmp_path / "images").symlink_to(real)
    path = write(
        tmp_path / "specs" / "a.yaml",
        host(extra=f"  storage:\n    allowedDirs: [{tmp_path}/images]\n"),
        guest(body=f"  disks:\n    - {{name: a, path: {tmp_path}/images/disk.img}}\n"),
    )
    assert load_specs([path]).diagnostics == []


# ------------------------------------------------------ field-level errors


def test_model_level_errors_point_at_the_field_they_are_about(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yaml", host(), guest(body="  memory: 4GiB\n  maxMemory: 1GiB\n"))
    diag = only_error(load_specs([path]))
    assert diag.message == "spec.maxMemory: maxMemory 1GiB is smaller than memory 4GiB"
    assert (diag.line, diag.column) == pos(path, "1GiB")


def test_unknown_field_points_at_the_key_with_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yaml", host(), guest(body="  vcpu: 2\n"))
    diag = only_error(load_specs([path]))
    assert diag.message == "unknown field 'vcpu' in spec; did you mean 'vcpus'?"
    assert (diag.line, diag.column) == pos(path, "vcpu:")


def test_every_field_error_of_a_document_is_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.yaml",
        host(),
        guest(body="  vcpus: 0\n  memory: 512\n  state: up\n  colour: red\n"),
    )
    result = load_specs([path])
    assert [(d.line, d.message.split(":")[0]) for d in result.errors] == [
        (pos(path, "vcpus")[0], "spec.vcpus"),
        (pos(path, "memory")[0], "spec.memory"),
        (pos(path, "state")[0], "spec.state"),
        (pos(path, "colour")[0], "unknown field 'colour' in spec (allowed"),
    ]


def test_a_bad_document_does_not_hide_the_others(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yaml", host(), guest(body="  vcpus: x\n"),
                 guest("g2", host="h9"))
    result = load_specs([path])
    assert [d.line for d in result.errors] == [pos(path, "vcpus: x")[0], pos(path, "h9")[0]]


def test_long_messages_are_clipped_to_one_short_line(tmp_path: Path) -> None:
    relative = "srv/" + "d" * 5000 + "\\n/x"  # \n: a newline in the double-quoted YAML
    path = write(tmp_path / "a.yaml", host(extra=f'  storage:\n    allowedDirs: ["{relative}"]\n'))
    diag = only_error(load_specs([path]))
    assert len(diag.message) <= 300 and "\n" not in diag.message
    assert diag.message.startswith("'srv/ddd") and " […] " in diag.message
    assert diag.message.endswith("\\n/x' must be an absolute path without '..'")


# --------------------------------------------------------- files and runs


def test_errors_of_several_files_are_reported_together_in_order(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", host(), guest(body="  vcpus: 0\n"))
    b = write(tmp_path / "sub" / "b.yml", "kind: Host\n")
    c = write(tmp_path / "c.yaml", "a: [\n")
    d = write(tmp_path / "d.yaml", network(host="nowhere"))
    result = load_specs([tmp_path])
    assert [(e.file, e.line) for e in result.errors] == [
        (str(a), pos(a, "vcpus")[0]),
        (str(c), 2),
        (str(d), pos(d, "nowhere")[0]),
        (str(b), 1),
    ]


def test_directories_are_searched_recursively_for_yaml_and_yml(tmp_path: Path) -> None:
    for rel in [
        "a.yaml",
        "b.yml",
        "x/c.yaml",
        "x/y/z/d.yml",
        "e.YAML.txt",
        "notes.md",
        "f.json",
        ".hidden.yaml",
        ".git/g.yaml",
        "x/.cache/h.yaml",
        "x/.y/i.yml",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(host(rel.replace("/", "-").replace(".", "-").strip("-")))
    files, problems = find_spec_files([tmp_path])
    assert problems == []
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        "a.yaml", "b.yml", "x/c.yaml", "x/y/z/d.yml"
    ]
    assert len(load_specs([tmp_path]).specs.hosts) == 4


def test_hidden_directory_named_explicitly_is_searched(tmp_path: Path) -> None:
    write(tmp_path / ".specs" / "a.yaml", host())
    files, _ = find_spec_files([tmp_path / ".specs"])
    assert [f.name for f in files] == ["a.yaml"]


def test_file_named_explicitly_is_read_whatever_its_suffix(tmp_path: Path) -> None:
    path = write(tmp_path / "host.txt", host())
    assert len(load_specs([path]).specs.hosts) == 1


def test_missing_path_is_an_error_and_the_rest_still_loads(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", host())
    missing = tmp_path / "nope.yaml"
    result = load_specs([tmp_path, missing])
    diag = only_error(result)
    assert (diag.file, diag.line, diag.column) == (str(missing), 1, 1)
    assert diag.message == "no such file or directory"
    assert len(result.specs.hosts) == 1


def test_directory_without_spec_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("nothing here")
    diag = only_error(load_specs([tmp_path]))
    assert diag.message == "no spec files (*.yaml, *.yml) found"


def test_dangling_symlink_in_a_directory_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", host())
    (tmp_path / "b.yaml").symlink_to(tmp_path / "gone.yaml")
    diag = only_error(load_specs([tmp_path]))
    assert (diag.file, diag.line, diag.column) == (str(tmp_path / "b.yaml"), 1, 1)
    assert diag.message == "cannot read: No such file or directory"


def test_size_limit_applies_per_file(tmp_path: Path) -> None:
    small = write(tmp_path / "a.yaml", host())
    big = write(tmp_path / "b.yaml", host("h2") + "  migrationAddress: " + "a" * 2000 + "\n")
    result = load_specs([tmp_path], Limits(max_file_bytes=1024))
    diag = only_error(result)
    assert diag.file == str(big) and (diag.line, diag.column) == (1, 1)
    assert diag.message.endswith("over the limit of 1024 (--max-file-size)")
    assert [h.metadata.name for h in result.specs.hosts] == ["h1"]
    assert small.stat().st_size < 1024


def test_document_numbers_count_every_document_of_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yaml", host(), "", "- just\n- a list\n")
    diag = only_error(load_specs([path]))
    assert diag.message.startswith("document 3 is not a mapping (got a list)")
    assert diag.line == pos(path, "- just")[0]


@pytest.mark.parametrize("policy_name", ["never", "onChange"])
def test_a_window_without_restart_policy_window_is_a_warning_at_the_window(
        tmp_path: Path, policy_name: str) -> None:
    body = f"  restartPolicy: {policy_name}\n  window:\n    schedule: \"0 3 * * 6\"\n"
    path = write(tmp_path / "a.yaml", host(), guest(body=body))
    result = load_specs([path])
    assert result.errors == []
    (warning,) = result.diagnostics
    assert warning.severity == "warning"
    assert warning.message == (f"'window' has no effect with restartPolicy {policy_name}: only "
                               "restartPolicy: window restarts inside it")
    assert (warning.line, warning.column) == pos(path, "window:")


def test_a_window_with_restart_policy_window_is_quiet(tmp_path: Path) -> None:
    body = "  restartPolicy: window\n  window:\n    schedule: \"0 3 * * 6\"\n"
    assert load_specs([write(tmp_path / "a.yaml", host(), guest(body=body))]).diagnostics == []


def test_an_object_with_a_field_error_still_has_its_references_checked(tmp_path: Path) -> None:
    body = "  vcpus: 0\n  interfaces:\n    - network: nowhere\n"
    path = write(tmp_path / "a.yaml", host(), guest(body=body), guest("g1"))
    result = load_specs([path])
    messages = sorted(d.message for d in result.errors)
    assert messages == [  # the duplicate is the second guest: the first is the invalid one
        "duplicate Guest 'g1' (also defined at " + f"{path}:{pos(path, 'name: g1')[0]})",
        "spec.vcpus: expected at least 1, got number 0",
        "unknown network 'nowhere' on host 'h1' (declare it as kind: Network; adopt: true takes over an "
        "existing one)",
    ]
    # The invalid guest is only checked, never part of the spec set.
    assert [g.spec.vcpus for g in result.specs.guests] == [1]


def test_an_invalid_required_field_leaves_nothing_else_to_check(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yaml", host(), guest(host="not a name!", body="  interfaces:\n    - network: x\n"))
    result = load_specs([path])
    assert len(result.errors) == 1
    assert "is not a valid name" in result.errors[0].message
