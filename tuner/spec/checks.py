"""Checks of single values, each an error that quotes the bad value and names what would do."""

from __future__ import annotations

import math
from typing import Any

from tuner.errors import SpecError


def choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise SpecError(f"unknown {name} {value!r}: choose one of {', '.join(allowed)}")
    return str(value)


def number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
           integer: bool = False, low_open: bool = False) -> float:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not float(value).is_integer()):
        raise SpecError(f"{name} must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise SpecError(f"{name} must be finite, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    if too_low or (high is not None and value > high):
        bound = f"{'>' if low_open else '>='} {low}" if too_low else f"<= {high}"
        raise SpecError(f"{name} must be {bound}, got {value!r}")
    return int(value) if integer else float(value)


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"{name} must be true or false, got {value!r}")
    return value


def image_size(value: Any) -> int | None:
    if value is None:
        return None
    return int(number("image_size", value, low=1, integer=True))


def validation(value: Any) -> float | str:
    if value == "test":
        return "test"
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise SpecError(f"validation must be a fraction between 0 and 1 (exclusive) or 'test', got {value!r}")
    return value
