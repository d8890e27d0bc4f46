"""Text for the token models, with no network: the Python standard library's own source
files (read at run time from the running interpreter, nothing copied into the repository)
or a user's UTF-8 text file. Byte-level tokens: ids 0..255 are the UTF-8 bytes."""

from __future__ import annotations

import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

BUILTIN_TEXT = ("stdlib",)
STDLIB_BYTES = 6 << 20           # enough text for a small model, read in a few hundred ms
HELD_OUT_EVERY = 20              # every 20th stdlib file (or the last 5% of a file) is held out
_SKIPPED_DIRS = {"test", "tests", "idlelib", "site-packages", "__pycache__", "lib2to3", "turtledemo"}


@dataclass
class TextData:
    name: str
    train: np.ndarray            # int64 windows [N, context + 1]
    test: np.ndarray
    train_tokens: int
    test_tokens: int
    train_labels: None = None

    def describe(self) -> dict:
        return {"source": self.name, "tokenizer": "bytes", "train_tokens": self.train_tokens,
                "test_tokens": self.test_tokens, "windows": len(self.train)}


def stdlib_files() -> list[Path]:
    """The interpreter's standard-library .py files in a stable order, tests and tools left out."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py") if not _SKIPPED_DIRS & set(p.relative_to(root).parts[:-1])]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def read_corpus(source: str) -> tuple[bytes, bytes]:
    """(train, held-out) UTF-8 bytes of a built-in corpus or a text file."""
    if source == "stdlib":
        train, test, size = [], [], 0
        for i, path in enumerate(stdlib_files()):
            text = path.read_bytes()
            (test if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 else train).append(text)
            size += len(text)
            if size >= STDLIB_BYTES:
                break
        return b"\n".join(train), b"\n".join(test)
    path = Path(source)
    if not path.is_file():
        from .data import what_else

        found = "a folder" if path.is_dir() else what_else(source, "text", missing="nothing at that path")
        raise DataError(f"data {source!r}: expected one of {', '.join(BUILTIN_TEXT)} or a UTF-8 text file, found {found}")
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"data {source!r}: expected UTF-8 text, found an undecodable byte at offset {exc.start}") from None
    cut = int(len(raw) * (1 - 1 / HELD_OUT_EVERY))
    return raw[:cut], raw[cut:]


def windows(tokens: np.ndarray, context: int) -> np.ndarray:
    """Overlapping windows of context + 1 tokens (input and its next-token target), half a window apart."""
    stride = max(1, context // 2)
    starts = np.arange(0, len(tokens) - context - 1 + 1, stride)
    return tokens[starts[:, None] + np.arange(context + 1)].astype(np.int64)


def least_text_bytes(context: int) -> int:
    """The shortest text file whose split (read_corpus) leaves a window of context + 1 bytes in
    its held-out part and two in its training part."""
    size = context + 1
    while True:
        cut = int(size * (1 - 1 / HELD_OUT_EVERY))
        if size - cut >= context + 1 and cut >= 2 * (context + 1):
            return size
        size += 1


def load_text(source: str, context: int) -> TextData:
    train, test = read_corpus(source)
    if len(train) < 2 * (context + 1) or len(test) < context + 1:
        raise DataError(f"data {source!r}: expected at least {least_text_bytes(context)} bytes of text for "
                        f"{context}-token windows, found {len(train) + len(test)}")
    train_ids, test_ids = np.frombuffer(train, np.uint8), np.frombuffer(test, np.uint8)
    return TextData(source, windows(train_ids, context), windows(test_ids, context), len(train_ids), len(test_ids))
