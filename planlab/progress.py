"""Progress on stderr for long CLI work: a redrawn one-line bar on a terminal, plain lines
(or nothing) elsewhere. Only the CLI uses it; library code takes a progress callback."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """`bar(fraction, text)` redraws at most ten times a second and only after `delay_s`;
    `line(text)` prints a plain line when stderr is not a terminal. `tty` forces either
    mode (None: ask the stream). The stream is looked up
    when the bar is made, not when this module is imported (tests swap sys.stderr)."""

    def __init__(
        self,
        *,
        enabled: bool = True,
        tty: bool | None = None,
        delay_s: float = 1.0,
        width: int = 30,
        stream: TextIO | None = None,
    ):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and (self.stream.isatty() if tty is None else tty)
        self.delay_s = delay_s
        self.width = width
        self.t0 = time.monotonic()
        self.last = 0.0
        self.drawn = False

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.t0

    def bar(self, fraction: float, text: str = "", *, force: bool = False) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if not force and (now - self.t0 < self.delay_s or now - self.last < 0.1):
            return
        self.last = now
        frac = min(1.0, max(0.0, fraction))
        filled = int(frac * self.width)
        self.stream.write(f"\r[{'#' * filled}{'-' * (self.width - filled)}] {frac:6.1%}  {text}")
        self.stream.flush()
        self.drawn = True

    def line(self, text: str) -> None:
        if self.enabled and not self.tty:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False

    # Adapters for the two callback shapes the library offers.

    def sim(self, t_s: float, duration_s: float) -> None:
        """run_scenario's progress(t_s, duration_s)."""
        frac = t_s / duration_s if duration_s > 0 else 1.0
        self.bar(frac, f"sim {t_s:8.0f} s  wall {self.elapsed_s:5.1f} s")

    def runs(self, done: int, total: int, label: str) -> None:
        """compare/sweep's progress(done, total, label): a bar, or one line per run."""
        self.bar(
            done / max(total, 1),
            f"{done}/{total}  {self.elapsed_s:5.1f} s  {label[:50]:<50}",
            force=True,
        )
        self.line(f"[{done}/{total}] {label} ({self.elapsed_s:.1f} s)")
