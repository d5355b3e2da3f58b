"""sim.clock.Clock runs call_later entries in exactly the order plain SimPy runs the same
callbacks as Timeouts (time, then priority, then creation), mixed with SimPy's own events
and processes: the property that keeps the simulator's results unchanged by it."""

from __future__ import annotations

import random

import simpy
from simpy.core import NORMAL, URGENT

from sim.clock import Clock


def _script(seed: int) -> list[tuple[float, int, int]]:
    """(delay, priority, children) per callback; few distinct delays so ties abound."""
    rng = random.Random(seed)
    return [
        (rng.choice((0.0, 0.5, 1.0, 1.0, 2.5)), rng.choice((URGENT, NORMAL)), rng.randint(1, 2))
        for _ in range(400)
    ]


def _run(env: simpy.Environment, later, seed: int) -> list[tuple[float, int]]:
    """Callbacks that schedule children, plus a process yielding timeouts, plus a stop event."""
    script = _script(seed)
    order: list[tuple[float, int]] = []
    nxt = iter(range(len(script)))

    def fire(k: int) -> None:
        order.append((env.now, k))
        for _ in range(script[k][2]):
            j = next(nxt, None)
            if j is not None:
                later(script[j][0], fire, j, script[j][1])

    def proc():
        for step in range(20):
            yield env.timeout(0.5)
            order.append((env.now, -1 - step))

    for _ in range(5):
        j = next(nxt)
        later(script[j][0], fire, j, script[j][1])
    env.process(proc())
    stop = env.event()
    later(8.0, lambda _: stop.succeed("done"), None, NORMAL)
    assert env.run(until=stop) == "done"
    return order


def _simpy_later(env: simpy.Environment):
    """What the simulator did before Clock: an already-triggered Event scheduled by hand."""

    def later(delay_s, fn, arg, priority):
        ev = simpy.Event(env)
        ev._ok = True
        ev._value = arg
        ev.callbacks.append(lambda e: fn(e._value))
        env.schedule(ev, priority, delay_s)

    return later


def test_same_order_as_simpy_with_ties_priorities_and_processes():
    for seed in range(5):
        plain = simpy.Environment()
        clock = Clock()
        expected = _run(plain, _simpy_later(plain), seed)
        got = _run(clock, clock.call_later, seed)
        assert len(expected) > 100
        assert got == expected


def test_run_until_a_time_and_until_the_queue_is_empty():
    clock = Clock()
    seen: list[float] = []
    for t in (3.0, 1.0, 2.0, 7.0):
        clock.call_later(t, seen.append, t)
    clock.run(until=2.5)  # SimPy's own path: stops before events at 2.5 and later
    assert seen == [1.0, 2.0] and clock.now == 2.5
    clock.run()
    assert seen == [1.0, 2.0, 3.0, 7.0] and clock.now == 7.0


def test_a_failed_event_still_crashes_the_run():
    clock = Clock()

    def proc():
        yield clock.timeout(1.0)
        raise RuntimeError("boom")

    clock.process(proc())
    try:
        clock.run()
    except RuntimeError as exc:
        assert "boom" in str(exc)
    else:
        raise AssertionError("the failure was swallowed")


def test_negative_delay_is_refused():
    clock = Clock()
    try:
        clock.call_later(-1e-9, print)
    except ValueError:
        pass
    else:
        raise AssertionError("negative delay accepted")
