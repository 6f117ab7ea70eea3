"""`make demo`: validate, plan, apply, re-plan and drift examples/quickstart on the
libvirt test driver (an in-process fake hypervisor: no daemon, no root).

The steps run in one process because the test driver keeps its state only for
the life of its connection; virtsync reuses one connection per host.
"""

from __future__ import annotations

import sys
from pathlib import Path

from controller.cli import main

ROOT = Path(__file__).resolve().parent.parent
SPECS = str(ROOT / "examples" / "quickstart")
URI = f"test://{ROOT / 'examples' / 'testdriver' / 'host.xml'}"

STEPS: list[tuple[str, list[str], int]] = [
    ("validate the specs", ["validate", SPECS], 0),
    ("plan: everything is to be created", ["plan", SPECS, "--connect", URI], 2),
    ("apply", ["apply", SPECS, "--connect", URI, "--yes"], 0),
    ("plan again: nothing to do", ["plan", SPECS, "--connect", URI], 0),
    ("drift report", ["drift", SPECS, "--connect", URI], 0),
]


def run() -> int:
    for title, argv, expected in STEPS:
        print(f"\n\x1b[1m$ virtsync {' '.join(a if a != SPECS else 'examples/quickstart' for a in argv)}"
              f"\x1b[0m   # {title}", flush=True)
        code = main(argv)
        sys.stdout.flush()
        if code != expected:
            print(f"demo: step '{title}' exited {code}, expected {expected}", file=sys.stderr)
            return 1
    print("\ndemo: done. Point a Host's uri at qemu:///system to manage a real host.")
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
