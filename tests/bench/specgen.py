"""Generates large, valid spec trees for benchmarks."""

from __future__ import annotations

from pathlib import Path


def write_tree(root: Path, *, guests: int, files: int, hosts: int, networks: int,
               uri: str = "test:///default") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    infra = []
    for h in range(hosts):
        infra.append(f"apiVersion: virtsync/v1\nkind: Host\nmetadata:\n  name: host{h}\n"
                     f"  labels: {{rack: r{h % 4}}}\nspec:\n  uri: {uri}\n")
        infra.append(f"apiVersion: virtsync/v1\nkind: StoragePool\nmetadata:\n  name: images\n"
                     f"spec:\n  host: host{h}\n  path: /var/lib/libvirt/images/pool{h}\n")
    for n in range(networks):
        h = n % hosts
        infra.append(
            f"apiVersion: virtsync/v1\nkind: Network\nmetadata:\n  name: net{n}\nspec:\n"
            f"  host: host{h}\n  mode: nat\n  ipv4:\n    address: 10.{n // 250}.{n % 250}.1/24\n"
            f"    dhcp: {{start: 10.{n // 250}.{n % 250}.10, end: 10.{n // 250}.{n % 250}.250}}\n"
        )
    (root / "infra.yaml").write_text("---\n".join(infra))
    per_file = guests // files
    nets_of_host = {h: [n for n in range(networks) if n % hosts == h] for h in range(hosts)}
    g = 0
    for f in range(files):
        docs = []
        for _ in range(per_file):
            h = g % hosts
            net = nets_of_host[h][g % len(nets_of_host[h])]
            docs.append(
                f"apiVersion: virtsync/v1\nkind: Guest\nmetadata:\n  name: guest{g}\n"
                f"  labels: {{tier: web, backup: nightly}}\nspec:\n  host: host{h}\n"
                f"  state: running\n  vcpus: 2\n  memory: 1GiB\n  maxMemory: 2GiB\n"
                f"  disks:\n    - name: root\n      size: 10GiB\n      pool: images\n"
                f"  interfaces:\n    - network: net{net}\n"
                f"      mac: \"52:54:00:{(g >> 16) & 255:02x}:{(g >> 8) & 255:02x}:{g & 255:02x}\"\n"
                f"  restartPolicy: onChange\n"
            )
            g += 1
        (root / f"guests-{f:03d}.yaml").write_text("---\n".join(docs))
    return root
