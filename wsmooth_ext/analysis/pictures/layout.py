"""Text that fits its figure: titles and colour-bar labels wrapped to the figure's width, never cut off."""

from __future__ import annotations

import textwrap

# average advance of a DejaVu Sans character, in units of the font size (measured: about 0.55-0.6)
CHARACTER_WIDTH = 0.6


def wrap_to_width(text: str, width_inches: float, fontsize: float) -> str:
    """``text`` with each of its lines wrapped so that it fits ``width_inches`` at ``fontsize`` points."""
    per_line = max(20, int(width_inches * 72 / (fontsize * CHARACTER_WIDTH)))
    return "\n".join(textwrap.fill(line, per_line) for line in text.split("\n"))
