"""A dependency-free progress bar for long work (training, sampling, benchmarks)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Counts steps toward a total and redraws one line on stderr at most ~10 times a second.

    `enabled=None` shows the bar only when stderr is a terminal; logs and CI get a final line.
    """

    def __init__(self, total: int, label: str, enabled: bool | None = None, stream: TextIO | None = None):
        self.total = max(int(total), 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.count = 0
        self.info = ""
        self._start = time.perf_counter()
        self._last_draw = 0.0

    def update(self, steps: int = 1, info: str = "") -> None:
        self.count += steps
        if info:
            self.info = info
        now = time.perf_counter()
        if self.enabled and (now - self._last_draw > 0.1 or self.count >= self.total):
            self._last_draw = now
            self._draw(end="")

    def _draw(self, end: str) -> None:
        elapsed = time.perf_counter() - self._start
        frac = min(self.count / self.total, 1.0)
        bar = "#" * int(frac * 24)
        rate = self.count / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.count) / rate if rate > 0 else 0.0
        self.stream.write(f"\r{self.label} [{bar:<24}] {self.count}/{self.total} "
                          f"{elapsed:5.1f}s eta {eta:5.1f}s {self.info}\x1b[K{end}")
        self.stream.flush()

    def close(self, failed: bool = False) -> None:
        if self.enabled:
            self._draw(end="\n")
        elif not failed and self.label:
            elapsed = time.perf_counter() - self._start
            self.stream.write(f"{self.label}: {self.count}/{self.total} in {elapsed:.1f}s {self.info}\n")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # On an error the error is the message: no summary line for work that did not finish.
        self.close(failed=exc_type is not None)
