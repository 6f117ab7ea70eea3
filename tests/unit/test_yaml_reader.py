"""controller.spec.yaml_reader: YAML 1.2 core values, marks, merges, anchors and limits."""

from __future__ import annotations

from typing import Any

import pytest

from controller.spec.yaml_reader import (
    MAX_INT_DIGITS,
    Document,
    Limits,
    YamlProblem,
    read_documents,
    resolve_plain,
)

pytestmark = pytest.mark.timeout(10)


def one(text: str, limits: Limits | None = None) -> Document:
    docs = read_documents(text, limits or Limits())
    assert len(docs) == 1
    return docs[0]


def value(text: str) -> Any:
    return one(f"v: {text}\n").data["v"]


def problem(text: str, limits: Limits | None = None) -> YamlProblem:
    with pytest.raises(YamlProblem) as info:
        read_documents(text, limits or Limits())
    return info.value


# --------------------------------------------------------- core resolution


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # YAML 1.1 booleans are plain strings in 1.2
        ("yes", "yes"), ("no", "no"), ("on", "on"), ("off", "off"), ("y", "y"), ("Yes", "Yes"),
        ("true", True), ("True", True), ("TRUE", True),
        ("false", False), ("False", False), ("FALSE", False),
        # a MAC or a time is not a base-60 number
        ("52:54:00:00:00:01", "52:54:00:00:00:01"), ("1:20", "1:20"), ("12:30:00", "12:30:00"),
        # integers
        ("0", 0), ("42", 42), ("-2", -2), ("+3", 3), ("017", 17), ("0x10", 16), ("0xFf", 255),
        ("0o17", 15),
        # not integers in the core schema
        ("0b101", "0b101"), ("1_000", "1_000"), ("0x1_0", "0x1_0"), ("-0x10", "-0x10"),
        ("0x", "0x"), ("0o8", "0o8"),
        # floats
        ("1.5", 1.5), ("-0.25", -0.25), (".5", 0.5), ("1.", 1.0), ("1e3", 1000.0),
        ("2.5E-1", 0.25),
        # null
        ("~", None), ("null", None), ("Null", None), ("NULL", None), ("", None),
        # everything else is a string: no timestamps, no sizes, no .inf
        ("2001-12-14", "2001-12-14"), ("512MiB", "512MiB"), (".inf", ".inf"), ("nan", "nan"),
        ("qemu:///system", "qemu:///system"),
    ],
)
def test_plain_scalars_resolve_by_the_yaml_1_2_core_schema(text: str, expected: Any) -> None:
    got = value(text)
    assert got == expected
    assert type(got) is type(expected)
    assert resolve_plain(text) == expected


@pytest.mark.parametrize("text", ['"0x10"', "'true'", '"~"', "'1.5'", '"yes"', "''"])
def test_quoted_scalars_stay_strings(text: str) -> None:
    assert value(text) == text[1:-1]


def test_block_scalars_stay_strings() -> None:
    assert one("a: |\n  12\nb: >-\n  true\n").data == {"a": "12\n", "b": "true"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("!!str 12", "12"), ("!!str true", "true"), ('!!int "12"', 12), ("!!float 1", 1.0),
        ('!!bool "true"', True), ("!!null ''", None), ("!!map {a: 1}", {"a": 1}),
        ("!!seq [1]", [1]), ("! 12", "12"),
    ],
)
def test_core_tags_convert_or_keep_plain_data(text: str, expected: Any) -> None:
    got = value(text)
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("!!int abc", "!!int 'abc' is not a valid int"),
        ("!!bool yes", "!!bool 'yes' is not a valid bool"),
        ("!!float x", "!!float 'x' is not a valid float"),
        ("!!null 0", "!!null '0' is not null"),
        ("!!str {a: 1}", "tag !!str cannot tag a mapping"),
        ("!!map [a]", "tag !!map cannot tag a sequence"),
    ],
)
def test_core_tags_that_do_not_fit_the_value_are_errors(text: str, message: str) -> None:
    err = problem(f"v: {text}\n")
    assert err.message == message
    assert err.mark == (1, 4)


def test_integers_with_too_many_digits_are_refused_before_conversion() -> None:
    assert value("9" * MAX_INT_DIGITS) == int("9" * MAX_INT_DIGITS)
    err = problem("a: 1\nv: -" + "9" * 5000 + "\n")
    assert err.message == f"integer of 5000 digits is too large (at most {MAX_INT_DIGITS})"
    assert err.mark == (2, 4)
    assert problem("v: 0x" + "f" * 101 + "\n").message.startswith("integer of 101 digits")


def test_mapping_keys_are_strings_as_written() -> None:
    assert one("1: a\ntrue: b\nnull: c\n0x10: d\n").data == {
        "1": "a", "true": "b", "null": "c", "0x10": "d"
    }


