"""The two ports the planner loop drives; the simulator and the live driver implement both."""

from __future__ import annotations

from typing import Protocol

from planner.observation import WindowStats
from planner.types import ReplicaState


class MetricsSource(Protocol):
    def window(self, t_s: float, window_s: float) -> WindowStats:
        """Frontend window statistics over (t_s - window_s, t_s]."""
        ...


class Connector(Protocol):
    def state(self) -> ReplicaState:
        """Desired, ready, starting and draining replicas per role, observed startup times."""
        ...

    def scale(self, prefill: int, decode: int) -> bool:
        """Ask for these replica counts; safe to repeat. True when the request was accepted."""
        ...
