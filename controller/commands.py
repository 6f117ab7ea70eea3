"""The engine verbs of the CLI: plan, apply, drift, export."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.cli import add_max_file_size, instant, non_negative_int, positive_float, positive_int
from controller.errors import GuardRefusal, SpecError, StalePlanError, UsageError

# Each verb imports what it runs, when it runs: building the parser imports no engine, planner,
# executor or spec model (issue 17: imports were most of a no-op plan's CPU, and all of --help's).

EXIT_OK, EXIT_ERROR, EXIT_CHANGES, EXIT_USAGE = 0, 1, 2, 64
# The planner's default (plan/planner.py), here so that the parser needs no engine;
# test_import_set pins the two together.
DEFAULT_MAX_DELETIONS = 10


def _policy(args: argparse.Namespace) -> str | None:
    return getattr(args, "policy", None)  # verbs that load no specs have no --policy


def _load(args: argparse.Namespace) -> Any:
    """The specs as the command line chose them: the chosen hosts (--host, --host-selector; a
    --connect URI given to the one host chosen)."""
    return _load_scoped(args)[0]


def _load_scoped(args: argparse.Namespace) -> tuple[Any, Any]:
    """The whole spec set (so moves and guests declared on other hosts are seen) and the scope
    --host / --host-selector choose; with --connect, the one host's slice and its URI."""
    from controller.engine import Scope, select_hosts
    from controller.spec.loader import load_specs
    from controller.spec.yaml_reader import Limits

    result = load_specs(args.paths, Limits(max_file_bytes=args.max_file_size), policy=_policy(args))
    for d in result.diagnostics:
        if d.severity == "warning":
            print(d.render(), file=sys.stderr)
    if result.errors:
        raise SpecError(result.errors)
    why = _time_dependent(result.specs)
    if why:
        from controller import noop_memo

        noop_memo.refuse(why)  # the same inputs may plan otherwise later: never answered again
    selector = getattr(args, "host_selector", None) or ()
    chosen = select_hosts(result.specs, args.host or (), args.connect, selector)
    if args.connect:
        return chosen, Scope.everything()
    if not (args.host or selector):
        return result.specs, Scope.everything()
    return result.specs, Scope.of_hosts(*(h.metadata.name for h in chosen.hosts))


def _engine(args: argparse.Namespace) -> Any:
    """The engine; a writer verb's (one with --coordination) holds host locks."""
    from controller.engine import Engine

    locks = None
    if hasattr(args, "lock_timeout"):
        from controller.coordination import HostLocks

        locks = HostLocks(args.coordination, holder=f"virtsync {args.verb}", timeout=args.lock_timeout)
    return Engine(instance=args.instance, locks=locks)


def _waiting(host: str, holder: str) -> None:
    print(f"host {host}: waiting for its lock, held by {holder}", file=sys.stderr, flush=True)


def _replica_id(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a replica name (letters, digits, - _ ., up to 63)")
    return text


def _lock_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--coordination", metavar="URL", default=os.environ.get("VIRTSYNC_COORDINATION"),
                   help="where the per-host write locks live: file:///DIR (default "
                   "file:///var/lib/virtsync/coord, for non-root ~/.local/state/virtsync/coord) or a tooz "
                   "URL such as etcd3+http://HOST:2379 when several machines write")
    p.add_argument("--lock-timeout", type=_seconds, default=60.0, metavar="DURATION",
                   help="how long to wait for a host another writer holds (default 60s)")


def _write(text: str, out: str | None) -> None:
    if out and out != "-":
        Path(out).write_text(text)
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def _color(args: argparse.Namespace) -> bool:
    return sys.stdout.isatty() and not args.no_color and "NO_COLOR" not in os.environ


# ------------------------------------------------------------------ plan


def cmd_plan(args: argparse.Namespace) -> int:
    from controller.report import plan_render

    specs, scope = _load_scoped(args)
    engine = _engine(args)
    try:
        reconciled = engine.reconcile(specs, scope, prune=args.prune, commit=args.commit)
    finally:
        engine.close()
    plan = reconciled.plan
    diffs = _xml_diffs(args, plan, reconciled.specs, reconciled.obs)
    if args.out:
        # The hosts the plan was made for, by name (however they were chosen: --host or
        # --host-selector): `apply FILE` plans exactly these again. Empty: every host.
        narrowed = bool(args.host or args.host_selector)
        doc = plan_render.render_json(plan, {"sources": [os.path.abspath(p) for p in args.paths],
                                             "createdAt": datetime.now(UTC).isoformat(),
                                             "hostsFilter": sorted(scope.hosts) if narrowed else [],
                                             "connect": args.connect})
        Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"saved plan to {args.out}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(plan_render.render_json(plan, diffs=diffs), indent=2 if sys.stdout.isatty() else None))
    elif args.format == "markdown":
        sys.stdout.write(plan_render.render_markdown(plan, diffs))
    else:
        sys.stdout.write(plan_render.render_text(plan, color=_color(args), diffs=diffs))
    if plan.has_errors:
        return EXIT_ERROR
    return EXIT_CHANGES if plan.has_changes else EXIT_OK


def _time_dependent(specs: Any) -> str:
    """Why the plan of these specs depends on the time of day, or "": snapshot and backup
    policies run on schedules, a restart window opens and closes."""
    if specs.policies or specs.backup_policies:
        return "snapshot and backup policies plan by the time"
    if any(g.spec.restart_policy == "window" for g in specs.guests):
        return "a restart window plans by the time"
    return ""


def _xml_diffs(args: argparse.Namespace, plan: Any, specs: Any, obs: Any) -> Any:
    """--diff: the unified diff of the XML each action defines (the executor's own builder)."""
    if not getattr(args, "diff", False):
        return None
    from controller.engine import planned_diffs

    return planned_diffs(plan, specs, obs.states, args.instance, args.commit or "")


# ----------------------------------------------------------------- apply


def _saved_plan(path: str) -> dict[str, Any] | None:
    p = Path(path)
    if not p.is_file() or p.suffix != ".json":
        return None
    try:
        doc = json.loads(p.read_text())
    except (ValueError, OSError):
        return None
    return doc if isinstance(doc, dict) and doc.get("kind") == "plan" else None


