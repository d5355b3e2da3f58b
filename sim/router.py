"""Frontend routing: which ready worker of a role gets the next request (a plain registry)."""

from __future__ import annotations

from collections.abc import Callable, Sequence


class RoundRobin:
    """Cycles through the accepting workers in id order."""

    def __init__(self) -> None:
        self.turn = 0

    def __call__(self, workers: Sequence):
        w = workers[self.turn % len(workers)]
        self.turn += 1
        return w


class LeastLoaded:
    """The worker with the least load (prefill: queued tokens; decode: requests held);
    ties go to the lowest id, so the choice is deterministic."""

    def __call__(self, workers: Sequence):
        best = workers[0]
        best_load = best.load
        for w in workers:
            if w.load < best_load:
                best, best_load = w, w.load
        return best


ROUTERS: dict[str, Callable[[], Callable]] = {
    "round_robin": RoundRobin,
    "least_loaded": LeastLoaded,
}
