"""Checks every recipe section runs on its own values: numbers finite, integers within what they feed.

A section dataclass (``[data]``, ``[optim]``, ...) calls :func:`check_numbers` from its ``__post_init__``, so a
number that no range check would catch (``inf`` passes ``lr > 0``, ``nan`` fails every comparison silently where
a check is written ``if x > 0: ...``) is refused by its key whatever the field, and a field added later is covered
without a line of its own.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from convscope.errors import UserError

# TOML integers are signed 64-bit; torch.Generator.manual_seed takes seeds below 2**63 as well.
INT64_LIMIT = 2**63
# Epochs beyond this are a typo or an exponent (1e20), not a training plan: such a run would never end.
MAX_EPOCHS = 100_000


def check_numbers(section: str, config: Any) -> None:
    """Refuse a non-finite float, or an integer outside signed 64 bits, in any field of the dataclass ``config``
    (list fields item by item), naming ``section.field``."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        for item in value if isinstance(value, list | tuple) else [value]:
            check_number(f"{section}.{f.name}", item)


def check_number(key: str, value: Any) -> None:
    """Refuse ``value`` for ``key`` if it is a non-finite float or an integer that TOML cannot hold."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{key} = {value!r}: expected a finite number")
    if isinstance(value, int) and not isinstance(value, bool) and not -INT64_LIMIT <= value < INT64_LIMIT:
        raise UserError(f"{key} = {value!r}: expected an integer within 64 bits (|value| < 2**63)")


def check_count(key: str, value: int, low: int, high: int | None = None) -> None:
    """``low <= value`` (and ``value <= high`` when given), for counts such as epochs, images and pixels."""
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise UserError(f"{key} = {value!r}: expected an integer {bound}")


def check_fraction(key: str, value: float) -> None:
    """A fraction held out of a data set: in [0, 1) (0: none)."""
    if not 0.0 <= value < 1.0:  # written so that NaN fails too
        raise UserError(f"{key} = {value!r}: expected a fraction in [0, 1) (0: none)")
