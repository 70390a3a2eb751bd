"""What the user sees while training: a live bar on a terminal, plain lines in a log file.

A tqdm bar (stderr, with ETA and the running loss/metrics) only when stderr is a terminal, since
bars flood redirected output; otherwise one line every ``log_every`` steps, and at least one every
``LINE_SECONDS`` whatever the step count (a log file must show that a slow epoch is alive). Either way one
line per epoch on stdout in seed 004's format. ``quiet`` keeps only the epoch lines; a disabled
Progress (ranks other than 0) prints nothing.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

LINE_SECONDS = 30.0


def _values(values: dict[str, float], prefix: str = "") -> str:
    return " ".join(f"{prefix}{name}: {value:.4f}" for name, value in values.items())


class Progress:
    def __init__(self, *, epochs: int, steps_per_epoch: int, log_every: int, quiet: bool, enabled: bool) -> None:
        self.epochs, self.steps_per_epoch, self.log_every = epochs, steps_per_epoch, log_every
        self.enabled = enabled
        self.use_bar = enabled and not quiet and sys.stderr.isatty()
        self.use_lines = enabled and not quiet and not self.use_bar
        self.bar: tqdm | None = None
        self._width = len(str(epochs))
        self._since = time.perf_counter()  # the last step line (or the epoch start), for the rate
        self._steps_since = 0

    def _epoch(self, epoch: int) -> str:
        return f"{epoch:0{self._width}d}/{self.epochs}"

    def start_epoch(self, epoch: int, done: int) -> None:
        """``epoch`` counts from 1; ``done`` batches of it are already trained (a resume)."""
        self._since, self._steps_since = time.perf_counter(), 0
        if self.use_bar:
            self.bar = tqdm(
                total=self.steps_per_epoch,
                initial=done,
                desc=f"Epoch {self._epoch(epoch)}",
                unit="step",
                leave=False,
                dynamic_ncols=True,
                file=sys.stderr,
            )

    def step(self, epoch: int, batch: int, step: int, shown: dict[str, float], lr: float) -> None:
        """After global step ``step``, batch ``batch`` (from 1) of ``epoch``; ``shown`` are the moving averages."""
        self._steps_since += 1
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in shown.items()} | {"lr": f"{lr:.2e}"}, refresh=False)
            self.bar.update(1)
        elif self.use_lines and (step % self.log_every == 0 or time.perf_counter() - self._since >= LINE_SECONDS):
            rate = self._steps_since / max(time.perf_counter() - self._since, 1e-9)
            left = (self.steps_per_epoch - batch) / rate
            print(
                f"[Epoch: {self._epoch(epoch)} step {batch}/{self.steps_per_epoch}] {_values(shown)} lr: {lr:.2e}"
                f" ({rate:.1f} steps/s, epoch ends in {left:.0f} s)",
                flush=True,
            )
            self._since, self._steps_since = time.perf_counter(), 0

    def end_epoch(self, epoch: int, train: dict[str, float], valid: dict[str, float], seconds: float) -> None:
        """``[Epoch: 01/10] loss: 0.4119 accuracy: 0.8269 val_loss: 0.3713 val_accuracy: 0.8427 (12.3 s)``."""
        self.close()
        if self.enabled:
            values = " ".join(filter(None, (_values(train), _values(valid, "val_"))))
            print(f"[Epoch: {self._epoch(epoch)}] {values} ({seconds:.1f} s)", flush=True)

    def note(self, message: str) -> None:
        """A one-off line (resume, early stop) that shows even when quiet."""
        self.close()
        if self.enabled:
            print(message, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