def cmd_apply(args: argparse.Namespace) -> int:
    from controller.engine import guard_problems, spec_digest
    from controller.report import plan_render

    saved = _saved_plan(args.paths[0]) if len(args.paths) == 1 else None
    if saved is not None:
        _use_saved_plan(args, saved)
    if args.verify_commits:
        from controller.commit_trust import working_tree_commit

        sha, signer = working_tree_commit(args.paths, _trust(args))
        print(f"commit {sha[:12]} signed by {signer}", file=sys.stderr)
        signers = {sha: signer}
    specs, scope = _load_scoped(args)
    audit = _audit_log(args, signers if args.verify_commits else {})
    engine = _engine(args)
    stopped: list[int] = []  # the exit code when the gate says no

    def gate(plan: Any, obs: Any) -> Any:
        """Between planning and executing: the saved plan's check, the plan shown, the guard, the
        dry run, the question."""
        if saved is not None:
            _check_saved(saved, plan, spec_digest(specs), args.instance)
        # With --format json, stdout carries only the ChangeSet document.
        plan_out = sys.stderr if args.format == "json" else sys.stdout
        plan_out.write(plan_render.render_text(plan, color=_color(args), diffs=_xml_diffs(args, plan, specs, obs)))
        refusals = guard_problems(plan, obs.states, args.max_deletions, args.force)
        if refusals:
            raise GuardRefusal("; ".join(refusals))
        if plan.has_changes and args.dry_run:
            print("dry run: nothing was changed", file=sys.stderr)
            stopped.append(EXIT_OK)
            return None
        if plan.has_changes and not args.yes and saved is None:
            if not sys.stdin.isatty():
                # Exit 1 like any refusal (the contract): 64 is only for a mistyped command line.
                raise GuardRefusal("refusing to apply without --yes: no terminal to ask on; "
                                   "nothing was changed")
            answer = input("Apply these changes? Only 'yes' is accepted: ")
            if answer.strip() != "yes":
                print("cancelled", file=sys.stderr)
                stopped.append(EXIT_ERROR)
                return None
        return plan

    try:
        progress = _progress if sys.stderr.isatty() else _progress_if_many
        # A plan without actions executes nothing; the ChangeSet then counts the unchanged.
        with _audit_to(audit), _transfers():
            result = engine.reconcile(specs, scope, prune=args.prune, commit=args.commit, gate=gate,
                                      concurrency=args.concurrency, progress=progress, on_wait=_waiting)
    finally:
        engine.close()
        if audit is not None:
            audit.close()
    if result.waited or result.busy:
        from controller import noop_memo

        noop_memo.refuse("another writer held a host")  # what it says depends on the other writer
    for host, secs in result.waited.items():
        print(f"host {host}: waited {secs:.1f}s for its lock", file=sys.stderr)
    for host, holder in result.busy.items():
        print(f"host {host}: its actions were left out: its lock is held by {holder}; run again",
              file=sys.stderr)
    if result.changes is None:
        return stopped[0] if stopped else EXIT_OK
    changes = result.changes
    for o in changes.failed:
        print(f"FAILED {o.op} {o.key}: {o.detail}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(changes.as_json(), indent=2))
    print(f"Apply: {changes.summary()}.", file=sys.stderr)
    if result.after is not None and result.after.has_changes:
        # Observed again after the apply: what still differs is said, not assumed away.
        left = sorted({a.key for a in result.after.actions})
        print(f"after the apply, {len(left)} object(s) still differ: "
              f"{', '.join(f'{k.kind} {k.name}' for k in left[:10])}; see `virtsync drift`", file=sys.stderr)
    return EXIT_ERROR if (changes.failed or result.plan.has_errors) else EXIT_OK


def _audit_to(audit: Any) -> Any:
    """The audit log the executor writes to; without --audit-log none (nor its import)."""
    if audit is None:
        return contextlib.nullcontext()
    from controller.audit import audit_to

    return audit_to(audit)


def _use_saved_plan(args: argparse.Namespace, saved: dict[str, Any]) -> None:
    """Plan again from what the saved plan records: its spec sources, its hosts, its URI."""
    args.paths = saved.get("sources") or []
    if not args.paths:
        raise UsageError("the saved plan names no spec sources")
    if saved.get("hostsFilter"):
        if args.host or args.host_selector:
            raise UsageError("the saved plan was made for hosts "
                             f"{', '.join(saved['hostsFilter'])}; drop --host/--host-selector")
        args.host = list(saved["hostsFilter"])
    args.connect = saved.get("connect") or args.connect
    args.prune = bool(saved.get("prune"))


def _check_saved(saved: dict[str, Any], plan: Any, digest_now: str, instance: str) -> None:
    if saved.get("instance") != instance:
        raise StalePlanError(f"the plan was made for instance {saved.get('instance')!r}, "
                             f"not {instance!r}")
    if saved.get("specDigest") != digest_now:
        raise StalePlanError("the specs changed since the plan was made; run plan again")
    then = {h["host"]: h.get("fingerprint") for h in saved.get("hosts", [])}
    for hp in plan.hosts:
        if hp.host not in then:
            raise StalePlanError(f"the plan was not made for host {hp.host} (it covers "
                                 f"{', '.join(sorted(then)) or 'no host'}); run plan again")
        if then.get(hp.host) != hp.fingerprint:
            raise StalePlanError(f"host {hp.host} changed since the plan was made; run plan again")


def _progress_if_many(outcome: Any, n: int, total: int) -> None:
    if total > 5:
        _progress(outcome, n, total)


def _progress(outcome: Any, n: int, total: int) -> None:
    from controller.report.progress import say

    mark = {"failed": "FAILED", "skipped": "skipped"}.get(outcome.status, "ok")
    say(f"[{n}/{total}] {outcome.op} {outcome.key.kind} {outcome.key.name}: {mark} "
        f"({outcome.seconds:.1f}s) {outcome.detail}", sys.stderr)


def _transfers() -> Any:
    """Downloads, uploads and volume copies on stderr: one updating line each on a terminal,
    plain lines without one (report/progress.py)."""
    from controller.report.progress import ProgressDisplay, transfers_to

    return transfers_to(ProgressDisplay(sys.stderr, tty=sys.stderr.isatty()))


# ----------------------------------------------------------------- drift


def _agents_report(args: argparse.Namespace) -> Any:
    """`drift --from-agents URL…`: the agents' /status documents merged into one report."""
    from controller.agents import read_statuses
    from controller.report.fleet import merged_report

    bad = [u for u in args.paths if not re.match(r"https?://[^/\s]+", u)]
    if bad:
        raise UsageError(f"--from-agents takes agents' URLs (http://HOST:PORT, https://…), not {bad[0]!r}")
    token = _read_option_file("--token-file", args.token_file).strip() if args.token_file else None
    report = merged_report(read_statuses(args.paths, token, args.agent_ca), datetime.now(UTC))
    if args.host:
        from dataclasses import replace

        report = replace(report, plan=replace(report.plan, hosts=tuple(
            h for h in report.plan.hosts if h.host in args.host or h.host.startswith("agent "))))
    return report


def cmd_drift(args: argparse.Namespace) -> int:
    from controller.report import drift

    if args.from_agents:
        report = _agents_report(args)
    else:
        # The specs live as long as the process: out of the garbage collector's full passes, which
        # a fleet's 100,000 spec objects made cost ~10 s of a 1,000-host drift. Frozen before the
        # collector runs again: the loader pauses it, and its first pass after would walk them all.
        collecting = gc.isenabled()
        gc.disable()
        try:
            specs, scope = _load_scoped(args)
        finally:
            gc.freeze()
            if collecting:
                gc.enable()
        engine = _engine(args)
        try:
            result = engine.drift(specs, scope, commit=args.commit, jobs=args.jobs)
            _add_snapshot_freshness(result.specs, result.plan, engine)
            _add_backup_freshness(result.specs, result.plan, engine)
        finally:
            engine.close()
        report = drift.DriftReport(result.plan, datetime.now(UTC), args.commit)
    if args.format == "json":
        # Indented for people; compact otherwise (the indenting encoder is pure Python: a
        # fleet's report takes seconds that way).
        indent = 2 if sys.stdout.isatty() and not args.output else None
        text = json.dumps(drift.render_json(report), indent=indent) + "\n"
    elif args.format == "markdown":
        text = drift.render_markdown(report)
    elif args.format == "html":
        text = drift.render_html(report)
    else:
        text = drift.render_text(report)
    _write(text, args.output)
    if report.has_errors:
        return EXIT_ERROR
    return EXIT_CHANGES if report.has_drift else EXIT_OK


def _add_snapshot_freshness(specs: Any, plan: Any, engine: Any) -> None:
    if not specs.policies:  # nothing to annotate: neither the scheduler's imports nor a walk of the hosts
        return
    from controller.snapshots.runner import annotate_freshness

    hosts = {h.metadata.name: h for h in specs.hosts}
    annotate_freshness(specs, plan.hosts, lambda name: engine.snapshot_ops(hosts[name]), datetime.now(UTC))


def _add_backup_freshness(specs: Any, plan: Any, engine: Any) -> None:
    if not specs.backup_policies:
        return
    from controller.backups.runner import annotate_freshness

    hosts = {h.metadata.name: h for h in specs.hosts}
    annotate_freshness(specs, plan.hosts, lambda name: engine.backup_ops(hosts[name]), datetime.now(UTC))


# ----------------------------------------------------------------- place


def cmd_adopt(args: argparse.Namespace) -> int:
    """Take over, in one safe step, every existing object whose spec matches it exactly."""
    from controller.engine import adoption
    from controller.spec.specset import Located, SpecSet

    specs, scope = _load_scoped(args)
    items = []
    for item in specs.items:
        obj = item.obj
        if obj.kind in ("Guest", "Network", "StoragePool"):
            spec = obj.spec.model_copy(update={"adopt": True})
            spec.__pydantic_fields_set__.discard("adopt")  # not a field the user declared
            obj = obj.model_copy(update={"spec": spec})
        items.append(Located(obj, item.file, item.doc))
    engine = _engine(args)
    refused: list[Any] = []
    stopped: list[bool] = []

    def gate(plan: Any, obs: Any) -> Any:
        chosen, why = adoption(plan, obs.states)
        refused.extend(why)
        for a in chosen.actions:
            print(f"  adopt {a.key.kind} {a.key.name} on {a.key.host}")
        for r in why:
            print(f"  left alone: {r.key.kind} {r.key.name} on {r.key.host}: {r.reason}")
        for hp in plan.hosts:
            if hp.error:
                print(f"  ! host {hp.host} unreachable: {hp.error}")
        if chosen.has_changes and not args.yes:
            if not sys.stdin.isatty():
                raise GuardRefusal("refusing to adopt without --yes: no terminal to ask on; nothing was changed")
            if input("Adopt these objects? Only 'yes' is accepted: ").strip() != "yes":
                stopped.append(True)
                return None
        return chosen

    try:
        result = engine.reconcile(SpecSet(tuple(items)), scope, commit=args.commit, gate=gate, on_wait=_waiting)
    finally:
        engine.close()
    if stopped:
        return EXIT_ERROR
    changes = result.changes
    failed = changes.failed if changes is not None else []
    for o in failed:
        print(f"FAILED adopt {o.key}: {o.detail}", file=sys.stderr)
    adopted = len(changes.outcomes) - len(failed) if changes is not None else 0
    print(f"Adopt: {adopted} adopted, {len(refused)} left alone, {len(failed)} failed.", file=sys.stderr)
    if failed or result.plan.has_errors:
        return EXIT_ERROR
    return EXIT_CHANGES if refused else EXIT_OK


def cmd_place(args: argparse.Namespace) -> int:
    from controller.engine import Engine
    from controller.plan.placement import place
    from controller.spec.loader import load_specs
    from controller.spec.placement import lock_path, read_lock, write_lock
    from controller.spec.yaml_reader import Limits

    result = load_specs(args.paths, Limits(max_file_bytes=args.max_file_size), placed=False, policy=_policy(args))
    if result.errors:
        raise SpecError(result.errors)
    specs = result.specs
    lock = lock_path(args.paths)
    assert lock is not None
    current, problems = read_lock(lock)
    if problems:
        raise SpecError(problems)
    engine = Engine(instance=args.instance)
    obs = engine.observe(specs)
    physical: dict[str, int] = {}
    for name in obs.states:
        spec_host = specs.host(name)
        assert spec_host is not None
        physical[name] = engine.host_memory(spec_host)
    committed: dict[str, int] = {}
    unplaced = []
    for g in specs.guests:
        if g.spec.host is not None:
            committed[g.spec.host] = committed.get(g.spec.host, 0) + (g.spec.max_memory or g.spec.memory)
        elif g.spec.host_selector is not None:
            unplaced.append(g)
    for down, why in obs.failed.items():
        print(f"host {down} left out: {why}", file=sys.stderr)
    res = place(unplaced, specs.hosts, physical, committed, args.overcommit)
    for guest, chosen in sorted(res.placements.items()):
        print(f"{guest} → {chosen}")
    for guest, why in sorted(res.refused.items()):
        print(f"REFUSED {guest}: {why}", file=sys.stderr)
    if res.placements:
        write_lock(lock, {**current, **res.placements})
        print(f"wrote {lock}", file=sys.stderr)
    elif not unplaced:
        print("every guest has a host")
    return EXIT_ERROR if res.refused or obs.failed else EXIT_OK


# ---------------------------------------------------------------- export


def cmd_export(args: argparse.Namespace) -> int:
    tls = None
    if args.connect:
        uri = args.connect
    elif args.specs:
        ns = argparse.Namespace(paths=args.specs, max_file_size=args.max_file_size, host=[args.host],
                                connect=None)
        specs = _load(ns)
        host = specs.host(args.host)
        if host is None:
            raise UsageError(f"host {args.host!r} is not in the specs")
        uri, tls = host.spec.uri, host.spec.tls
    else:
        raise UsageError("export needs --connect URI or --specs PATH (to find the host's URI)")
    # The process's shared connection, like the other verbs: in-process runs (and the
    # test driver, whose state lives in its connection) export what apply made.
    schema = args.schema_url or _shipped_schema()
    out = args.output
    per_object = bool(out) and (out.endswith("/") or Path(out).is_dir())
    parts = _engine(args).export(args.host, uri, args.names, include_host=bool(args.connect),
                                 schema_url=schema if per_object else None, everything=args.all, tls=tls)
    if per_object:
        # One file per object, each with the schema header: a spec tree to commit as it is.
        directory = Path(out)
        directory.mkdir(parents=True, exist_ok=True)
        for kind, name, text in parts:
            path = directory / f"{kind.lower()}-{name}.yaml"
            path.write_text(text)
            print(f"wrote {path}", file=sys.stderr)
        return EXIT_OK
    head = f"# yaml-language-server: $schema={schema}\n" if schema else ""
    _write(head + "---\n".join(text for _, _, text in parts), out)
    return EXIT_OK


# ----------------------------------------------------------------- serve


def _shipped_schema() -> str | None:
    """The spec schema next to this virtsync's code, as a file: URL (None where it is not)."""
    import controller

    path = Path(controller.__file__).resolve().parent.parent / "specs" / "virtsync.schema.json"
    if not path.is_file():  # installed from the wheel: its data files are under the prefix
        path = Path(sys.prefix) / "share" / "virtsync" / "specs" / "virtsync.schema.json"
    return path.as_uri() if path.is_file() else None


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (a port 0-65535)")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def _seconds(text: str) -> float:
    from controller.spec.units import parse_duration

    try:
        return float(parse_duration(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds_or_off(text: str) -> float:
    return 0.0 if text.strip() in ("0", "off") else _seconds(text)


def _read_option_file(option: str, name: str) -> str:
    try:
        return Path(name).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{option} {name}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None


def _trust(args: argparse.Namespace) -> Any:
    from controller.commit_trust import CommitTrust

    return CommitTrust(allowed_signers=args.allowed_signers, gpg_keyring=args.gpg_keyring)


def _trust_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verify-commits", action="store_true",
                   help="apply a commit only if it is signed by an allowed key (git verify-commit)")
    p.add_argument("--allowed-signers", metavar="FILE", help="SSH signers allowed, in git's "
                   "gpg.ssh.allowedSignersFile format")
    p.add_argument("--gpg-keyring", metavar="FILE", help="OpenPGP public keys allowed to sign")


def _serve_endpoints(args: argparse.Namespace) -> tuple[Any, str | None]:
    """(TLS context, bearer token) of serve's endpoints; beyond localhost both are required."""
    from controller.service.http import is_loopback, tls_context

    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together: the certificate and its private key")
    token = _read_option_file("--token-file", args.token_file) if args.token_file else None
    if args.token_file and not token:
        raise UsageError(f"--token-file {args.token_file}: the file is empty")
    if token and not all(33 <= ord(c) < 127 for c in token):
        raise UsageError(f"--token-file {args.token_file}: the token must be one word of printable ASCII")
    host, port = args.listen
    if not is_loopback(host):
        missing = [o for o, v in (("--tls-cert FILE", args.tls_cert), ("--tls-key FILE", args.tls_key),
                                  ("--token-file FILE", token)) if not v]
        if missing:
            raise UsageError(f"--listen {host}:{port} is reachable beyond localhost: serve listens there "
                             f"only with TLS and a bearer token; missing {', '.join(missing)}")
    tls = None
    if args.tls_cert:
        try:
            tls = tls_context(args.tls_cert, args.tls_key)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return tls, token


def cmd_serve(args: argparse.Namespace) -> int:
    from controller.logging import configure
    from controller.service.git import GitSource
    from controller.service.runner import Service, ServiceOptions
    from controller.spec.yaml_reader import Limits

    configure(json=args.log_format == "json", verbose=args.verbose)
    if not args.paths and not args.git:
        raise UsageError("serve needs a spec PATH or --git URL")
    if args.pin_host and not args.replica_id:
        raise UsageError("--pin-host needs --replica-id (pins say which replica takes a host)")
    git = None
    if args.git:
        git = GitSource(url=args.git, branch=args.branch, subdir=args.git_path or "",
                        ssh_key=args.git_ssh_key, token_file=args.git_token_file,
                        **({"cache": Path(args.cache_dir)} if args.cache_dir else {}))
    secret = _read_option_file("--hook-secret-file", args.hook_secret_file) if args.hook_secret_file else None
    if args.hook_secret_file and not secret:
        raise UsageError(f"--hook-secret-file {args.hook_secret_file}: the file is empty")
    for option, name in (("--git-ssh-key", args.git_ssh_key), ("--git-token-file", args.git_token_file)):
        if name and not (Path(name).is_file() and os.access(name, os.R_OK)):
            raise UsageError(f"{option} {name}: no such readable file")
    tls, token = _serve_endpoints(args)
    opts = ServiceOptions(
        paths=args.paths, git=git, git_interval=args.git_interval, listen=args.listen,
        instance=args.instance, prune=args.prune, force=args.force,
        max_deletions=args.max_deletions, resync=args.resync, workers=args.workers,
        light_resync=args.light_resync,
        notify=args.notify, hook_secret=secret, token=token, tls=tls, hook_rate=args.hook_rate,
        suspended=args.suspend,
        thrash_limit=args.thrash_limit, thrash_window=args.thrash_window,
        shutdown_timeout=args.shutdown_timeout, hosts=args.host or [], host_selector=args.host_selector or [],
        snapshot_interval=args.snapshot_interval,
        limits=Limits(max_file_bytes=args.max_file_size), policy=_policy(args),
        trust=_trust(args) if args.verify_commits else None,
        audit_log=args.audit_log, coordination=args.coordination, lock_timeout=args.lock_timeout,
        replica_id=args.replica_id, pins=args.pin_host,
    )
    return Service(opts).run()


# ------------------------------------------------------------- snapshots


def _pass_setup(args: argparse.Namespace, ops: str, specs: Any = None, engine: Any = None) -> tuple[Any, Any, Any]:
    """(specs, observation, host name → the engine's ``ops`` for it) of a snapshot or backup verb;
    unreachable hosts are said on stderr."""
    specs = specs if specs is not None else _load(args)
    engine = engine or _engine(args)
    obs = engine.observe(specs)
    for host, why in obs.failed.items():
        print(f"host {host}: unreachable: {why}", file=sys.stderr)
    hosts = {h.metadata.name: h for h in specs.hosts}
    return specs, obs, lambda name: getattr(engine, ops)(hosts[name])


def _snapshot_setup(args: argparse.Namespace, specs: Any = None, engine: Any = None) -> tuple[Any, Any, Any]:
    return _pass_setup(args, "snapshot_ops", specs, engine)


def cmd_snapshots_run(args: argparse.Namespace) -> int:
    from controller.snapshots.runner import run_pass

    at = args.at or datetime.now(UTC)  # --at is parsed (and refused with exit 64) by the parser
    specs, engine = _load(args), _engine(args)
    with engine.writing(specs, on_wait=_waiting):  # one writer per host: no reconcile beside the pass
        specs, obs, ops_for = _snapshot_setup(args, specs, engine)
        outcomes = run_pass(specs, obs.states, ops_for, at)
    audit = _audit_log(args, {})
    if audit is not None:
        from controller.audit import snapshot_entry

        for o in outcomes:
            entry = snapshot_entry(o, args.commit or "")
            if entry is not None:
                audit.write(entry)
        audit.close()
    for o in outcomes:
        print(f"{o.host}/{o.guest} [{o.policy}] {o.action} {o.snapshot} {o.detail}".rstrip())
    if not outcomes:
        print("nothing due")
    return EXIT_ERROR if obs.failed or any(o.action == "failed" for o in outcomes) else EXIT_OK


def cmd_snapshots_list(args: argparse.Namespace) -> int:
    specs, obs, ops_for = _snapshot_setup(args)
    rows = []
    for g in specs.guests:
        host = g.spec.host or ""
        state = obs.states.get(host)
        if state is None or g.metadata.name not in state.guests or not state.caps.snapshots:
            continue
        if args.guest and g.metadata.name not in args.guest:
            continue
        for r in sorted(ops_for(host).list(g.metadata.name), key=lambda r: r.created):
            rows.append({"host": host, "guest": g.metadata.name, "name": r.name, "created": r.created.isoformat(),
                         "policy": r.policy, "quiesced": r.quiesced, "external": r.external, "state": r.state})
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['host']}/{r['guest']}  {r['name']}  {r['created']}  policy={r['policy'] or '-'}  "
                  f"quiesced={r['quiesced']}  {'external' if r['external'] else 'internal'}")
    return EXIT_ERROR if obs.failed else EXIT_OK


