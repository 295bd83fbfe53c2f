"""Markdown for the reports: table lines and the formatting of their cells.

Two cell formats, for two kinds of value: `cell` for a single value of any
type (`n/a` when missing, booleans as yes/no), `spread_cell` for a
`stats.rounds_spread` (its median, optionally with the min-max span; a dash
when missing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def cell(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def spread_cell(s: dict[str, float] | None, digits: int = 0, span: bool = False) -> str:
    if s is None:
        return "—"
    text = f"{s['median']:.{digits}f}"
    if span and s["n"] > 1:
        text += f" ({s['min']:.{digits}f}-{s['max']:.{digits}f})"
    return text


def table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """The lines of a table; each row's values go through `cell`."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines
