"""Generated from the field registry: every field's change renders as `name: old → new` in the
spec's own words (true, key=value items), never a Python repr, and both values are in the JSON."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from controller.hypervisor.domain_xml import WriteContext, new_guest_xml
from controller.plan.context import PlanOptions
from controller.plan.guests import plan_guest
from controller.report.plan_render import change_line
from tests.unit import test_field_registry as reg

# What leaks when a value is printed with str(): a dict's or tuple's repr, Python's booleans.
_REPR = re.compile(r"\{'|',\)|\bTrue\b|\bFalse\b|\bNone\b|[A-Z][a-zA-Z]+State\(")


def _changed_fields() -> list[Any]:
    cases = [pytest.param(f, "guest", id=f"guest-{f.name}") for f in reg.GUEST_FIELDS
             if not f.planned_by and len(f.samples) >= 2 and f.exists_on("kvm")]
    cases += [pytest.param(f, which, id=f"{which}-{f.name}") for which, fields in
              (("disk", reg.DISK_FIELDS), ("nic", reg.NIC_FIELDS)) for f in fields]
    return cases


def _plan(field: Any, which: str) -> Any:
    if which == "guest":
        base = {"host": "h1", "state": "stopped", "memory": "128MiB", "restartPolicy": "never",
                **reg.GUEST_EXTRA.get(field.name, {})}
        before, after = dict(base), dict(base)
        reg._set(before, field.path, field.samples[0])
        reg._set(after, field.path, field.samples[1])
        old, new = reg._guest(before), reg._guest(after)
    else:
        old, new = reg._item_pair(which, field)
    xml = new_guest_xml("g", old.spec, WriteContext("kvm", {}, reg.OWNER, None))
    return plan_guest(new, reg._host(reg.KVM, reg._observe(xml, "stopped", False)), PlanOptions())


@pytest.mark.parametrize(("field", "which"), _changed_fields())
def test_every_field_change_shows_its_old_and_new_value(field: Any, which: str) -> None:
    out = _plan(field, which)
    path = field.path.format(i=0)
    changes = [c for a in out.actions for c in a.changes if c.path == path]
    assert changes, f"{path}: no change planned"
    for c in changes:
        line = change_line(c)
        name = path.removeprefix("/spec/")
        assert line.startswith(f"{name}: ") and " → " in line, line
        old, new = line.removeprefix(f"{name}: ").split(" → ", 1)
        assert old != new and old != "(none)" and new != "(none)", line
        assert not _REPR.search(line), f"a Python repr in the plan: {line}"
        doc = json.loads(json.dumps(c.as_json()))
        assert doc["defined"] is not None and doc["desired"] is not None and doc["defined"] != doc["desired"]