def cmd_snapshots_restore(args: argparse.Namespace) -> int:
    specs, _, ops_for = _snapshot_setup(args)
    guest = next((g for g in specs.guests if g.metadata.name == args.guest), None)
    if guest is None:
        raise UsageError(f"guest {args.guest!r} is not in the specs")
    if not args.yes:
        if not sys.stdin.isatty():
            raise GuardRefusal("refusing to revert without --yes: no terminal to ask on")
        if input(f"Revert {args.guest} to {args.snapshot}? Its current state is lost. Type 'yes': ").strip() != "yes":
            return EXIT_ERROR
    ops_for(guest.spec.host or "").revert(args.guest, args.snapshot)
    print(f"{args.guest} reverted to {args.snapshot}")
    return EXIT_OK


# --------------------------------------------------------------- backups


def _backup_setup(args: argparse.Namespace, specs: Any = None, engine: Any = None) -> tuple[Any, Any, Any]:
    return _pass_setup(args, "backup_ops", specs, engine)


def _backup_progress() -> Any:
    """Progress lines on stderr (bytes done/total of each job), at most one a second per job."""
    def show(what: str, done: int, total: int) -> None:
        pct = f" ({100 * done // total}%)" if total else ""
        print(f"  {what}: {done}/{total} bytes{pct}", file=sys.stderr, flush=True)
    return show


