"""What a run measured: one row per training step and one per epoch, saved as ``metrics.csv``."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convscope.run import atomic_write

Row = dict[str, float]


@dataclass
class History:
    """``train``: per step (epoch, step, the step's values, their moving averages ``*_avg``, lr, momentum).
    ``valid``: per epoch (epoch, step, validation metrics, ``train_*`` epoch averages, ``seconds``).

    ``epoch`` counts from 1; ``step`` is the global step after the row's step. ``train_seconds``
    is the time spent in training steps and validation, without checkpoint writing and logging.
    ``best`` is the epoch row with the best monitored value (empty without validation).
    """

    train: list[Row] = field(default_factory=list)
    valid: list[Row] = field(default_factory=list)
    train_seconds: float = 0.0
    best: Row = field(default_factory=dict)

    def recent_mean(self, name: str, window: int) -> float:
        """Mean of ``name`` over the last ``window`` train rows (seed 004's ``loss_avg`` / ``accu_avg``)."""
        values = [row[name] for row in self.train[-window:]]
        return sum(values) / len(values)

    def state_dict(self) -> dict[str, Any]:
        return {"train": self.train, "valid": self.valid, "train_seconds": self.train_seconds, "best": self.best}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> History:
        return cls(
            train=[dict(r) for r in state["train"]],
            valid=[dict(r) for r in state["valid"]],
            train_seconds=state["train_seconds"],
            best=dict(state["best"]),
        )

    def write_csv(self, path: Path) -> None:
        """Columns: split, epoch, step, then every metric in order of first appearance; blanks where absent."""
        names: dict[str, None] = {"split": None, "epoch": None, "step": None}
        for row in (*self.train, *self.valid):
            names.update(dict.fromkeys(row))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(names), lineterminator="\n")
        writer.writeheader()
        for split, rows in (("train", self.train), ("valid", self.valid)):
            for row in rows:
                # repr-exact floats, so the file compares equal between a resumed and an uninterrupted run.
                writer.writerow({"split": split, **{k: repr(v) for k, v in row.items()}})
        atomic_write(path, lambda f: f.write(text.getvalue().encode()))
