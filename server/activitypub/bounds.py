"""Bounds on the shape of a remote JSON document, checked before anything expensive reads it.

A size limit in bytes is not enough: one megabyte of ``[0,0,0,…]`` is half a million values,
and JSON-LD processing is far slower per value than parsing. Every document that arrives in an
inbox or from a fetch is checked here, right after ``json.loads`` and before JSON-LD, signature
key lookups or handlers see it: nesting depth, total number of values (objects, arrays, scalars
and keys) and the length of any one string. The walk is iterative, so a deep document cannot
exhaust the stack here either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Generous for any real activity or actor (a Mastodon actor with forty custom emoji is under
# 400 values; a long Lemmy post under 200), small enough that JSON-LD over the largest
# accepted document takes a fraction of a second.
MAX_DEPTH = 32
MAX_VALUES = 10_000
MAX_STRING = 200_000


class TooComplex(ValueError):
    """The document is outside the bounds; ``reason`` is safe to send back."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    max_depth: int = MAX_DEPTH
    max_values: int = MAX_VALUES
    max_string: int = MAX_STRING


DEFAULT = Limits()


def check_document(doc: Any, limits: Limits = DEFAULT) -> None:
    """Raise ``TooComplex`` if ``doc`` (parsed JSON) is deeper, larger or longer than allowed."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    count = 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > limits.max_values:
            raise TooComplex(f"document has more than {limits.max_values} values")
        if isinstance(value, (dict, list)) and count + len(value) > limits.max_values:
            raise TooComplex(f"document has more than {limits.max_values} values")
        if isinstance(value, dict):
            if depth > limits.max_depth:
                raise TooComplex(f"document is nested deeper than {limits.max_depth} levels")
            for key, item in value.items():
                count += 1
                if len(key) > limits.max_string:
                    raise TooComplex("document has an overlong key")
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            if depth > limits.max_depth:
                raise TooComplex(f"document is nested deeper than {limits.max_depth} levels")
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str) and len(value) > limits.max_string:
            raise TooComplex(f"document has a string longer than {limits.max_string} characters")
