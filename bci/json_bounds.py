"""Bounds on untrusted JSON text, checked before it is parsed.

``json.loads`` recurses once per nesting level, so a document nested 100,000 levels deep
raises ``RecursionError`` (not a ``ValueError``), and a large document costs its size in
memory several times over. :func:`check_json_bounds` measures both in one linear pass over
the text without building anything: string literals are blanked first, so brackets inside
strings do not count.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["check_json_bounds", "json_depth"]

_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_OPEN = np.zeros(256, dtype=np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


def json_depth(text: str | bytes) -> int:
    """Deepest nesting of arrays and objects in ``text`` (0 for a scalar)."""
    raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    blanked = _STRING.sub(b'""', raw)
    steps = _OPEN[np.frombuffer(blanked, dtype=np.uint8)].astype(np.int64)
    return int(np.cumsum(steps).max(initial=0))


def check_json_bounds(text: str | bytes, what: str, *, max_bytes: int, max_depth: int) -> None:
    """Raise ``ValueError`` naming ``what`` when ``text`` is longer than ``max_bytes`` (UTF-8)
    or nested deeper than ``max_depth``."""
    size = len(text.encode("utf-8") if isinstance(text, str) else text)
    if size > max_bytes:
        raise ValueError(f"{what} is {size:,} bytes, more than the {max_bytes:,} allowed")
    depth = json_depth(text)
    if depth > max_depth:
        raise ValueError(
            f"{what} is nested {depth:,} levels deep, more than the {max_depth} allowed"
        )
