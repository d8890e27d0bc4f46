"""Small pieces of the words edgegen prints, in one place."""

from __future__ import annotations


def counted(n: int, noun: str) -> str:
    """`n` and the noun in the number it takes: "1 sample", "3 samples"."""
    return f"{n} {noun}{'s' * (n != 1)}"
