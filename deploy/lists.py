"""Comma-separated lists as parameters and command-line options take them ("front,wrist"; "" = none)."""
from __future__ import annotations


def comma_list(text: str) -> tuple[str, ...]:
    """'front, wrist' -> ('front', 'wrist'); '' -> ()."""
    return tuple(item.strip() for item in text.split(",") if item.strip())