def cmd_backups_run(args: argparse.Namespace) -> int:
    from controller.backups.runner import run_pass

    at = args.at or datetime.now(UTC)
    specs, engine = _load(args), _engine(args)
    with engine.writing(specs, on_wait=_waiting):  # one writer per host: no reconcile beside the pass
        specs, obs, ops_for = _backup_setup(args, specs, engine)
        outcomes = run_pass(specs, obs.states, ops_for, at, full=args.full, progress=_backup_progress(),
                            report=lambda o: print(o.line(), flush=True))
    if not outcomes:
        print("nothing due")
    return EXIT_ERROR if obs.failed or any(o.action == "failed" for o in outcomes) else EXIT_OK


def _manifest_row(host: str, m: Any) -> dict[str, Any]:
    return {"host": host, "guest": m.guest, "id": m.id, "policy": m.policy, "created": m.created.isoformat(),
            "kind": m.kind, "method": m.method, "parent": m.parent, "chain": list(m.chain),
            "checkpoint": m.checkpoint, "quiesced": m.quiesced, "size": m.size, "why": m.why,
            "disks": [{"target": d.target, "file": d.file, "mode": d.mode, "size": d.size, "sha256": d.sha256,
                       "backing": d.backing, "reason": d.reason} for d in m.disks]}


