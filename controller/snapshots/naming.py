"""Names of the snapshots virtsync takes: ``vs-<policy>-<YYYYmmddTHHMMSSZ>``.

The name is for people (sortable, says who and when) and is a valid libvirt snapshot name: only
letters, digits, ``.``, ``_`` and ``-`` (libvirt refuses ``/``; external snapshots also turn the
name into overlay file names). Ownership is NOT decided by the name: a person can type any name,
so the policy comes from the metadata virtsync records (``Snapshot.policy``); ``parse_name`` is
for display and for cross-checking that record.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from controller.model.records import record
from controller.snapshots.model import require_aware
from controller.spec.types import NAME_PATTERN

PREFIX = "vs-"
_STAMP = "%Y%m%dT%H%M%SZ"
_POLICY = NAME_PATTERN.removeprefix("^").removesuffix("$")
# The stamp has a fixed shape at the end, so a policy name containing "-" still parses unambiguously.
_NAME_RE = re.compile(rf"^{PREFIX}(?P<policy>{_POLICY})-(?P<stamp>\d{{8}}T\d{{6}}Z)$")
_POLICY_RE = re.compile(NAME_PATTERN)


@record
class ParsedName:
    policy: str
    created: datetime


def snapshot_name(policy: str, at: datetime) -> str:
    """The name of the snapshot ``policy`` takes at ``at`` (whole seconds, UTC)."""
    if not _POLICY_RE.match(policy):
        raise ValueError(f"{policy!r} is not a valid policy name")
    return f"{PREFIX}{policy}-{require_aware(at, 'snapshot time').strftime(_STAMP)}"


def parse_name(name: str) -> ParsedName | None:
    """Policy and time from a name ``snapshot_name`` made; ``None`` for any other name."""
    match = _NAME_RE.match(name)
    if match is None:
        return None
    try:
        created = datetime.strptime(match["stamp"], _STAMP).replace(tzinfo=UTC)
    except ValueError:  # right shape, impossible date (month 13)
        return None
    return ParsedName(match["policy"], created)