@pytest.mark.parametrize("text", ["? [a, b]\n: c\n", "? {a: 1}\n: c\n", "x: &k a\n*k : 1\n"])
def test_keys_that_are_not_plain_scalars_are_errors(text: str) -> None:
    assert problem(text).message == "mapping keys must be plain strings"


# ------------------------------------------------------------------- marks


SPEC = """\
apiVersion: virtsync/v1
kind: Guest
metadata:
  name: g1
spec:
  host: h1
  disks:
    - name: root
      size: 10GiB
    - {name: data, size: "1GiB"}
"""


def test_marks_point_at_each_value() -> None:
    doc = one(SPEC)
    assert doc.start == (1, 1)
    assert doc.marks[()] == (1, 1)
    assert doc.marks[("kind",)] == (2, 7)
    assert doc.marks[("metadata",)] == (4, 3)  # a block mapping starts at its first key
    assert doc.marks[("metadata", "name")] == (4, 9)
    assert doc.marks[("spec", "disks")] == (8, 5)
    assert doc.marks[("spec", "disks", 0)] == (8, 7)
    assert doc.marks[("spec", "disks", 0, "size")] == (9, 13)
    assert doc.marks[("spec", "disks", 1)] == (10, 7)
    assert doc.marks[("spec", "disks", 1, "size")] == (10, 26)


def test_marks_point_at_each_key() -> None:
    doc = one(SPEC)
    assert doc.key_marks[("kind",)] == (2, 1)
    assert doc.key_marks[("metadata", "name")] == (4, 3)
    assert doc.key_marks[("spec", "disks", 1, "size")] == (10, 20)
    assert doc.mark_of(("spec", "disks"), key=True) == (7, 3)
    assert doc.mark_of(("spec", "disks")) == (8, 5)


def test_mark_of_a_missing_path_is_its_nearest_ancestor() -> None:
    doc = one(SPEC)
    assert doc.mark_of(("spec", "disks", 0, "pool")) == (8, 7)
    assert doc.mark_of(("spec", "memory")) == (6, 3)
    assert doc.mark_of(("nothing", "here")) == (1, 1)
    assert doc.mark_of(("spec", "memory"), key=True) == (6, 3)


def test_columns_count_characters_not_bytes() -> None:
    doc = one("a: é\nb: [ü, x]\n")
    assert doc.marks[("b", 1)] == (2, 8)


def test_reading_without_marks_records_none() -> None:
    (doc,) = read_documents(SPEC, marks=False)
    assert doc.data["spec"]["disks"][1]["size"] == "1GiB"
    assert doc.marks == {} and doc.key_marks == {}


# ---------------------------------------------------------- anchors, merges


def test_aliases_repeat_their_anchor() -> None:
    doc = one("base: &b {x: 1, y: [1, 2]}\ncopy: *b\nlist: [&s hi, *s]\n")
    assert doc.data["copy"] == {"x": 1, "y": [1, 2]}
    assert doc.data["list"] == ["hi", "hi"]


def test_unknown_alias_is_an_error_at_the_alias() -> None:
    err = problem("a: 1\nb: *nope\n")
    assert (err.message, err.mark) == ("unknown alias *nope", (2, 4))


def test_merge_key_fills_in_keys_not_written() -> None:
    doc = one("base: &b {x: 1, y: 2, z: 3}\nm:\n  y: 20\n  <<: *b\n  z: 30\n")
    assert doc.data["m"] == {"x": 1, "y": 20, "z": 30}


def test_merge_key_takes_a_list_of_mappings_first_wins() -> None:
    doc = one("a: &a {x: 1}\nb: &b {x: 2, y: 2}\nm: {<<: [*a, *b]}\n")
    assert doc.data["m"] == {"x": 1, "y": 2}


def test_merge_key_takes_an_inline_mapping() -> None:
    assert one("m: {<<: {x: 1}, y: 2}\n").data["m"] == {"x": 1, "y": 2}


def test_merge_key_takes_inline_mappings_in_a_list_and_an_anchored_merge_value() -> None:
    doc = one("b: &b {y: 2}\nm: {<<: [{x: 1}, *b], z: 3}\nn: {<<: &c {w: 4}}\no: *c\n")
    assert doc.data["m"] == {"x": 1, "y": 2, "z": 3}
    assert doc.data["n"] == {"w": 4}
    assert doc.data["o"] == {"w": 4}


def test_merge_key_with_a_scalar_is_an_error() -> None:
    err = problem("m:\n  <<: text\n")
    assert (err.message, err.mark) == ("'<<' merges mappings only", (2, 7))
    err = problem("m:\n  <<: [{x: 1}, text]\n")
    assert (err.message, err.mark) == ("'<<' merges mappings only", (2, 7))


def test_alias_expansion_is_charged_against_a_budget() -> None:
    text = "a: &a [1, 2, 3]\nb: [*a, *a]\n"
    assert one(text, Limits(max_alias_nodes=8)).data["b"] == [[1, 2, 3], [1, 2, 3]]
    err = problem(text, Limits(max_alias_nodes=7))
    assert err.message.startswith("too many alias expansions")
    assert err.mark == (2, 9)


