"""Deadline-true step timing of the emulated workers, on a virtual clock whose every sleep
wakes late on purpose (as asyncio's timers do on epoll, which rounds up to a millisecond):
the lateness is carried into the next step instead of adding up, and work joins the step
it nominally reached."""

from __future__ import annotations

import asyncio

import pytest

from live.emulator import workers
from live.emulator.workers import (
    END,
    MIN_STEP_FRACTION,
    DecodeWorker,
    FixedTiming,
    Job,
    PrefillWorker,
    Worker,
)

pytestmark = pytest.mark.timeout(30)


class LateClock:
    """Virtual seconds; every sleep ends `late_s` after it was due. One sleeper at a time
    (each test drives a single worker), so sleeps simply add up."""

    def __init__(self, late_s: float):
        self.t = 1000.0
        self.late_s = late_s

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds + self.late_s
        await asyncio.sleep(0)


@pytest.fixture
def clock(monkeypatch):
    """The late clock, with the learned timer lead off (so lateness shows plainly)."""
    c = LateClock(late_s=0.0011)
    monkeypatch.setattr(Worker, "clock", staticmethod(c.now))
    monkeypatch.setattr(Worker, "sleep", staticmethod(c.sleep))
    monkeypatch.setattr(workers, "MAX_LEAD_S", 0.0)
    return c


async def _stamps(job: Job) -> list[float]:
    out = []
    while (t := await job.tokens.get()) is not END:
        out.append(t)
    return out


def test_decode_lateness_does_not_add_up(clock):
    step = 0.004

    async def main():
        worker = DecodeWorker("d", FixedTiming(decode_step_fixed_s=step))
        worker.mark_ready()
        job = Job(0, isl=10, osl=50)
        t0 = clock.t
        worker.submit(job, t0)
        stamps = await _stamps(job)
        worker.kill()
        return t0, stamps

    t0, stamps = asyncio.run(main())
    assert len(stamps) == 50
    # token k is due at t0 + k steps; each comes one wake-up lateness after it, never
    # k of them (sleeping a step's length after each wake-up would give t0 + k * 5.1 ms)
    for k, t in enumerate(stamps, start=1):
        assert t == pytest.approx(t0 + k * step + clock.late_s, abs=1e-9)


def test_the_usual_lateness_is_learned_and_set_off(clock, monkeypatch):
    """With the lead on, timers are set early by the wake-ups' mean lateness: tokens
    converge onto their deadlines and are never earlier than MAX_LEAD_S before them."""
    monkeypatch.setattr(workers, "MAX_LEAD_S", 0.002)
    step = 0.004

    async def main():
        worker = DecodeWorker("d", FixedTiming(decode_step_fixed_s=step))
        worker.mark_ready()
        job = Job(0, isl=10, osl=150)
        t0 = clock.t
        worker.submit(job, t0)
        stamps = await _stamps(job)
        worker.kill()
        return t0, stamps, worker._lead_s

    t0, stamps, lead = asyncio.run(main())
    errors = [t - (t0 + k * step) for k, t in enumerate(stamps, start=1)]
    assert errors[0] == pytest.approx(clock.late_s)  # nothing learned yet
    assert abs(errors[-1]) < 2e-5  # the last ones come out on time
    assert min(errors) > -0.002
    assert lead == pytest.approx(clock.late_s, abs=2e-5)


def test_a_worker_that_cannot_keep_up_never_bursts(clock):
    """Wakes 3 ms late on 4 ms steps: the debt grows, but no step is cut below
    MIN_STEP_FRACTION of its length to pay it (no burst of instant tokens)."""
    clock.late_s = 0.003
    step = 0.004

    async def main():
        worker = DecodeWorker("d", FixedTiming(decode_step_fixed_s=step))
        worker.mark_ready()
        job = Job(0, isl=10, osl=20)
        worker.submit(job, clock.t)
        stamps = await _stamps(job)
        worker.kill()
        return stamps

    stamps = asyncio.run(main())
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert min(gaps) == pytest.approx(MIN_STEP_FRACTION * step + clock.late_s, abs=1e-9)


def test_kv_cache_that_landed_before_the_step_began_joins_it(clock):
    """A transfer whose (late) timer reports it only during the next decode step is in
    that step, as in the simulator; one that ended after the step began waits for the
    next one."""
    step = 0.004

    async def main():
        worker = DecodeWorker("d", FixedTiming(decode_step_fixed_s=step))
        worker.mark_ready()
        a, b, c = Job(0, 10, 6), Job(1, 10, 2), Job(2, 10, 2)
        worker.submit(a, clock.t)
        got = {j.id: asyncio.create_task(_stamps(j)) for j in (a, b, c)}
        # wait for the third step of `a` to be under way
        while worker._step_start_s is None or a.generated < 2:
            await asyncio.sleep(0)
        began = worker._step_start_s
        worker.submit(b, began - 0.0001)
        worker.submit(c, began + 0.0001)
        out = {k: await t for k, t in got.items()}
        worker.kill()
        return out

    out = asyncio.run(main())
    a, b, c = out[0], out[1], out[2]
    assert b[0] == a[2]  # in the step that was under way
    assert c[0] == a[3]  # the next one
    assert len(b) == len(c) == 2 and len(a) == 6


def test_prefill_steps_chain_on_their_deadlines(clock):
    """Three prompts, one step each: the handoffs (which start the KV transfers) carry
    the nominal step ends, not the late wake-ups."""
    per_token = 1e-5
    isl = 400
    ends: list[float] = []

    async def main():
        worker = PrefillWorker(
            "p",
            FixedTiming(prefill_s_per_token=per_token),
            lambda job, end_s: ends.append(end_s),
            max_batch_tokens=isl,
        )
        worker.mark_ready()
        t0 = clock.t
        for i in range(3):
            worker.submit(Job(i, isl, 1))
        while len(ends) < 3:
            await asyncio.sleep(0)
        worker.kill()
        return t0

    t0 = asyncio.run(main())
    assert ends == pytest.approx([t0 + k * isl * per_token for k in (1, 2, 3)], abs=1e-9)
