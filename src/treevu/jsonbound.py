"""JSON from outside (socket frames, tRPC inputs) with its nesting bounded.

Python's parser meets ``[[[[…`` 30,000 deep with a RecursionError, which no caller expects;
here it is a :class:`TooDeep` — a ``ValueError`` naming the limit, like any other bad JSON.
"""

from __future__ import annotations

import json
from typing import Any, Final

MAX_DEPTH: Final = 64


class TooDeep(ValueError):
    def __init__(self, max_depth: int) -> None:
        super().__init__(f"JSON nested deeper than {max_depth} levels")


def loads(text: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads``, refusing documents nested deeper than ``max_depth``."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise TooDeep(max_depth) from None
    if depth(value, max_depth) > max_depth:
        raise TooDeep(max_depth)
    return value


def depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deep ``value`` nests (a scalar is 0); stops counting past ``limit``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        stack.extend((child, level) for child in children)
    return deepest
