"""The one error type for bad user input, carrying where it came from and what was expected."""

from __future__ import annotations

import math
from typing import Any


class ConfigError(ValueError):
    """Bad input from a user: a scenario, profile, trace or CLI value.

    The message names the source (a file), the key path or line, the bad value and
    what was expected, so the CLI can print it as one line and exit with code 2.
    """

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None):
        self.source = source
        self.key = key
        self.detail = message
        where = ": ".join(p for p in (source, key) if p)
        super().__init__(f"{where}: {message}" if where else message)


def expect(cond: bool, message: str, *, source: str | None = None, key: str | None = None) -> None:
    """Raise ConfigError(message) unless cond holds."""
    if not cond:
        raise ConfigError(message, source=source, key=key)


def number_in(
    value: Any,
    key: str,
    *,
    lo: float = -math.inf,
    hi: float = math.inf,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """value as a float when it is a finite number within [lo, hi] (ends open as asked);
    otherwise ConfigError naming key, the value and the range."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        left = "(" if lo_open or math.isinf(lo) else "["
        right = ")" if hi_open or math.isinf(hi) else "]"
        raise ConfigError(
            f"{value!r} is invalid; expected a number in {left}{lo}, {hi}{right}", key=key
        )
    return float(value)