def cmd_backups_list(args: argparse.Namespace) -> int:
    from controller.backups.runner import read_chains

    specs, obs, ops_for = _backup_setup(args)
    if not any(g.metadata.name == args.guest for g in specs.guests):
        raise UsageError(f"guest {args.guest!r} is not in the specs")
    chains = read_chains(specs, obs.states, ops_for, guests={args.guest}, from_copy=args.from_copy)
    rows = [_manifest_row(c.host, m) for c in chains for m in c.manifests]
    problems = [f"{c.host}/{c.guest} [{c.policy}]: {p}" for c in chains for p in c.problems]
    for note in {f"{c.host}: {n}" for c in chains for n in c.notes}:
        print(note, file=sys.stderr)
    if args.format == "json":
        print(json.dumps({"backups": rows, "problems": problems}, indent=2))
    else:
        for r in rows:
            print(f"{r['host']}/{r['guest']}  {r['id']}  {r['created']}  {r['kind']} ({r['method']})  "
                  f"parent={r['parent'] or '-'}  {r['size']} bytes  quiesced={r['quiesced']}")
        for p in problems:
            print(p, file=sys.stderr)
        if not rows:
            print(f"no backups of {args.guest}")
    return EXIT_ERROR if obs.failed or problems else EXIT_OK


def cmd_backups_verify(args: argparse.Namespace) -> int:
    from controller.backups.runner import verify_all

    specs, obs, ops_for = _backup_setup(args)
    results, chains = verify_all(specs, obs.states, ops_for, from_copy=args.from_copy)
    other = [f"{c.host}/{c.guest} [{c.policy}]: {p}" for c in chains for p in c.problems]
    for note in sorted({n for c in chains for n in c.notes}):
        print(note, file=sys.stderr)
    bad = sum(bool(r["problems"]) for r in results)
    if args.format == "json":
        print(json.dumps({"ok": not bad and not other, "backups": results, "problems": other}, indent=2))
    else:
        for r in results:
            status = "ok" if not r["problems"] else "BAD"
            print(f"{r['host']}/{r['guest']} [{r['policy']}] {r['id']} {status}")
            for p in r["problems"]:
                print(f"  {p}")
        for p in other:
            print(p, file=sys.stderr)
        print(f"{len(results)} backup(s) checked, {bad} with problems")
    return EXIT_ERROR if obs.failed or bad or other else EXIT_OK


