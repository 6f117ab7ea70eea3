"""The command line: verbs, options, exit codes.

Exit codes, the same for every verb: 0 done / in sync; 1 any error; 2 only
"there are changes" (plan) or "there is drift" (drift); 64 usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import gc
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from controller import __version__
from controller.errors import SpecError, UsageError, VirtsyncError
from controller.launch import flush_output, named_verb

if TYPE_CHECKING:
    from controller.noop_memo import Recording

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
EXIT_USAGE = 64

# A one-shot verb keeps nearly every object it makes (modules, spec models, typed actions), so
# the collector's passes over them find next to nothing: with the default threshold (700) they
# were ~1.6% of a no-op plan's instructions and ~5% of its CPU time (issue 17). One-shot verbs
# collect their youngest generation every 200,000 allocations instead; serve, which runs for
# good, keeps the interpreter's default.
ONE_SHOT_GC_THRESHOLD = 200_000


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


# Option converters: a bad value is an argparse.ArgumentTypeError, which the parser turns into
# "error: argument --x: …" and exit 64 (a usage error), never an internal error.


def size_arg(text: str) -> int:
    """Bytes: a size with a unit (8MiB), or a bare number of bytes."""
    from controller.spec.units import parse_size

    try:
        return int(text) if text.isdigit() else parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def non_negative_int(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (0 or more)")
    return int(text)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number greater than 0, e.g. 1.5")
    return value


INSTANT_FORMATS = "ISO 8601 with a timezone, e.g. 2026-01-01T03:00:00Z or 2026-01-01T04:00:00+01:00"


def instant(text: str) -> datetime:
    """A point in time: ISO 8601 with its zone (a naive time would be a guess)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time; expected {INSTANT_FORMATS}") from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no timezone; expected {INSTANT_FORMATS}")
    return when


def add_max_file_size(p: argparse.ArgumentParser) -> None:
    """--max-file-size (env VIRTSYNC_MAX_FILE_SIZE), for every verb that loads spec files."""
    p.add_argument(
        "--max-file-size",
        type=size_arg,
        default=os.environ.get("VIRTSYNC_MAX_FILE_SIZE", "8MiB"),  # argparse applies type
        metavar="SIZE",
        help="refuse spec files larger than this (default 8MiB; env VIRTSYNC_MAX_FILE_SIZE)",
    )
    p.add_argument("--policy", metavar="FILE", default=os.environ.get("VIRTSYNC_POLICY_FILE") or None,
                   help="a tenancy policy (kind: Policy) the specs must keep to (env VIRTSYNC_POLICY_FILE)")
    # Read when the specs load (spec/secrets.py), from the environment when not given here.
    p.add_argument("--age-identity", metavar="FILE", default=None,
                   help="age identity (age-keygen's key file, or an SSH private key) that decrypts Secrets "
                   "with encryption: age (env VIRTSYNC_AGE_IDENTITY_FILE)")


def _limits(args: argparse.Namespace) -> Any:
    from controller.spec.yaml_reader import Limits

    return Limits(max_file_bytes=args.max_file_size)


# ------------------------------------------------------------------ verbs


def cmd_validate(args: argparse.Namespace) -> int:
    from controller.spec.loader import find_spec_files, load_specs

    result = load_specs(args.paths, _limits(args), policy=getattr(args, "policy", None))
    files, _ = find_spec_files(args.paths)
    counts = Counter(item.obj.kind for item in result.specs.items)
    if args.format == "json":
        doc = {
            "schemaVersion": 1,
            "valid": not result.errors,
            "files": len(files),
            "objects": dict(sorted(counts.items())),
            "diagnostics": [d.as_json() for d in result.diagnostics],
        }
        print(json.dumps(doc, indent=2))
    else:
        for d in result.diagnostics:
            print(d.render(), file=sys.stderr)
        if result.errors:
            print(f"invalid: {len(result.errors)} error(s) in {len(files)} file(s)", file=sys.stderr)
        else:
            summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no objects"
            print(f"valid: {len(files)} file(s), {summary}")
    return EXIT_ERROR if result.errors else EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from controller.fields.docs import render_fields_md
    from controller.spec.schema import write_schemas

    for path in write_schemas(Path(args.out)):
        print(f"wrote {path}")
    # The field registry's reference page lives beside the schemas' directory, in docs/.
    fields_md = Path(args.out).resolve().parent / "docs" / "fields.md"
    fields_md.parent.mkdir(parents=True, exist_ok=True)
    fields_md.write_text(render_fields_md())
    print(f"wrote {fields_md}")
    return EXIT_OK


