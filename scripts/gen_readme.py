#!/usr/bin/env python3
"""Writes the README's generated parts: the CLI tables from the argument parser (controller/cli.py
and the ``register`` of controller/commands.py), between ``<!-- generated: cli -->`` and
``<!-- end generated -->``, and "How a change lands" from the field registry, between
``<!-- generated: fields -->`` and ``<!-- end generated -->``. Nothing else of the README is touched.

    scripts/gen_readme.py            rewrite README.md
    scripts/gen_readme.py --check    exit 1 if README.md is not current (tests/unit/test_readme.py)
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BEGIN = "<!-- generated: cli -->"
END = "<!-- end generated -->"
_SECTION = re.compile(re.escape(BEGIN) + r"\n.*?" + re.escape(END), re.S)

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _verbs(parser: argparse.ArgumentParser, prog: str = "virtsync") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(command, parser) of every verb that runs something, in the parser's order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)
                if nested:
                    yield from _verbs(sub, f"{prog} {name}")
                else:
                    yield f"{prog} {name}", sub


def _positionals(parser: argparse.ArgumentParser) -> str:
    words = []
    for a in parser._actions:
        if a.option_strings or isinstance(a, argparse._SubParsersAction):
            continue
        metavar = str(a.metavar or a.dest.upper())
        if a.nargs == "+":
            words.append(f"{metavar}…")
        elif a.nargs == "*":
            words.append(f"[{metavar}…]")
        else:
            words.append(metavar)
    return " ".join(words)


def _option(a: argparse.Action) -> str:
    names = ", ".join(sorted(a.option_strings, key=lambda o: (o.startswith("--"), o)))
    if a.nargs == 0:
        return names
    value = "\\|".join(str(c) for c in a.choices) if a.choices else str(a.metavar or a.dest.upper())
    return f"{names} {value}"


def _options(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    rows = []
    for a in parser._actions:
        if not a.option_strings or a.help == argparse.SUPPRESS or isinstance(a, argparse._HelpAction):
            continue
        text = (a.help or "").replace("%%", "%")
        if a.choices and "default" not in text.lower() and a.default is not None:
            text = f"{text}; default {a.default}" if text else f"default {a.default}"
        if isinstance(a, argparse._AppendAction) and "repeatable" not in text:
            text += " (repeatable)"
        rows.append((_option(a), text))
    return rows


def render_cli() -> str:
    from controller.cli import build_parser

    parser = build_parser()
    verbs = list(_verbs(parser))
    out = ["| verb | does |", "| --- | --- |"]
    for command, sub in verbs:
        usage = f"{command} {_positionals(sub)}".rstrip()
        out.append(f"| `{usage}` | {_cell(sub.description or '')} |")
    out += ["", "Options, as `virtsync VERB --help` lists them. Before the verb: "
            + ", ".join(f"`{opt}` ({text})" for opt, text in _options(parser)) + ".", ""]
    # Options several verbs share (same spelling, same meaning) are listed once.
    per_verb = {command: _options(sub) for command, sub in verbs}
    users: dict[tuple[str, str], list[str]] = {}
    for command, rows in per_verb.items():
        for row in rows:
            users.setdefault(row, []).append(command.removeprefix("virtsync "))
    shared = [row for row, names in users.items() if len(names) >= 3]
    out += ["| shared option | verbs | |", "| --- | --- | --- |"]
    out += [f"| `{opt}` | {', '.join(users[(opt, text)])} | {_cell(text)} |" for opt, text in shared]
    for command, rows in per_verb.items():
        own = [row for row in rows if row not in shared]
        if not own:
            continue
        out += ["", f"`{command}`:", "", "| option | |", "| --- | --- |"]
        out += [f"| `{opt}` | {_cell(text)} |" for opt, text in own]
    return "\n".join(out) + "\n"


FIELDS_BEGIN = "<!-- generated: fields -->"
_FIELDS_SECTION = re.compile(re.escape(FIELDS_BEGIN) + r"\n.*?" + re.escape(END), re.S)


def render_fields() -> str:
    from controller.fields.docs import render_readme_lands

    return render_readme_lands()


def update(text: str) -> str:
    """``text`` (the README) with its generated sections rewritten."""
    for begin, section, render in ((BEGIN, _SECTION, render_cli), (FIELDS_BEGIN, _FIELDS_SECTION, render_fields)):
        if not section.search(text):
            raise ValueError(f"README.md has no {begin} … {END} section")
        text = section.sub(lambda _m, b=begin, r=render: f"{b}\n{r()}{END}", text, count=1)  # type: ignore[misc]
    return text


def main(argv: list[str]) -> int:
    current = README.read_text(encoding="utf-8")
    wanted = update(current)
    if "--check" in argv:
        if wanted != current:
            print("README.md's generated parts are stale: run scripts/gen_readme.py", file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        README.write_text(wanted, encoding="utf-8")
        print("wrote README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