def cmd_backups_restore(args: argparse.Namespace) -> int:
    from controller.backups.runner import chain_for, pick, read_chains

    specs, engine = _load(args), _engine(args)
    guest = next((g for g in specs.guests if g.metadata.name == args.guest), None)
    if guest is None:
        raise UsageError(f"guest {args.guest!r} is not in the specs")
    done: list[str] = []

    def restore(store: Any, chains: Any) -> None:
        if done:
            return  # the first policy holding the wanted backup
        wanted = pick(chains.manifests, args.at)
        if wanted is None:
            return
        chain = chain_for(chains.manifests, wanted)
        if [m.id for m in chain] != list(wanted.chain):
            raise GuardRefusal(f"backup {wanted.id} cannot be restored: its chain is incomplete "
                               f"(has {', '.join(m.id for m in chain)}; needs {', '.join(wanted.chain)})")
        if not args.yes:
            if not sys.stdin.isatty():
                raise GuardRefusal("refusing to restore without --yes: no terminal to ask on")
            what = f"a new guest {args.as_name}" if args.as_name else f"{args.guest} (its disks are overwritten)"
            if input(f"Restore {wanted.id} into {what}? Type 'yes': ").strip() != "yes":
                raise GuardRefusal("not confirmed")
        name, files = ops_for(chains.host).restore(store, chain, new_name=args.as_name,
                                                   progress=_backup_progress())
        done.append(f"{chains.host}/{name} restored from {wanted.id} ({wanted.created.isoformat()}, "
                    f"{wanted.kind}, chain of {len(chain)}): {', '.join(files)}")

    with engine.writing(specs, on_wait=_waiting):
        specs, obs, ops_for = _backup_setup(args, specs, engine)
        read_chains(specs, obs.states, ops_for, guests={args.guest}, from_copy=args.from_copy, use=restore)
    if not done:
        print(f"virtsync: error: no backup of {args.guest} matches {args.at!r} (an id, or a time with its "
              "timezone: the newest backup at or before it)", file=sys.stderr)
        return EXIT_ERROR
    print(done[0])
    return EXIT_OK


def _register_backups(verb: Callable[..., argparse.ArgumentParser],
                      common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = verb("backups", lambda a: (a.backup_parser.print_help(), EXIT_USAGE)[1],
             "backup policies: run a pass, list, verify, restore",
             "Backup policies (kind: BackupPolicy): `run` a pass, `list`, `verify`, `restore`.")
    p.set_defaults(backup_parser=p)
    sub = p.add_subparsers(dest="backup_verb", metavar="ACTION", parser_class=type(p))

    def copy_option(s: argparse.ArgumentParser) -> None:
        s.add_argument("--from-copy", action="store_true", help="read the policies' copyTo directories (where "
                       "virtsync runs) instead of the targets on the hosts")

    s = sub.add_parser("run", help="one backup pass: take what is due, prune by retention",
                       description="One backup-policy pass: take what is due (full or incremental, and why), "
                       "prune chains by retention, copy to copyTo.")
    s.set_defaults(func=cmd_backups_run)
    common(s)
    s.add_argument("--at", type=instant, metavar="TIME", help="the pass's time (ISO 8601 with a timezone; "
                   "default now)")
    s.add_argument("--full", action="store_true", help="a full backup of every selected guest now, due or not")
    _lock_options(s)
    s = sub.add_parser("list", help="the backups of a guest",
                       description="The backups of GUEST in its policies' targets: id, time, full or incremental, "
                       "parent, size, quiesced.")
    s.set_defaults(func=cmd_backups_list)
    s.add_argument("guest", metavar="GUEST", help="the guest")
    common(s)
    copy_option(s)
    s.add_argument("--format", choices=("text", "json"), default="text", help="json: {backups, problems}")
    s = sub.add_parser("verify", help="check every backup chain: files, digests, qemu-img check",
                       description="Check every backup of the guests the policies select: the chain's manifests, "
                       "each file present with the manifest's sha256 (streamed from the host), and qemu-img check "
                       "of each file. Exit 1 on any problem.")
    s.set_defaults(func=cmd_backups_verify)
    common(s)
    copy_option(s)
    s.add_argument("--format", choices=("text", "json"), default="text", help="json: {ok, backups, problems}")
    s = sub.add_parser("restore", help="rebuild a guest's disks from a backup chain and define it",
                       description="Rebuild GUEST's disks from a backup (the full and its incrementals, flattened "
                       "into its pools) and define it: the same guest and UUID, or a new one named by --as. "
                       "Refuses to overwrite a running guest's disks.")
    s.set_defaults(func=cmd_backups_restore)
    s.add_argument("guest", metavar="GUEST", help="the guest to restore")
    common(s)
    s.add_argument("--at", required=True, metavar="TIME|ID", help="a backup id (see backups list), or a time "
                   "with its timezone: the newest backup at or before it")
    s.add_argument("--as", dest="as_name", metavar="NEW", help="define a new guest NEW (new UUID and MACs) "
                   "instead of overwriting GUEST")
    copy_option(s)
    s.add_argument("--yes", "-y", action="store_true", help="do not ask (required without a TTY)")
    _lock_options(s)


# ----------------------------------------------------------------- audit


def _audit_log(args: argparse.Namespace, signers: dict[str, str]) -> Any:
    """The --audit-log of apply and snapshots run (None without it); authors come from the spec
    checkout's git."""
    if not getattr(args, "audit_log", None):
        return None
    from controller.audit import AuditLog, CommitInfo

    base = Path(args.paths[0]).resolve() if args.paths else Path.cwd()
    return AuditLog(args.audit_log, args.instance,
                    CommitInfo(cwd=str(base if base.is_dir() else base.parent), signers=signers))


def _audit_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--audit-log", metavar="FILE", help="append one JSON line per change to this file "
                   "(see Audit log; `virtsync history` reads it)")


def cmd_history(args: argparse.Namespace) -> int:
    from controller import audit

    lines, bad = audit.history(args.audit_log, args.object)
    if bad:
        print(f"{args.audit_log}: {bad} line(s) are not audit records (left out)", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(lines, indent=2 if sys.stdout.isatty() else None))
    elif lines:
        sys.stdout.write(audit.render_text(lines))
    else:
        print(f"no changes of {args.object} in {args.audit_log}")
    return EXIT_OK


# ---------------------------------------------------------------- parser


