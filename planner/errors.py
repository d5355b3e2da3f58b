"""The one error type for bad user input, carrying where it came from and what was expected."""

from __future__ import annotations


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
