"""Backup policies, the pure core: when to back up a guest, full or incremental, which chains to keep.

No I/O and no clock: time is always an argument. The adapter (runner.py, through
controller/hypervisor/backups.py) reads each guest's manifests and checkpoints into
``GuestBackups``, calls ``plan_pass`` and carries out the ``BackupDecision``s. The rules are in
the README's "Backups" section (tested in tests/unit/test_backup_retention.py).
"""

from controller.backups.manifest import MANIFEST_VERSION, DiskEntry, Manifest, ManifestError
from controller.backups.model import Backup, GuestBackups
from controller.backups.policies import BackupDecision, plan_pass, policies_for
from controller.backups.retention import ChainRetention, plan_chain_retention

__all__ = [
    "MANIFEST_VERSION",
    "Backup",
    "BackupDecision",
    "ChainRetention",
    "DiskEntry",
    "GuestBackups",
    "Manifest",
    "ManifestError",
    "plan_chain_retention",
    "plan_pass",
    "policies_for",
]
