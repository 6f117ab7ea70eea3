"""Snapshot policies, the pure core: when to snapshot a guest and which snapshots to keep.

No I/O and no clock: time is always an argument. The adapter observes each guest's labels and
snapshots (``GuestSnapshots``), calls ``plan_pass`` and carries out the ``SnapshotDecision``s.
Rules and a worked example: docs/snapshots.md.
"""

from controller.snapshots.model import GuestSnapshots, Snapshot
from controller.snapshots.naming import ParsedName, parse_name, snapshot_name
from controller.snapshots.policies import SnapshotDecision, plan_pass, policies_for, selects
from controller.snapshots.retention import BUCKETS, Bucket, RetentionPlan, plan_retention
from controller.snapshots.schedule import CLOCK_SKEW_ALLOWANCE, due, last_fire, next_run

__all__ = [
    "BUCKETS",
    "CLOCK_SKEW_ALLOWANCE",
    "Bucket",
    "GuestSnapshots",
    "ParsedName",
    "RetentionPlan",
    "Snapshot",
    "SnapshotDecision",
    "due",
    "last_fire",
    "next_run",
    "parse_name",
    "plan_pass",
    "plan_retention",
    "policies_for",
    "selects",
    "snapshot_name",
]
