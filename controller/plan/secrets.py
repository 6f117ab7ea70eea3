"""libvirt secret objects made from kind: Secret, on the hosts whose specs reference them.

A secret is needed on a host when an object placed there references it (a guest's encrypted
vTPM); it is defined before anything that names its UUID, given a new value in place when the
value's digest differs from the one recorded in its description, and deleted (with --prune)
when nothing there needs it any more. Values never enter an action: only their digest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.model.state import HostState, ResourceKey
from controller.plan.actions import Action, DefineSecret, DeleteSecret, FieldChange, Impact, ObjectDrift, Problem
from controller.plan.context import PlanOptions
from controller.spec.models import Secret
from controller.spec.secrets import (
    libvirt_refs,
    libvirt_secret_uuid,
    libvirt_usage_id,
    secret_digest,
    usage_key,
)
from controller.spec.specset import SpecSet


@dataclass
class SecretsPlan:
    """A host's libvirt secrets plan: actions, problems and drift."""

    actions: list[Action] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    drift: list[ObjectDrift] = field(default_factory=list)


def needed_on(specs: SpecSet, host: str) -> set[str]:
    """Names of the Secrets that objects placed on ``host`` use as libvirt secrets."""
    out: set[str] = set()
    for item in specs.items:
        spec = getattr(item.obj, "spec", None)
        if getattr(spec, "host", None) == host:
            out |= libvirt_refs(item.obj)
    return out


def plan_secrets(specs: SpecSet, host: HostState, opts: PlanOptions) -> SecretsPlan:
    out = SecretsPlan()
    needed = needed_on(specs, host.host)
    secrets = {s.obj.metadata.name: s.obj for s in specs.of_kind(Secret)}
    for name in sorted(needed):
        secret = secrets.get(name)
        if secret is None or secret.spec.libvirt is None:
            continue  # the spec checks named it already
        _plan_one(secret, host, opts, out)
    for obs in (host.secrets or {}).values():
        if obs.owner_instance != opts.instance or obs.owner_name in needed:
            continue
        key = ResourceKey(host.host, "Secret", obs.owner_name or obs.uuid)
        out.drift.append(ObjectDrift(key, "extra", message="managed by virtsync, no longer used on this host"))
        if opts.prune:
            out.actions.append(DeleteSecret(key=key, uuid=obs.uuid, reason="no object on this host uses it",
                                            changes=(FieldChange("/spec", None, "defined", None, Impact.DELETE),)))
    return out


def _plan_one(secret: Secret, host: HostState, opts: PlanOptions, out: SecretsPlan) -> None:
    assert secret.spec.libvirt is not None
    name = secret.metadata.name
    key = ResourceKey(host.host, "Secret", name)
    if host.secrets is None:
        out.problems.append(Problem(key, f"host {host.host} ({host.caps.driver}) has no libvirt secret driver: "
                                    f"Secret {name} cannot be defined there"))
        out.drift.append(ObjectDrift(key, "error", message=out.problems[-1].message))
        return
    usage, usage_id = secret.spec.libvirt.usage, libvirt_usage_id(secret)
    uuid = libvirt_secret_uuid(name)
    digest = secret_digest(secret.secret_value) or ""
    obs = host.secrets.get(usage_key(usage, usage_id))
    if obs is not None and (obs.owner_instance != opts.instance or obs.owner_name != name or obs.uuid != uuid):
        whose = "not virtsync's" if obs.owner_instance is None else f"owned by {obs.owner_instance}/{obs.owner_name}"
        out.problems.append(Problem(key, f"a libvirt secret for {usage} {usage_id!r} exists on host {host.host} "
                                    f"({obs.uuid}) and is {whose}: refusing to replace it (give "
                                    "libvirt.id another name, or remove it)"))
        out.drift.append(ObjectDrift(key, "error", message=out.problems[-1].message))
        return
    if secret.secret_value is None:
        # optional and not filled in yet (an exported Secret): never define or overwrite from it
        if obs is not None:
            out.drift.append(ObjectDrift(key, "in-sync"))
            return
        source = secret.spec.from_file or secret.spec.from_env
        out.problems.append(Problem(key, f"Secret {name} has no value yet (optional, {source} not there): "
                                    f"it cannot be defined on host {host.host}; give it its value first"))
        out.drift.append(ObjectDrift(key, "error", message=out.problems[-1].message))
        return
    if obs is not None and obs.digest == digest:
        out.drift.append(ObjectDrift(key, "in-sync"))
        return
    change = FieldChange("/spec/value", digest, obs.digest if obs else None, None,
                         Impact.LIVE if obs else Impact.CREATE, "value (digest)")
    out.drift.append(ObjectDrift(key, "drift" if obs else "missing", (change,)))
    out.actions.append(DefineSecret(key=key, uuid=uuid, usage=usage, usage_id=usage_id, digest=digest,
                                    exists=obs is not None, impact=change.impact, changes=(change,),
                                    reason="new value" if obs else f"{usage} secret used on this host"))
