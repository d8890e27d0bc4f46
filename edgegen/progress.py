"""Progress for long work (training, export, optimize, sampling, benchmarks): tqdm's bar on a
terminal, one summary line in logs."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


class Progress:
    """Counts steps toward a total: tqdm's bar on stderr at most ~10 times a second.

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
        self._bar = tqdm(total=self.total, desc=label, file=self.stream, disable=not self.enabled, leave=True,
                         mininterval=0.1, dynamic_ncols=True)

    def update(self, steps: int = 1, info: str = "") -> None:
        self.count += steps
        if info:
            self.info = info
            self._bar.set_postfix_str(info, refresh=False)
        self._bar.update(steps)

    def close(self, failed: bool = False) -> None:
        self._bar.close()
        if not self.enabled and not failed and self.label:
            elapsed = time.perf_counter() - self._start
            self.stream.write(f"{self.label}: {self.count}/{self.total} in {elapsed:.1f}s {self.info}\n")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # On an error the error is the message: no summary line for work that did not finish.
        self.close(failed=exc_type is not None)
