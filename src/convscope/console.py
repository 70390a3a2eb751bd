"""What the user reads while convscope works: ``note:`` lines, and the progress of a long stage.

A stage (decoding a folder of images, a CRF search, the report's trust figures) shows a tqdm bar on a terminal.
In a log file it writes ``WHAT: DONE/TOTAL (N s)`` at most every ``LINE_SECONDS`` and once at the end, and only
once it has run for ``LINE_SECONDS``: a short stage prints nothing, a long one is never silent for longer.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType

from tqdm import tqdm

LINE_SECONDS = 10.0


def note(message: str) -> None:
    """A remark the user should see but need not act on: ``note: MESSAGE`` on stderr, so that what a command
    prints on stdout (``predict --json``) stays its result."""
    print(f"note: {message}", file=sys.stderr, flush=True)


class Stage:
    """Progress of ``total`` units of work named ``what``; ``advance(n)`` after each piece, or use ``with``."""

    def __init__(self, what: str, total: int, *, unit: str = "", enabled: bool = True) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.done = 0
        self.started = self._last = time.perf_counter()
        self._shown: int | None = None  # the count of the last line printed
        self.bar: tqdm | None = None
        self.enabled = enabled
        if enabled and sys.stderr.isatty():
            self.bar = tqdm(total=total, desc=what, unit=unit or "it", leave=False, file=sys.stderr, delay=2.0)

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
            return
        now = time.perf_counter()
        if self.enabled and now - self._last >= LINE_SECONDS:
            self._line(now)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.enabled and self._shown is not None and self._shown != self.done:  # close the account it opened
            self._line(time.perf_counter())

    def _line(self, now: float) -> None:
        unit = f" {self.unit}" if self.unit else ""
        print(f"{self.what}: {self.done}/{self.total}{unit} ({now - self.started:.0f} s)", flush=True)
        self._last, self._shown = now, self.done

    def __enter__(self) -> Stage:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
