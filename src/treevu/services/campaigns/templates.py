"""Campaign message templates: ``{firstName}``, ``{tierName}``, ``{segmentName}`` and nothing
else (``{{`` and ``}}`` are literal braces)."""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Final

PLACEHOLDERS: Final = ("firstName", "tierName", "segmentName")


def check_template(text: str) -> str:
    """``text`` when every placeholder is known; ValueError naming the first that is not."""
    try:
        fields = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(
            f"not a template ({exc}); write {{{{ and }}}} for literal braces"
        ) from None
    for _, name, spec, conversion in fields:
        if name is None:
            continue
        if name not in PLACEHOLDERS:
            known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise ValueError(f"unknown placeholder {{{name}}}; use {known}")
        if spec or conversion:
            raise ValueError(f"placeholder {{{name}}} takes no format or conversion")
    return text


def render(text: str, values: Mapping[str, str]) -> str:
    return text.format_map(values)


def segment_name(segment: str) -> str:
    """``rising_stars`` → ``Rising Stars``."""
    return segment.replace("_", " ").title()


def placeholders_of(texts: list[str]) -> set[str]:
    """The placeholders the (checked) templates use."""
    return {name for text in texts for _, name, _, _ in string.Formatter().parse(text) if name}
