"""Emulated prefill and decode workers: the simulator's engine timing run in real time on asyncio.

A prefill worker serves a FIFO queue in steps under a token budget (long prompts are
chunked over several steps); a decode worker runs continuous batching, one timer per
engine step, and pushes one token per step to every request in its batch.

Steps are scheduled against absolute deadlines on the event loop's clock, as the
simulator schedules them on its virtual clock: a busy worker's next step starts at the
previous step's deadline, not when the loop got round to waking it, so the whole
milliseconds an asyncio timer wakes late (epoll rounds its timeout up to a millisecond)
are carried into the next step instead of adding up. What is left, the lateness of the
wake-up that ends a step, is learned (a moving average per worker, at most MAX_LEAD_S)
and the timer set that much early, so tokens come out at their deadlines on average
rather than always after them. A step is cut to no less than MIN_STEP_FRACTION of its
length to pay a debt, so a stall is paid back over a few steps rather than as a burst of
instant ones. Work joins a step by its nominal arrival
time (a prompt when the frontend took it, a KV cache when its transfer ends), so a late
timer never pushes a request into a later step than the simulator would: a KV cache
whose transfer ended before the decode step in progress began joins that step.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

# Worker lifecycle states.
STARTING, READY, DRAINING, STOPPED = "starting", "ready", "draining", "stopped"

# Sentinel pushed to a request's token queue when it ends (None: finished normally).
END = None

MIN_STEP_FRACTION = 0.5
MAX_LEAD_S = 0.005
"""The most a timer is set early to make up for the loop's usual lateness (epoll's
rounding up to a millisecond, plus the scheduling latency of a busy machine)."""
LEAD_WEIGHT = 0.05  # of each new lateness sample in the moving average
MAX_LAG_S = 0.25
"""A worker that falls further than this behind its schedule (the loop was stalled: a
debugger, a suspended machine) starts afresh from now instead of running the missed
steps back to back."""


class Timing(Protocol):
    """What the workers need from sim.timing.EngineTiming (prefill_batch_s, the cost of a
    step over (start, end) chunks, is used when present, as the simulator does)."""

    def prefill_step_s(self, batch_tokens: int) -> float: ...

    def decode_step_s(
        self, batch_size: int, kv_tokens_in_use: int, mean_context: float
    ) -> float: ...

    def kv_transfer_s(self, isl: int) -> float: ...


@dataclass(frozen=True)
class FixedTiming:
    """A timing model with constant costs, for tests and benchmarks (no profile needed)."""

    prefill_s_per_token: float = 0.0
    prefill_overhead_s: float = 0.0
    decode_step_fixed_s: float = 0.001
    kv_transfer_fixed_s: float = 0.0
    max_kv_tokens: int | None = None

    def prefill_step_s(self, batch_tokens: int) -> float:
        return self.prefill_overhead_s + self.prefill_s_per_token * batch_tokens

    def decode_step_s(self, batch_size: int, kv_tokens_in_use: int, mean_context: float) -> float:
        return self.decode_step_fixed_s

    def kv_transfer_s(self, isl: int) -> float:
        return self.kv_transfer_fixed_s


class Job:
    """One request's journey through the emulated cluster.

    `tokens` receives one item per generated token: the time it was made (the loop's
    clock, time.monotonic, which on Linux is perf_counter's clock too);
    END when the request is complete. The frontend reads it and streams. `ready_s` is
    the loop-clock time at which the job (nominally) reached the worker holding it.
    """

    __slots__ = (
        "id",
        "isl",
        "osl",
        "tokens",
        "prefill_left",
        "generated",
        "prefill_worker",
        "decode_worker",
        "cancelled",
        "error",
        "ready_s",
    )

    def __init__(self, job_id: int, isl: int, osl: int):
        self.id = job_id
        self.isl = isl
        self.osl = osl
        self.tokens: asyncio.Queue = asyncio.Queue()
        self.prefill_left = isl
        self.generated = 0
        self.prefill_worker: PrefillWorker | None = None
        self.decode_worker: DecodeWorker | None = None
        self.cancelled = False
        self.error: str | None = None
        self.ready_s = 0.0

    def emit(self, t: float) -> None:
        self.generated += 1
        self.tokens.put_nowait(t)

    @property
    def done(self) -> bool:
        return self.generated >= self.osl


class Worker:
    """Common lifecycle: starting -> ready -> draining -> stopped."""

    role = "worker"
    # The clock steps are scheduled on (asyncio's default loop clock) and how to sleep on
    # it; a test swaps both for a virtual clock that wakes late on purpose.
    clock = staticmethod(time.monotonic)
    sleep = staticmethod(asyncio.sleep)

    def __init__(self, name: str, timing: Timing, speedup: float = 1.0):
        self.name = name
        self.timing = timing
        self.speedup = speedup
        self.state = STARTING
        self.requested_at = time.perf_counter()
        self.ready_at: float | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.stopped = asyncio.Event()
        self._free_s = 0.0  # clock time at which the last step ended (nominally)
        self._lead_s = 0.0  # how early timers are set: the wake-ups' mean lateness

    def load(self) -> int:
        raise NotImplementedError

    def mark_ready(self) -> None:
        self.state = READY
        self.ready_at = time.perf_counter()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    def drain(self) -> None:
        """No new work; finish what was assigned, then stop."""
        if self.state == STARTING:
            self._stop()
        elif self.state == READY:
            self.state = DRAINING
            self._wake.set()

    def _stop(self) -> None:
        self.state = STOPPED
        self.stopped.set()
        log.info("%s stopped", self.name)

    def kill(self) -> None:
        """Stop at once (cluster shutdown): fail whatever is still assigned."""
        if self._task is not None:
            self._task.cancel()
        self._fail_all("worker stopped")
        self._stop()

    def _fail_all(self, reason: str) -> None:
        raise NotImplementedError

    def _start_at(self, ready_s: float) -> float:
        """Nominal start of a step for work that was ready at ready_s: not before the last
        step ended, not further behind the clock than MAX_LAG_S."""
        start = max(ready_s, self._free_s)
        now = self.clock()
        if now - start > MAX_LAG_S:
            log.debug("%s %.3f s behind schedule; starting afresh", self.name, now - start)
            start = now
        return start

    async def _step(self, start_s: float, seconds: float) -> float:
        """Sleep until the step that started (nominally) at start_s ends, or for at least
        MIN_STEP_FRACTION of it when behind; returns its nominal end."""
        length = max(0.0, seconds) / self.speedup
        end = start_s + length
        await self._sleep_until(end, self.clock() + MIN_STEP_FRACTION * length)
        self._free_s = end
        return end

    async def _sleep_until(self, due_s: float, not_before_s: float = 0.0) -> None:
        """Sleep until due_s, the timer set early by the learned lead (but not before
        not_before_s); the lateness of the wake-up updates the lead."""
        target = max(due_s - self._lead_s, not_before_s)
        delay = target - self.clock()
        if delay <= 0:
            return
        await self.sleep(delay)
        late = self.clock() - target  # how late the timer fired
        lead = self._lead_s + LEAD_WEIGHT * (late - self._lead_s)
        self._lead_s = min(max(lead, 0.0), MAX_LEAD_S)

    async def _idle(self) -> None:
        """Wait for new work."""
        self._wake.clear()
        await self._wake.wait()

    async def _run(self) -> None:
        raise NotImplementedError


class PrefillWorker(Worker):
    """FIFO queue, batched under a token budget; a prompt longer than the budget is chunked."""

    role = "prefill"

    def __init__(
        self,
        name: str,
        timing: Timing,
        handoff,
        *,
        max_batch_tokens: int = 16384,
        max_num_seqs: int | None = None,
        speedup: float = 1.0,
    ):
        super().__init__(name, timing, speedup)
        self.max_batch_tokens = max_batch_tokens
        self.max_num_seqs = max_num_seqs or 1 << 30
        self.queue: collections.deque[Job] = collections.deque()
        self._batch_s = getattr(timing, "prefill_batch_s", None)
        # Called with each job whose prefill is complete and the loop time it completed
        # (nominally); the cluster moves it to decode.
        self._handoff = handoff

    def load(self) -> int:
        return sum(j.prefill_left for j in self.queue)

    def submit(self, job: Job) -> None:
        job.ready_s = self.clock()
        self.queue.append(job)
        self._wake.set()

    def _fail_all(self, reason: str) -> None:
        while self.queue:
            job = self.queue.popleft()
            job.error = reason
            job.tokens.put_nowait(END)

    def _batch(self, start_s: float) -> list[tuple[Job, int]]:
        """The chunks of the step starting at start_s: prompts queued by then, FIFO."""
        batch: list[tuple[Job, int]] = []
        budget = self.max_batch_tokens
        for job in self.queue:
            if budget <= 0 or len(batch) >= self.max_num_seqs or job.ready_s > start_s:
                break
            if job.cancelled:
                job.prefill_left = 0
                continue
            take = min(job.prefill_left, budget)
            batch.append((job, take))
            budget -= take
        return batch

    def _cost_s(self, batch: list[tuple[Job, int]]) -> float:
        if self._batch_s is None:
            return self.timing.prefill_step_s(sum(take for _, take in batch))
        done = [job.isl - job.prefill_left for job, _ in batch]
        return self._batch_s([(d, d + take) for d, (_, take) in zip(done, batch, strict=True)])

    async def _run(self) -> None:
        while True:
            while not self.queue:
                if self.state == DRAINING:
                    self._stop()
                    return
                await self._idle()
            start = self._start_at(self.queue[0].ready_s)
            batch = self._batch(start)
            end = start
            if batch:
                end = await self._step(start, self._cost_s(batch))
            for job, take in batch:
                job.prefill_left -= take
            while self.queue and self.queue[0].prefill_left <= 0:
                # Cancelled jobs go through the handoff too, so the decode side forgets them.
                self._handoff(self.queue.popleft(), end)


class DecodeWorker(Worker):
    """Continuous batching: admit while the KV cache has room, one token per request per step.

    Admission reserves a request's final context (isl + osl) so a batch never overflows
    the KV cache: the emulator has no preemption (the simulator models it). Requests
    wait in the arrival order of their KV caches (a heap on the transfer's end).
    """

    role = "decode"

    def __init__(
        self,
        name: str,
        timing: Timing,
        *,
        max_kv_tokens: int = 10**9,
        max_num_seqs: int = 1024,
        speedup: float = 1.0,
    ):
        super().__init__(name, timing, speedup)
        self.max_kv_tokens = max_kv_tokens
        self.max_num_seqs = max_num_seqs
        self.waiting: list[tuple[float, int, Job]] = []  # heap on (ready_s, seq)
        self._seq = itertools.count()
        self.running: list[Job] = []
        self._reserved = 0
        self._step_start_s: float | None = None  # nominal start of the step in progress
        self.assigned = 0  # routed here, prefill not finished yet

    def load(self) -> int:
        return len(self.running) + len(self.waiting) + self.assigned

    def _fits(self, job: Job) -> bool:
        return len(self.running) < self.max_num_seqs and (
            not self.running or self._reserved + job.isl + job.osl <= self.max_kv_tokens
        )

    def submit(self, job: Job, ready_s: float) -> None:
        """The job's KV cache lands here at clock time ready_s (may be in the future)."""
        job.ready_s = ready_s
        step = self._step_start_s
        if step is not None and ready_s <= step and not self.waiting and self._fits(job):
            # Its transfer ended before the step in progress began (the timer that said
            # so fired late): it is in that step, as in the simulator.
            self._reserved += job.isl + job.osl
            self.running.append(job)
            return
        heapq.heappush(self.waiting, (ready_s, next(self._seq), job))
        self._wake.set()

    def _fail_all(self, reason: str) -> None:
        for job in [*self.running, *(j for _, _, j in self.waiting)]:
            job.error = reason
            job.tokens.put_nowait(END)
        self.running.clear()
        self.waiting.clear()

    def _admit(self, start_s: float) -> None:
        """Admit, in arrival order, the requests whose KV cache is here by start_s."""
        waiting = self.waiting
        while waiting:
            ready_s, _, job = waiting[0]
            if ready_s > start_s:
                break
            if job.cancelled:
                heapq.heappop(waiting)
                continue
            if not self._fits(job):
                break
            heapq.heappop(waiting)
            self._reserved += job.isl + job.osl
            self.running.append(job)

    async def _run(self) -> None:
        while True:
            if self.running:
                start = self._start_at(self._free_s)
            else:
                # Idle: the next step starts when the first KV cache lands.
                while self.waiting and self.waiting[0][2].cancelled:
                    heapq.heappop(self.waiting)
                if not self.waiting:
                    if self.state == DRAINING and self.assigned == 0:
                        self._stop()
                        return
                    await self._idle()
                    continue
                first_s = self.waiting[0][0]
                if first_s - self._lead_s > self.clock():
                    await self._sleep_until(first_s)
                    continue
                start = self._start_at(first_s)
            self._admit(start)
            batch = self.running
            if not batch:
                continue
            kv_in_use = 0
            for job in batch:
                kv_in_use += job.isl + job.generated
            step_s = self.timing.decode_step_s(len(batch), kv_in_use, kv_in_use / len(batch))
            self._step_start_s = start
            try:
                await self._step(start, step_s)
            finally:
                self._step_start_s = None
            now = self.clock()
            still: list[Job] = []
            for job in batch:  # the batch may have grown during the step (see submit)
                if job.cancelled:
                    self._reserved -= job.isl + job.osl
                    continue
                job.emit(now)
                if job.done:
                    self._reserved -= job.isl + job.osl
                    job.tokens.put_nowait(END)
                else:
                    still.append(job)
            self.running = still
