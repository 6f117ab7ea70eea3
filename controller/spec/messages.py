"""pydantic's validation errors → one clear sentence each, with 'did you mean'."""

from __future__ import annotations

import types
import typing
from typing import Any, Union

from pydantic import BaseModel

from controller.spec.types import FieldError
from controller.spec.yaml_reader import resolve_plain

_TYPE_NAMES = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "bool_type": "true or false",
    "string_type": "a string",
    "float_type": "a number",
    "dict_type": "a mapping",
    "list_type": "a list",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "document"


_BOUNDS = {
    "greater_than": "greater than {gt}",
    "greater_than_equal": "at least {ge}",
    "less_than": "less than {lt}",
    "less_than_equal": "at most {le}",
}
MAX_MESSAGE = 300
_YAML11_BOOLS = {"yes", "no", "on", "off", "y", "n"}
_WANTED = {"int_type": int, "bool_type": bool, "float_type": float}


def clip(message: str, limit: int = MAX_MESSAGE) -> str:
    """One line of bounded length: a megabyte-long value quoted back keeps head and tail."""
    message = " ".join(message.splitlines())
    if len(message) <= limit:
        return message
    half = (limit - 5) // 2
    return f"{message[:half]} […] {message[-half:]}"


def describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types inside Optional/Union/list/dict/Annotated."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType, list, dict):
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            out.extend(_unwrap(arg))
        return out
    return [annotation]


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None:
            return None
        if isinstance(part, int):
            continue
        field = next(
            (f for name, f in current.model_fields.items() if (f.alias or name) == part), None
        )
        if field is None:
            return None
        current = next(
            (
                t
                for t in _unwrap(field.annotation)
                if isinstance(t, type) and issubclass(t, BaseModel)
            ),
            None,
        )
    return current


def field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def locate(err: Any) -> tuple[tuple[Any, ...], bool]:
    """Where an error points in the document, and whether at a mapping key."""
    loc: tuple[Any, ...] = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        return loc, True
    if loc and loc[-1] == "[key]":  # pydantic's marker for a bad dict key
        return loc[:-1], True
    error = err.get("ctx", {}).get("error")
    if isinstance(error, FieldError):
        return loc + error.path, False
    return loc, False


def _quote_hint(value: str, kind: str) -> str:
    if kind == "bool_type" and value.lower() in _YAML11_BOOLS:
        return " (YAML 1.2 reads yes/no/on/off as strings: write true or false)"
    try:
        unquoted = resolve_plain(value)
    except ValueError:
        return ""
    return " (remove the quotes)" if type(unquoted) is _WANTED[kind] else ""


def explain(model: type[BaseModel], err: Any) -> str:
    loc, at_key = locate(err)
    kind = err["type"]
    where = dotted(loc[:-1] if at_key and kind != "extra_forbidden" else loc)
    value = err.get("input")
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        name = str(loc[-1])
        allowed = field_names(parent) if parent else []
        import difflib  # here: only a spec with errors needs it

        hint = difflib.get_close_matches(name, allowed, n=1)
        tail = f"; did you mean {hint[0]!r}?" if hint else ""
        listing = f" (allowed: {', '.join(allowed)})" if allowed and not hint else ""
        return f"unknown field {name!r} in {dotted(loc[:-1])}{tail}{listing}"
    if kind == "missing":
        return f"missing required field {where}"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        choices = [c.strip(" '") for c in expected.replace(" or ", ",").split(",") if c.strip()]
        import difflib

        hint = difflib.get_close_matches(str(value), choices, n=1) if isinstance(value, str) else []
        tail = f"; did you mean {hint[0]!r}?" if hint else ""
        return f"{where}: expected one of {', '.join(choices)}, got {describe(value)}{tail}"
    if kind in _BOUNDS:
        bound = _BOUNDS[kind].format(**err.get("ctx", {}))
        return f"{where}: expected {bound}, got {describe(value)}"
    if kind in _TYPE_NAMES:
        tail = _quote_hint(value, kind) if isinstance(value, str) and kind in _WANTED else ""
        return f"{where}: expected {_TYPE_NAMES[kind]}, got {describe(value)}{tail}"
    if kind == "string_pattern_mismatch":
        return f"{where}: {describe(value)} does not match {err.get('ctx', {}).get('pattern')}"
    msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return f"{where}: {msg}"