def cmd_version(args: argparse.Namespace) -> int:
    print(f"virtsync {__version__}")
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    from controller.explain import find, render, render_list

    if args.list:
        sys.stdout.write(render_list())
        return EXIT_OK
    if not args.field_name:
        raise UsageError("name a field, e.g. `virtsync explain memory` (`--list` lists them)")
    print("\n".join(render(e) for e in find(args.field_name)), end="")
    return EXIT_OK


def cmd_completion(args: argparse.Namespace) -> int:
    from controller.completion import script

    sys.stdout.write(script(args.shell, build_parser()))
    return EXIT_OK


# ----------------------------------------------------------------- parser


class _Unbuilt:
    """Stands for the parser of a verb that this command line does not name: every call is
    taken and dropped (build_parser(only=...)), so that only the named verb's options are built."""

    def __getattr__(self, _name: str) -> Callable[..., _Unbuilt]:
        return lambda *_args, **_kwargs: self


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line's parser; with ``only``, one whose only verb is that one (building
    every verb's options was ~4% of a no-op plan, issue 17), or the whole one if no verb has
    that name, so that the error names the verbs there are."""
    built: list[str] = []
    parser = _Parser(prog="virtsync", description="GitOps for libvirt: converge KVM and Xen "
                     "hosts to YAML specs.")
    parser.add_argument("--version", action="version", version=f"virtsync {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)

    def verb(name: str, func: Callable[[argparse.Namespace], int], help: str,
             description: str | None = None) -> _Parser:
        # help: the one line of `virtsync --help`; description: the README's CLI table and VERB --help
        if only is not None and name != only:
            return _Unbuilt()  # type: ignore[return-value]
        built.append(name)
        p: _Parser = sub.add_parser(name, help=help, description=description or help)
        p.set_defaults(func=func)
        return p

    def spec_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("paths", nargs="+", metavar="PATH", help="spec files or directories")
        add_max_file_size(p)

    p = verb("validate", cmd_validate, "check specs; every problem with file:line:column",
             "Parse and check every spec; each problem as file:line:column (warnings too).")
    spec_args(p)
    p.add_argument("--format", choices=("text", "json"), default="text", help="json: the validate.schema.json document")

    p = verb("schema", cmd_schema, "write the JSON Schemas (spec format and outputs)",
             "Write the JSON Schemas of the spec format and of the JSON outputs under specs/.")
    p.add_argument("--out", default="specs", metavar="DIR", help="directory (default: specs)")

    verb("version", cmd_version, "print the version")
    _register_toolbox_verbs(verb)
    _register_engine_verbs(verb, spec_args)
    return parser if built or only is None else build_parser()


def _register_toolbox_verbs(verb: Any) -> None:
    p = verb("explain", cmd_explain, "what a spec field maps to in libvirt and how a change of it lands",
             "From the field registry: a field's libvirt XML, its impact (live, next boot, recreate) and live "
             "call, and an example written by its own writer. FIELD: memory, Guest.disks.cache, Network.ipv4, "
             "/spec/interfaces/0/model… An unknown name exits 64 naming the closest.")
    p.add_argument("field_name", nargs="?", metavar="FIELD", help="the field (a bare name covers every kind)")
    p.add_argument("--list", action="store_true", help="list every field")
    p = verb("completion", cmd_completion, "print a shell completion script (bash, zsh, fish)",
             "A completion script generated from this argument parser: verbs, options, their choices, and Host "
             "names from the specs (asked at TAB time from the paths on the command line, else the current "
             "directory). bash: source <(virtsync completion bash); zsh: save as _virtsync in $fpath; fish: "
             "save as ~/.config/fish/completions/virtsync.fish.")
    p.add_argument("shell", choices=("bash", "zsh", "fish"), metavar="SHELL", help="bash, zsh or fish")


def _register_engine_verbs(verb: Any, spec_args: Callable[[argparse.ArgumentParser], None]) -> None:
    try:
        from controller.commands import register
    except ImportError:  # the engine verbs are optional while it is being built
        return
    register(verb, spec_args)


def _age_identity(args: argparse.Namespace) -> contextlib.AbstractContextManager[None]:
    """--age-identity FILE for the specs this command loads (without it: the environment's)."""
    if getattr(args, "age_identity", None) is None:
        return contextlib.nullcontext()
    from controller.spec.secrets import age_identity

    return age_identity(args.age_identity)


def main(argv: Sequence[str] | None = None) -> int:
    # A crash inside libvirt's C code (a fatal signal) prints every thread's Python stack to
    # stderr: the only trace a service's log would otherwise keep of it.
    if not faulthandler.is_enabled():
        with contextlib.suppress(AttributeError, ValueError, OSError):  # stderr without a file
            faulthandler.enable()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["__complete"]:  # what a completion script asks at TAB time (not a verb of the parser)
        from controller.completion import run_helper

        return run_helper(argv[1:])
    parser = build_parser(only=named_verb(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from controller.logging import configure

    configure(verbose=args.verbose)
    thresholds = gc.get_threshold()
    if args.verb != "serve":
        gc.set_threshold(ONE_SHOT_GC_THRESHOLD)
    try:
        with _age_identity(args):
            if getattr(args, "post", None):
                args.post(args)
            return int(args.func(args))
    except UsageError as exc:
        print(f"virtsync: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SpecError as exc:
        for d in exc.diagnostics:
            print(d.render(), file=sys.stderr)
        return EXIT_ERROR
    except VirtsyncError as exc:
        print(f"virtsync: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # a file that cannot be written or read: the machine's answer, not a bug
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"virtsync: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("virtsync: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: say so in one line unless asked for more
        if args.debug:
            raise
        print(f"virtsync: internal error: {type(exc).__name__}: {exc} (run with --debug for "
              "the traceback)", file=sys.stderr)
        return EXIT_ERROR
    finally:
        gc.set_threshold(*thresholds)  # main() called in-process (tests) leaves the caller's


# Verbs whose process ends without the interpreter's teardown. Tearing down frees what is left
# (libvirt's connections, domains, the event loop's callbacks), and each such free that talks
# to libvirtd waits for its reply: right after an apply started 20 guests, whose vCPUs keep a
# 2-CPU host busy, that was 2-3 s between "Apply: ..." and the end of the process (issue 17).
FAST_EXIT_VERBS = frozenset({"plan", "apply", "drift"})


def run(recording: Recording | None = None) -> NoReturn:
    """The command: main(), then exit. For FAST_EXIT_VERBS the exit handlers run (atexit, weakref
    finalizers, logging's flush) and the output is flushed, then the process ends without freeing
    the rest one object at a time. ``recording``: the no-op memo's of this run (launch.run), kept
    once main() has returned."""
    code = main()
    if recording is not None:
        recording.finish(code)
    if named_verb(sys.argv[1:]) not in FAST_EXIT_VERBS:
        raise SystemExit(code)
    _fast_exit(code)


def _fast_exit(code: int) -> NoReturn:
    import atexit
    import logging

    atexit._run_exitfuncs()
    logging.shutdown()
    flush_output()
    os._exit(code)
