"""Tests for bci.json_bounds: size and depth of JSON text, measured without parsing it."""

from __future__ import annotations

import json

import pytest

from bci.json_bounds import check_json_bounds, json_depth


@pytest.mark.parametrize(
    "doc", [3, "x", [], {}, [1, [2, [3]]], {"a": {"b": [{"c": "[[[{{{"}]}}, ['\\"]', {"k]": 1}]]
)
def test_depth_agrees_with_the_parsed_document(doc) -> None:
    def depth(value) -> int:
        if isinstance(value, dict):
            return 1 + max(map(depth, value.values()), default=0)
        if isinstance(value, list):
            return 1 + max(map(depth, value), default=0)
        return 0

    assert json_depth(json.dumps(doc)) == depth(doc)


def test_bounds() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(ValueError, match="the doc is nested 100,000 levels deep, more than the 8"):
        check_json_bounds(deep, "the doc", max_bytes=10**6, max_depth=8)
    with pytest.raises(ValueError, match="the doc is 12 bytes, more than the 11 allowed"):
        check_json_bounds('"0123456789"', "the doc", max_bytes=11, max_depth=8)
    check_json_bounds(b'{"a": [1]}', "the doc", max_bytes=10, max_depth=2)
