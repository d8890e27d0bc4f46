"""Small pieces of the words edgegen prints, in one place."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and the noun in the number it takes: "1 sample", "3 samples"; `plural` where it is not
    the noun and an s ("1 entry", "3 entries")."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
