"""`Clock`: a simpy.Environment with a cheap path for the simulator's hot callbacks.

Engine steps, KV transfers, scrapes and ticks are plain "call fn(arg) at now + delay"
events that no process ever waits on. `call_later` puts them on SimPy's own event queue as
(time, priority, eid, fn, arg) entries (SimPy's own events become (..., process, event)),
so they draw their ids from the same counter and run in exactly the order a Timeout with
that callback would: by time, then priority, then the order they were made.
What it saves is the Timeout object, its callback list and SimPy's per-event dispatch
(about a third of the simulator's time went there). Processes, Events and Timeouts work
as in SimPy; `run` and `step` handle both kinds of entry.
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappop, heappush
from typing import Any

import simpy
from simpy.core import NORMAL, EmptySchedule, StopSimulation
from simpy.events import Event, EventPriority


class Clock(simpy.Environment):
    """simpy.Environment plus `call_later(delay_s, fn, arg)`."""

    def call_later(
        self, delay_s: float, fn: Callable[[Any], None], arg: Any = None, priority: int = NORMAL
    ) -> None:
        """Call fn(arg) at now + delay_s (SimPy cannot cancel it: fn checks whether it is
        still wanted, e.g. by a generation number passed as arg)."""
        if delay_s < 0:
            raise ValueError(f"negative delay {delay_s}")
        heappush(self._queue, (self._now + delay_s, priority, next(self._eid), fn, arg))

    def schedule(self, event: Event, priority: EventPriority = NORMAL, delay: float = 0) -> None:
        """SimPy's schedule, with the event's processing as the entry's call."""
        heappush(self._queue, (self._now + delay, priority, next(self._eid), self._process, event))

    def step(self) -> None:
        try:
            entry = heappop(self._queue)
        except IndexError:
            raise EmptySchedule from None
        self._now = entry[0]
        entry[3](entry[4])

    def _process(self, event: Event) -> None:
        """What simpy.Environment.step does with a popped event (simpy 4.1)."""
        callbacks, event.callbacks = event.callbacks, None
        try:
            for callback in callbacks:
                callback(event)
        except StopSimulation:
            event.callbacks = callbacks[callbacks.index(callback) + 1 :]
            self.schedule(event, EventPriority(-1))
            raise
        if not event._ok and not hasattr(event, "_defused"):
            exc = type(event._value)(*event._value.args)
            exc.__cause__ = event._value
            raise exc

    def run(self, until: float | Event | None = None) -> Any:
        """As simpy.Environment.run; the loop is inlined for an Event or None."""
        if until is not None and not isinstance(until, Event):
            return super().run(until)  # a time: SimPy schedules a stop event, then steps
        if until is not None:
            if until.callbacks is None:
                return until.value
            until.callbacks.append(StopSimulation.callback)
        queue = self._queue
        try:
            while queue:
                self._now, _, _, fn, arg = heappop(queue)
                fn(arg)
        except StopSimulation as exc:
            return exc.args[0]
        if until is not None:
            raise RuntimeError(
                f'No scheduled events left but "until" event was not triggered: {until}'
            )
        return None