def register(verb: Callable[..., argparse.ArgumentParser],
             spec_args: Callable[[argparse.ArgumentParser], None]) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        spec_args(p)
        p.add_argument("--host", action="append", metavar="NAME", help="only this host (repeatable)")
        _host_selector(p)
        p.add_argument("--connect", metavar="URI", help="override the Host's URI (one-host runs)")
        _instance(p)
        p.add_argument("--commit", default=None, metavar="SHA", help="git commit to record (default: HEAD of "
                       "the spec repository)")
        p.add_argument("--no-color", action="store_true", help="no colours even on a terminal")

    p = verb("plan", cmd_plan, "show what would change on each host, and how",
             "Per host: + create, ~ update (live), ~ update (next boot), -/+ recreate, - delete, pending "
             "restarts apart. Exit 2 when there are changes.")
    common(p)
    p.add_argument("--format", choices=("text", "json", "markdown"), default="text",
                   help="markdown for pull-request comments; json: plan.schema.json")
    p.add_argument("--out", metavar="FILE", help="save the plan (JSON) for `apply FILE`")
    _diff_option(p)
    p.add_argument("--prune", action="store_true", help="include deletions of managed objects "
                   "gone from the specs")
    p.set_defaults(post=_fill_commit)

    p = verb("apply", cmd_apply, "converge the hosts (PATH… of specs, or a saved PLANFILE)",
             "Show the plan and do it (--yes without a terminal). `apply PLANFILE` applies a plan saved by "
             "`plan --out` to the hosts it was made for, refused if the specs or any host changed since.")
    common(p)
    p.add_argument("--yes", "-y", action="store_true", help="do not ask (required without a TTY)")
    p.add_argument("--prune", action="store_true", help="delete managed objects gone from specs")
    p.add_argument("--max-deletions", type=non_negative_int, default=DEFAULT_MAX_DELETIONS, metavar="N",
                   help=f"refuse more deletions than this (default {DEFAULT_MAX_DELETIONS})")
    p.add_argument("--force", action="store_true", help="override the mass-deletion guard (--max-deletions, "
                   "and never more than half a host's guests)")
    p.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")
    _diff_option(p)
    p.add_argument("--concurrency", type=positive_int, default=8, metavar="N",
                   help="actions run at once per host (default 8)")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="json prints the ChangeSet")
    _trust_options(p)
    _audit_option(p)
    _lock_options(p)
    p.set_defaults(post=_fill_commit)

    p = verb("drift", cmd_drift, "report desired vs defined vs running, and unmanaged objects",
             "Desired vs defined vs running per object, unmanaged objects, snapshot freshness. Exit 2 when "
             "there is drift.")
    common(p)
    p.add_argument("--format", choices=("text", "json", "markdown", "html"), default="text",
                   help="json: drift.schema.json; html: a page of its own")
    p.add_argument("-o", "--output", metavar="FILE", help="write the report here")
    p.add_argument("--jobs", type=positive_int, metavar="N", help="processes that read and plan the hosts "
                   "(default: one per CPU for a fleet of 32 hosts or more, else 1)")
    p.add_argument("--from-agents", action="store_true", help="the PATHs are agents' URLs (http://HOST:PORT, "
                   "https://…): merge their serve /status reports into one fleet report instead of "
                   "observing the hosts")
    p.add_argument("--token-file", metavar="FILE", help="with --from-agents: the agents' bearer token")
    p.add_argument("--agent-ca", metavar="FILE", help="with --from-agents: CA certificates (PEM) the "
                   "agents' HTTPS certificates are checked against (default: the system's)")
    p.set_defaults(post=_fill_commit)

    p = verb("serve", cmd_serve, "keep the hosts converged: watch specs, git and libvirt events",
             "The continuous service (see Run as a service): spec files (PATH) or a git branch (--git), "
             "libvirt events and a jittered resync.")
    p.add_argument("paths", nargs="*", metavar="PATH", help="spec files or directories")
    p.add_argument("--git", metavar="URL", help="follow a git repository instead of local files")
    p.add_argument("--branch", default="main", help="branch to follow (default main)")
    p.add_argument("--git-path", metavar="DIR", help="spec directory inside the repository")
    p.add_argument("--git-interval", type=_seconds, default=30.0, metavar="DURATION",
                   help="poll interval (default 30s; POST /hooks/git pokes it)")
    p.add_argument("--git-ssh-key", metavar="FILE", help="SSH private key for the repository")
    p.add_argument("--git-token-file", metavar="FILE", help="file holding an HTTPS bearer token")
    _trust_options(p)
    _audit_option(p)
    _lock_options(p)
    p.add_argument("--replica-id", type=_replica_id, metavar="NAME",
                   help="run as one of several replicas sharing the hosts through --coordination (a stable "
                   "name per replica, e.g. serve-1): each host is reconciled by one live replica at a time")
    p.add_argument("--pin-host", action="append", default=[], metavar="NAME",
                   help="with --replica-id: this replica always takes this host while it lives (repeatable)")
    p.add_argument("--cache-dir", metavar="DIR", help="where git snapshots live "
                   "(default ~/.cache/virtsync)")
    p.add_argument("--hook-secret-file", metavar="FILE",
                   help="secret of POST /hooks/git: the X-Hub-Signature-256 HMAC of the body (GitHub, "
                   "Gitea) or the header X-Virtsync-Secret; without it the hook answers 403")
    p.add_argument("--hook-rate", type=positive_int, default=30, metavar="N",
                   help="POST /hooks/git accepted per minute (default 30; beyond it 429)")
    p.add_argument("--listen", type=_listen, default=("127.0.0.1", 8080), metavar="HOST:PORT",
                   help="HTTP endpoints (default 127.0.0.1:8080; beyond localhost only with --tls-cert, "
                   "--tls-key and --token-file)")
    p.add_argument("--tls-cert", metavar="FILE", help="the endpoints' certificate (PEM, chain first): "
                   "they speak HTTPS, TLS 1.2 or newer")
    p.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    p.add_argument("--token-file", metavar="FILE", help="bearer token every endpoint but /healthz (and the "
                   "git hook, which has its secret) then wants: Authorization: Bearer TOKEN")
    p.add_argument("--host", "--this-host", action="append", metavar="NAME", dest="host",
                   help="reconcile only this host's slice (agent mode: one serve per hypervisor)")
    _host_selector(p)
    _instance(p)
    p.add_argument("--prune", action="store_true", help="delete managed objects gone from specs")
    p.add_argument("--force", action="store_true", help="override the mass-deletion guard (--max-deletions, "
                   "and never more than half a host's guests)")
    p.add_argument("--max-deletions", type=non_negative_int, default=DEFAULT_MAX_DELETIONS, metavar="N",
                   help=f"refuse more deletions than this (default {DEFAULT_MAX_DELETIONS})")
    p.add_argument("--resync", type=_seconds, default=300.0, metavar="DURATION",
                   help="full resync interval, jittered ±10%% (default 5m)")
    p.add_argument("--light-resync", type=_seconds_or_off, default=4.0, metavar="DURATION",
                   help="how often each host is fingerprinted for changes libvirt sends no event for "
                   "(setmem --config, autostart, net-update); a changed object is reconciled alone; "
                   "every domain's definitions are read every 3 passes (default 4s; 0 or off: none)")
    p.add_argument("--workers", type=positive_int, default=16, metavar="N",
                   help="reconciles at once; a host's guests are reconciled at once too (default 16)")
    p.add_argument("--notify", type=_url, metavar="URL", help="POST JSON notifications here")
    p.add_argument("--suspend", action="store_true", help="start suspended: report only "
                   "(SIGUSR1 toggles)")
    p.add_argument("--thrash-limit", type=positive_int, default=5, metavar="N",
                   help="repairs of one object within --thrash-window that count as thrashing")
    p.add_argument("--thrash-window", type=_seconds, default=600.0, metavar="DURATION",
                   help="the window of --thrash-limit (default 10m)")
    p.add_argument("--shutdown-timeout", type=_seconds, default=60.0, metavar="DURATION",
                   help="SIGTERM waits this long for reconciles in flight (default 60s)")
    p.add_argument("--snapshot-interval", type=_seconds, default=60.0, metavar="DURATION",
                   help="how often snapshot policies are checked (default 1m)")
    p.add_argument("--log-format", choices=("json", "console"), default="json", help="log lines for machines "
                   "or people")
    add_max_file_size(p)

    p = verb("snapshots", lambda a: (a.snap_parser.print_help(), EXIT_USAGE)[1],
             "snapshot policies: run a pass, list, restore",
             "Snapshot policies: `run` a pass, `list`, `restore`.")
    p.set_defaults(snap_parser=p)
    snap = p.add_subparsers(dest="snap_verb", metavar="ACTION", parser_class=type(p))
    s = snap.add_parser("run", help="one scheduling pass: take what is due, prune by retention",
                        description="One snapshot-policy pass: take what is due, prune by retention.")
    s.set_defaults(func=cmd_snapshots_run)
    common(s)
    _lock_options(s)
    s.add_argument("--at", type=instant, metavar="TIME", help="the pass's time (ISO 8601 with a timezone, "
                   "e.g. 2026-01-01T03:00:00Z; default now)")
    _audit_option(s)
    s.set_defaults(post=_fill_commit)
    s = snap.add_parser("list", help="snapshots of the guests in the specs",
                        description="The snapshots of the guests in the specs, with the policy that made them.")
    s.set_defaults(func=cmd_snapshots_list)
    common(s)
    s.add_argument("--guest", action="append", metavar="NAME", help="only this guest (repeatable)")
    s.add_argument("--format", choices=("text", "json"), default="text", help="json: a list of snapshots")
    s = snap.add_parser("restore", help="revert a guest to a snapshot",
                        description="Revert a guest to a snapshot (internal snapshots; libvirt 9.0 cannot revert "
                        "to external ones).")
    s.set_defaults(func=cmd_snapshots_restore)
    s.add_argument("guest", metavar="GUEST", help="the guest to revert")
    s.add_argument("snapshot", metavar="SNAPSHOT", help="the snapshot's name (see snapshots list)")
    common(s)
    s.add_argument("--yes", "-y", action="store_true", help="do not ask (required without a TTY)")

    _register_backups(verb, common)

    p = verb("adopt", cmd_adopt, "take over every existing object whose spec matches it exactly",
             "Writes this instance's ownership record into every existing, unowned guest, network and pool "
             "of the specs that plans no change (say, the output of export), and names the others with the "
             "reason; nothing else changes. Exit 2 when some were left alone.")
    common(p)
    p.add_argument("--yes", "-y", action="store_true", help="do not ask (required without a TTY)")
    _lock_options(p)
    p.set_defaults(post=_fill_commit)

    p = verb("place", cmd_place, "choose hosts for guests with a hostSelector; writes placement.lock.yaml",
             "Choose hosts for guests with a hostSelector by memory left; writes placement.lock.yaml next to "
             "the specs.")
    spec_args(p)
    _instance(p)
    p.add_argument("--overcommit", type=positive_float, default=1.0, metavar="RATIO",
                   help="memory a host may commit, as a multiple of its physical memory (default 1.0)")

    p = verb("export", cmd_export, "write YAML specs from a host's live guests, networks and pools",
             "YAML specs from a host's live guests, networks and the storage pools their disks are in (any type "
             "virtsync models), to adopt "
             "them (--connect URI, or --specs naming the host).")
    p.add_argument("names", nargs="*", metavar="NAME", help="guests/networks/pools (default: all)")
    p.add_argument("--host", required=True, metavar="NAME", help="host name for the specs")
    p.add_argument("--connect", metavar="URI", help="libvirt URI of the host")
    p.add_argument("--specs", action="append", metavar="PATH", help="spec tree naming the host")
    add_max_file_size(p)
    p.add_argument("-o", "--output", metavar="PATH", help="write the YAML to this file, or one file per "
                   "object into this directory (an existing one, or a path ending in /); default: stdout")
    p.add_argument("--all", action="store_true", help="every object of the host: transient networks and "
                   "pools no guest uses too")
    p.add_argument("--schema-url", metavar="URL", help="the JSON Schema editors are pointed at in the first "
                   "line (default: the schema shipped with this virtsync, as a file: URL)")
    _instance(p)

    p = verb("history", cmd_history, "the changes virtsync made to one object, from the audit log",
             "Reads --audit-log FILE (written by apply, serve and snapshots run) and prints OBJECT's changes, "
             "oldest first: time, action, outcome, commit and author, object digests before and after, "
             "and whether it repaired drift.")
    p.add_argument("object", metavar="OBJECT", help="Kind/name (every host) or host/Kind/name, e.g. Guest/web "
                   "or kvm1/Network/lan; a Guest's history includes its snapshots")
    p.add_argument("--audit-log", required=True, metavar="FILE", help="the audit log to read")
    p.add_argument("--format", choices=("text", "json"), default="text", help="json: a list of audit lines")


