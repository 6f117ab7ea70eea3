"""`virtsync completion bash|zsh|fish`: shell completion generated from the argument parser.

The verbs, their sub-verbs, options and option choices are read from the parser that runs the
command line (cli.build_parser), so completion never lags behind it. What only the specs know
is asked at TAB time from a hidden helper, ``virtsync __complete hosts|guests [WORD…]``: the
Host (or Guest) names of the spec tree named by the existing paths among the command line's
words (else of the current directory), read without validating (a tree with an error still
completes), and ``virtsync __complete fields`` for ``explain``. Written by hand rather than with shtab
(no fish) or argcomplete (runs the whole program on every TAB).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

SHELLS = ("bash", "zsh", "fish")

# What a value (an option's or a positional's) completes to: "host", "guest", "file", "dir", "field",
# "=WORD WORD" (fixed choices) or "" (nothing: a free value such as a URI or a number).
_FILE_METAVARS = {"FILE", "PATH", "PLANFILE"}
_HOST_LIMIT_FILES = 2000  # a TAB in a big directory must not read it all
_HOST_FILE_BYTES = 8 << 20


@dataclass
class Option:
    names: tuple[str, ...]
    value: str | None  # None: a flag; else what its value completes to
    help: str


@dataclass
class Command:
    path: str  # "" (virtsync itself), "plan", "snapshots run"
    help: str = ""
    options: list[Option] = field(default_factory=list)
    positional: str = ""  # what the first positional completes to (fish completes every one so)
    positionals: list[tuple[str, bool]] = field(default_factory=list)  # (kind, repeats: nargs + or *)
    subcommands: dict[str, str] = field(default_factory=dict)  # name → help


def _value_kind(a: argparse.Action) -> str:
    if a.choices:
        return "=" + " ".join(str(c) for c in a.choices)
    metavar = str(a.metavar or "")
    if a.dest == "host" or metavar == "HOST" or (a.dest == "hosts" and metavar == "NAME"):
        return "host"
    if a.dest == "guest" or metavar == "GUEST":
        return "guest"
    if a.dest == "field_name":
        return "field"
    if metavar in _FILE_METAVARS or a.dest in ("paths", "specs"):
        return "file"
    if metavar == "DIR":
        return "dir"
    return ""


def _help(text: str | None) -> str:
    return " ".join((text or "").replace("%%", "%").split())


def commands(parser: argparse.ArgumentParser, path: str = "", help: str = "") -> Iterator[Command]:
    """Every command of the parser tree, parents first."""
    cmd = Command(path, help)
    children: list[tuple[str, argparse.ArgumentParser, str]] = []
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            helps = {c.dest: _help(c.help) for c in a._choices_actions}
            for name, sub in a.choices.items():
                if name.startswith("_"):
                    continue
                cmd.subcommands[name] = helps.get(name, "")
                children.append((name, sub, helps.get(name, "")))
        elif a.option_strings:
            if a.help == argparse.SUPPRESS:
                continue
            cmd.options.append(Option(tuple(a.option_strings), None if a.nargs == 0 else _value_kind(a),
                                      _help(a.help)))
        else:
            cmd.positionals.append((_value_kind(a), a.nargs in ("+", "*")))
            if len(cmd.positionals) == 1:
                cmd.positional = cmd.positionals[0][0]
    yield cmd
    for name, sub, text in children:
        yield from commands(sub, f"{path} {name}".strip(), text)


# ------------------------------------------------------------ the helpers TAB calls


def spec_host_names(words: Sequence[str], kind: str = "Host") -> list[str]:
    """Names of ``kind`` objects in the spec files under the existing paths among ``words``
    (default: the current directory); unreadable or invalid files are skipped, never reported."""
    from ruamel.yaml import YAML

    from controller.spec.loader import find_spec_files

    paths = [w for w in words if w and not w.startswith("-") and os.path.exists(w)] or ["."]
    files, _ = find_spec_files(paths)
    names: set[str] = set()
    yaml = YAML(typ="safe", pure=True)
    for f in files[:_HOST_LIMIT_FILES]:
        try:
            if f.stat().st_size > _HOST_FILE_BYTES:
                continue
            for doc in yaml.load_all(f.read_text(errors="replace")):
                if isinstance(doc, dict) and doc.get("kind") == kind:
                    name = (doc.get("metadata") or {}).get("name")
                    if isinstance(name, str) and name:
                        names.add(name)
        except Exception:  # a TAB never fails on a broken file
            continue
    return sorted(names)


def run_helper(argv: Sequence[str]) -> int:
    """``virtsync __complete hosts [WORD…]`` / ``__complete fields``: one candidate a line."""
    what, rest = (argv[0], argv[1:]) if argv else ("", [])
    if what in ("hosts", "guests"):
        out = spec_host_names(rest, "Host" if what == "hosts" else "Guest")
    elif what == "fields":
        from controller.explain import entries

        out = sorted({e.name for e in entries()} | {e.title for e in entries()})
    else:
        print("usage: virtsync __complete hosts|guests [WORD...] | fields", file=sys.stderr)
        return 64
    sys.stdout.write("".join(f"{x}\n" for x in out))
    return 0


# ------------------------------------------------------------ the scripts


def _key(path: str) -> str:
    # Keyed by the command as typed ("virtsync snapshots run"): bash refuses an empty key.
    return f"virtsync {path}".strip()


def _tables(cmds: list[Command]) -> dict[str, dict[str, str]]:
    sub = {_key(c.path): " ".join(c.subcommands) for c in cmds if c.subcommands}
    opts = {_key(c.path): " ".join(n for o in c.options for n in o.names) for c in cmds}
    vals = {f"{_key(c.path)} {n}": o.value or "-" for c in cmds for o in c.options if o.value is not None
            for n in o.names}
    # "virtsync snapshots restore 0" → the first positional's kind; "… *" from a repeating one on.
    pos: dict[str, str] = {}
    for c in cmds:
        for i, (kind, repeats) in enumerate(c.positionals):
            pos[f"{_key(c.path)} {'*' if repeats else i}"] = kind or "-"
            if repeats:
                break
    return {"sub": sub, "opts": opts, "val": vals, "pos": pos}


def _assoc(shell: str, name: str, table: dict[str, str]) -> str:
    body = "\n".join(f"    [{shlex.quote(k)}]={shlex.quote(v)}" for k, v in sorted(table.items()))
    decl = "typeset -gA" if shell == "zsh" else "declare -gA"
    return f"{decl} {name}=(\n{body}\n)"


# The walk over the words typed so far is the same in bash and zsh: find the command (descending
# into sub-verbs), skip option values, and say what the current word completes to. Subscripts stay
# unquoted: zsh keeps quotes in them as part of the key (bash does not split them either).
_WALK = r'''
    local cmd="virtsync" expect="" w i npos=0
    for ((i = FIRST; i < LAST; i++)); do
        w="${WORDS[i]}"
        if [[ -n "$expect" ]]; then expect=""; continue; fi
        case "$w" in
            --*=*) continue ;;
            -*) if [[ -n "${_virtsync_val[$cmd $w]}" ]]; then expect=1; fi; continue ;;
        esac
        if [[ " ${_virtsync_sub[$cmd]} " == *" $w "* ]]; then
            cmd="$cmd $w"
            npos=0
        else
            npos=$((npos + 1))
        fi
    done
    local kind=""
    if [[ -n "$expect" ]]; then
        kind="${_virtsync_val[$cmd ${WORDS[LAST-1]}]}"
    elif [[ "$CUR" == -* ]]; then
        kind="=${_virtsync_opts[$cmd]}"
    elif [[ -n "${_virtsync_sub[$cmd]}" ]]; then
        kind="=${_virtsync_sub[$cmd]}"
    else
        kind="${_virtsync_pos[$cmd $npos]}"
        [[ -z "$kind" ]] && kind="${_virtsync_pos[$cmd *]}"
    fi
'''


def bash_script(parser: argparse.ArgumentParser) -> str:
    t = _tables(list(commands(parser)))
    walk = _WALK.replace("FIRST", "1").replace("LAST", "COMP_CWORD").replace("WORDS", "COMP_WORDS") \
        .replace("$CUR", "$cur")
    return f'''# bash completion for virtsync, generated from its argument parser by `virtsync completion bash`.
# Load it with:  source <(virtsync completion bash)   (or save it in bash-completion's completions/ as virtsync)
{_assoc("bash", "_virtsync_sub", t["sub"])}
{_assoc("bash", "_virtsync_opts", t["opts"])}
{_assoc("bash", "_virtsync_val", t["val"])}
{_assoc("bash", "_virtsync_pos", t["pos"])}

_virtsync() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}"
{walk}
    COMPREPLY=()
    case "$kind" in
        "="*) COMPREPLY=($(compgen -W "${{kind#=}}" -- "$cur")) ;;
        host|guest) COMPREPLY=($(compgen -W \
            "$("${{COMP_WORDS[0]}}" __complete "${{kind}}s" "${{COMP_WORDS[@]:1}}" 2>/dev/null)" -- "$cur")) ;;
        field) COMPREPLY=($(compgen -W "$("${{COMP_WORDS[0]}}" __complete fields 2>/dev/null)" -- "$cur")) ;;
        file) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur")) ;;
        dir) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -d -- "$cur")) ;;
    esac
}}
complete -F _virtsync virtsync
'''


def zsh_script(parser: argparse.ArgumentParser) -> str:
    t = _tables(list(commands(parser)))
    # zsh's words are 1-based, the command at 1 and the current word at CURRENT.
    walk = _WALK.replace("FIRST", "2").replace("LAST", "CURRENT").replace("WORDS", "words") \
        .replace("$CUR", "$PREFIX")
    return f'''#compdef virtsync
# zsh completion for virtsync, generated from its argument parser by `virtsync completion zsh`.
# Save it as _virtsync in a directory of $fpath (before compinit), or: source <(virtsync completion zsh)
{_assoc("zsh", "_virtsync_sub", t["sub"])}
{_assoc("zsh", "_virtsync_opts", t["opts"])}
{_assoc("zsh", "_virtsync_val", t["val"])}
{_assoc("zsh", "_virtsync_pos", t["pos"])}

_virtsync() {{
{walk}
    case "$kind" in
        "="*) compadd -- ${{=kind#=}} ;;
        host|guest) compadd -- ${{(f)"$(${{words[1]}} __complete ${{kind}}s ${{words[2,-1]}} 2>/dev/null)"}} ;;
        field) compadd -- ${{(f)"$(${{words[1]}} __complete fields 2>/dev/null)"}} ;;
        file) _files ;;
        dir) _files -/ ;;
    esac
}}
if [[ "${{funcstack[1]}}" == _virtsync ]]; then _virtsync "$@"; else compdef _virtsync virtsync; fi
'''


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fish_script(parser: argparse.ArgumentParser) -> str:
    cmds = list(commands(parser))
    by_path = {c.path: c for c in cmds}
    out = ["# fish completion for virtsync, generated from its argument parser by `virtsync completion fish`.",
           "# Save it as ~/.config/fish/completions/virtsync.fish, or: virtsync completion fish | source",
           "complete -c virtsync -f"]
    values = {"host": "(virtsync __complete hosts (commandline -opc)[2..-1])",
              "guest": "(virtsync __complete guests (commandline -opc)[2..-1])",
              "field": "(virtsync __complete fields)"}

    def condition(path: str) -> str:
        if not path:
            return "__fish_use_subcommand"
        parts = path.split()
        cond = [f"__fish_seen_subcommand_from {p}" for p in parts]
        sub = by_path[path].subcommands
        if sub:
            cond.append(f"not __fish_seen_subcommand_from {' '.join(sub)}")
        return "; and ".join(cond)

    for c in cmds:
        cond = _fish_quote(condition(c.path)) if c.path else "__fish_use_subcommand"
        for name, text in c.subcommands.items():
            out.append(f"complete -c virtsync -n {cond} -a {name} -d {_fish_quote(text)}")
        for o in c.options:
            flags = " ".join(f"-l {n[2:]}" if n.startswith("--") else f"-s {n[1:]}" for n in o.names)
            line = f"complete -c virtsync -n {cond} {flags} -d {_fish_quote(o.help[:80])}"
            if o.value is not None:
                if o.value.startswith("="):
                    line += f" -x -a {_fish_quote(o.value[1:])}"
                elif o.value in values:
                    line += f" -x -a {_fish_quote(values[o.value])}"
                elif o.value in ("file", "dir"):
                    line += " -r -F"
                else:
                    line += " -x"
            out.append(line)
        if c.positional and not c.subcommands and c.path:
            if c.positional.startswith("="):
                out.append(f"complete -c virtsync -n {cond} -a {_fish_quote(c.positional[1:])}")
            elif c.positional in values:
                out.append(f"complete -c virtsync -n {cond} -a {_fish_quote(values[c.positional])}")
            elif c.positional in ("file", "dir"):
                out.append(f"complete -c virtsync -n {cond} -F")
    return "\n".join(out) + "\n"


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    return {"bash": bash_script, "zsh": zsh_script, "fish": fish_script}[shell](parser)
