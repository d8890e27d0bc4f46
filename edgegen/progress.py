"""Progress for long work (training, export, optimize, sampling, benchmarks): tqdm's bar on a
terminal; in logs a line a minute while it runs and a summary line at its end."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

# a log's line while work runs: a CI runner that kills a step silent for minutes (10 on some) would
# otherwise kill a training of 15 minutes, whose only line came at its end
LOG_EVERY_S = 60.0


class Progress:
    """Counts steps toward a total: tqdm's bar on stderr at most ~10 times a second.

    `enabled=None` shows the bar only when stderr is a terminal; logs and CI get a line every
    LOG_EVERY_S while it runs (at an update) and a final line. `enabled=True`: the bar;
    `enabled=False`, or a label of "": nothing (a library call's stderr may be a service's log).
    """

    def __init__(self, total: int, label: str, enabled: bool | None = None, stream: TextIO | None = None):
        self.total = max(int(total), 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.logged = enabled is None and not self.enabled and bool(label)   # lines in a log instead of the bar
        self.count = 0
        self.info = ""
        self._start = self._said = time.perf_counter()
        # no tqdm where no bar shows: making one starts tqdm's monitor thread, disabled or not (a
        # service's first call with progress=False left a thread it never asked for; helper 151)
        self._bar = tqdm(total=self.total, desc=label, file=self.stream, leave=True, mininterval=0.1,
                         dynamic_ncols=True) if self.enabled else None

    def update(self, steps: int = 1, info: str = "") -> None:
        self.count += steps
        if info:
            self.info = info
        if self._bar is not None:
            if info:
                self._bar.set_postfix_str(info, refresh=False)
            self._bar.update(steps)
        if self.logged and time.perf_counter() - self._said >= LOG_EVERY_S:
            self._said = time.perf_counter()
            self._line(f"{self.count}/{self.total} after {self._said - self._start:.0f}s {self.info}")

    def close(self, failed: bool = False) -> None:
        if self._bar is not None:
            self._bar.close()
        if self.logged and not failed:
            self._line(f"{self.count}/{self.total} in {time.perf_counter() - self._start:.1f}s {self.info}")

    def _line(self, text: str) -> None:
        self.stream.write(f"{self.label}: {text.rstrip()}\n")
        self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # On an error the error is the message: no summary line for work that did not finish.
        self.close(failed=exc_type is not None)


def report_to_stderr(line: str) -> None:
    """A command's note of work it does on its own (exporting a shipped model on first use), on
    stderr beside its errors, so that stdout stays what the command writes."""
    print(f"edgegen: {line}", file=sys.stderr)