# ---------------------------------------------------------------- documents


def test_multiple_documents_each_with_its_own_start_and_marks() -> None:
    docs = read_documents("a: 1\n---\nb: 2\n---\n---\n- c\n")
    assert [d.data for d in docs] == [{"a": 1}, {"b": 2}, None, ["c"]]
    assert [d.start for d in docs] == [(1, 1), (2, 1), (4, 1), (5, 1)]
    assert docs[1].marks[("b",)] == (3, 4)
    assert docs[3].marks[(0,)] == (6, 3)


@pytest.mark.parametrize("text", ["", "# nothing\n", "\n\n"])
def test_empty_text_has_no_documents(text: str) -> None:
    assert read_documents(text) == []


def test_anchors_do_not_cross_documents() -> None:
    err = problem("a: &x 1\n---\nb: *x\n")
    assert (err.message, err.mark) == ("unknown alias *x", (3, 4))


# --------------------------------------------------------------- problems


def test_duplicate_keys_are_reported_with_both_positions() -> None:
    err = problem("a: 1\nb:\n  c: 1\n  d: 2\n  c: 3\n")
    assert err.message == "duplicate key 'c' (first defined at line 3, column 3)"
    assert err.mark == (5, 3)


def test_same_key_in_different_mappings_is_fine() -> None:
    assert one("a: {x: 1}\nb: {x: 2}\n").data == {"a": {"x": 1}, "b": {"x": 2}}


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        ("v: !!python/object/apply:os.system [ls]\n", "!!python/object/apply:os.system"),
        ("v: !!python/name:os.system\n", "!!python/name:os.system"),
        ("v: !!binary aGk=\n", "!!binary"),
        ("v: !!timestamp 2001-12-14\n", "!!timestamp"),
        ("v: !!set {a}\n", "!!set"),
        ("v: !custom x\n", "!custom"),
        ("v: !custom {a: 1}\n", "!custom"),
        ("v: !custom [a]\n", "!custom"),
        ("!custom v: 1\n", "!custom"),
    ],
)
def test_tags_other_than_core_ones_are_refused(text: str, tag: str) -> None:
    err = problem(text)
    assert err.message == f"tag {tag} is not allowed: specs hold plain data only"


def test_nesting_depth_is_capped() -> None:
    assert one("v: " + "[" * 63 + "]" * 63 + "\n").data["v"] is not None
    err = problem("v: " + "[" * 64 + "]" * 64 + "\n")
    assert err.message == "nesting deeper than 64 levels"
    assert err.mark == (1, 4 + 63)
    assert problem("[" * 100_000, Limits(max_depth=3)).mark == (1, 4)


def test_nodes_of_a_file_are_capped_across_documents() -> None:
    text = "a: [1, 2]\n---\nb: 3\n"  # document, {, a, [, 1, 2 | document, {, b, 3
    assert len(read_documents(text, Limits(max_nodes=10))) == 2
    err = problem(text, Limits(max_nodes=9))
    assert err.message.startswith("more than 9 YAML nodes (keys and values) in one file")
    assert err.mark == (3, 4)


def test_node_limit_follows_the_file_size_limit() -> None:
    assert Limits().node_limit == 8 * 1024 * 1024 // 6
    assert Limits(max_file_bytes=1024).node_limit == 100_000
    assert Limits(max_nodes=5).node_limit == 5


def test_syntax_errors_say_where_the_unfinished_construct_began() -> None:
    err = problem("a: [1, 2\nb: 3\n")
    assert err.message == ("invalid YAML: did not find expected ',' or ']' "
                           "(in the flow sequence starting at line 1, column 4)")
    assert err.mark == (2, 2)


def test_unquoted_mac_in_a_flow_mapping_gets_a_hint() -> None:
    err = problem("nic: {mac: 52:54:00:00:00:01}\n")
    assert err.message.endswith("(inside [ ] or { }, quote values that contain ':', e.g. MACs)")
    assert one("nic:\n  mac: 52:54:00:00:00:01\n").data["nic"]["mac"] == "52:54:00:00:00:01"


def test_tab_indentation_gets_a_hint() -> None:
    err = problem("a:\n\tb: 1\n")
    assert err.message.endswith("(a tab: YAML indents with spaces only)")
    assert err.mark == (2, 1)


def test_control_characters_are_refused_at_their_position() -> None:
    err = problem("a: 1\nb: ü\x07\n")
    assert err.message == "invalid YAML: control characters are not allowed (U+0007)"
    assert err.mark == (2, 5)


def test_every_problem_message_is_one_line() -> None:
    for text in ["a: 'x\n", "a: b: c\n", "- a\nb: c\n", "a: \x01\n", "%YAML 9.9\n---\na\n", "]\n"]:
        err = problem(text)
        assert "\n" not in err.message, text
        assert err.mark[0] >= 1 and err.mark[1] >= 1