def _diff_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--diff", action="store_true", help="also show, per changed guest or network, the unified "
                   "diff of the libvirt XML that will be defined (console passwords as digests)")


def _selector_term(text: str) -> str:
    key, sep, _ = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (a Host label), e.g. rack=a")
    return text


def _host_selector(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host-selector", action="append", type=_selector_term, metavar="KEY=VALUE",
                   help="only hosts with this label (repeatable: all must match)")


def _instance_name(text: str) -> str:
    from controller.spec.types import NAME_PATTERN

    if not re.match(NAME_PATTERN, text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid instance name: use 1-63 letters, digits, "
                                         "'.', '_' or '-', starting with a letter or digit")
    return text


def _url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"{text!r} is not an http:// or https:// URL")
    return text


def _instance(p: argparse.ArgumentParser) -> None:
    p.add_argument("--instance", type=_instance_name, default=os.environ.get("VIRTSYNC_INSTANCE", "default"),
                   metavar="NAME",
                   help="name of this spec repository's virtsync instance; objects of other "
                   "instances are never changed or pruned (env VIRTSYNC_INSTANCE; default: default)")


def _fill_commit(args: argparse.Namespace) -> None:
    if args.commit is None:
        # `apply PLANFILE`: the commit of the spec tree the plan was made from, not of the
        # directory the plan file happens to be in.
        from controller.gitinfo import git_commit

        saved = _saved_plan(args.paths[0]) if len(args.paths) == 1 else None
        args.commit = git_commit((saved or {}).get("sources") or args.paths)
