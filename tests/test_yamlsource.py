"""YAML loading: YAML 1.2 scalars, merge keys, and locations."""

from __future__ import annotations

import math

import pytest

from ruxa_batch.yamlsource import YamlProblem, parse_yaml


def test_scalars_follow_yaml_1_2() -> None:
    doc = parse_yaml(
        "a: 16:9\nb: on\nc: no\nd: 12\ne: 1.5\nf: ~\ng: true\nh: 2024-01-01\ni: '12'\nj: 0x1f\n"
        "k: .inf\nl: !!str 7\n",
        display="t.yaml",
    )
    assert doc.data == {
        "a": "16:9",
        "b": "on",
        "c": "no",
        "d": 12,
        "e": 1.5,
        "f": None,
        "g": True,
        "h": "2024-01-01",
        "i": "12",
        "j": 31,
        "k": math.inf,
        "l": "7",
    }


def test_merge_keys_explicit_wins() -> None:
    doc = parse_yaml("base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  y: 3\n", display="t.yaml")
    assert doc.data["m"] == {"x": 1, "y": 3}
    # A merged value is located where it is written, inside the anchored mapping.
    assert doc.locate(("m", "x")) == (1, 14)
    assert doc.locate(("m", "y")) == (4, 6)


def test_aliased_values_are_located_at_their_anchor() -> None:
    doc = parse_yaml("a: &u [x, {k: v}]\nb: *u\n", display="t.yaml")
    assert doc.data["b"] == ["x", {"k": "v"}]
    assert doc.locate(("b", 1, "k")) == (1, 15)
    assert doc.locate(("b",)) == (2, 4)


def test_locations_of_values_and_keys() -> None:
    doc = parse_yaml("top:\n  list:\n    - a\n    - {k: v}\n", display="t.yaml")
    assert doc.locate(("top", "list", 1, "k")) == (4, 11)
    assert doc.locate(("top", "list", 1, "k"), key=True) == (4, 8)
    assert doc.locate(("top", "list", 0)) == (3, 7)
    # Unknown paths fall back to the nearest known parent.
    assert doc.locate(("top", "list", 1, "missing")) == (4, 7)


def test_bad_explicit_tag_value() -> None:
    with pytest.raises(YamlProblem) as caught:
        parse_yaml("a: !!int abc\n", display="t.yaml")
    assert str(caught.value.problem) == "t.yaml:1:4: $.a: 'abc' is not a valid !!int"


def test_non_scalar_keys_are_refused() -> None:
    with pytest.raises(YamlProblem) as caught:
        parse_yaml("? [a, b]\n: c\n", display="t.yaml")
    assert str(caught.value.problem) == "t.yaml:1:3: $: mapping keys must be plain strings"
