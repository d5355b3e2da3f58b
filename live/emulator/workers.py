"""Emulated prefill and decode workers: the simulator's engine timing run in real time on asyncio.

A prefill worker serves a FIFO queue in steps under a token budget (long prompts are
chunked over several steps); a decode worker runs continuous batching, one timer per
engine step, and pushes one token per step to every request in its batch.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

# Worker lifecycle states.
STARTING, READY, DRAINING, STOPPED = "starting", "ready", "draining", "stopped"

# Sentinel pushed to a request's token queue when it ends (None: finished normally).
END = None


class Timing(Protocol):
    """What the workers need from sim.timing.EngineTiming."""

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

    def prefill_step_s(self, batch_tokens: int) -> float:
        return self.prefill_overhead_s + self.prefill_s_per_token * batch_tokens

    def decode_step_s(self, batch_size: int, kv_tokens_in_use: int, mean_context: float) -> float:
        return self.decode_step_fixed_s

    def kv_transfer_s(self, isl: int) -> float:
        return self.kv_transfer_fixed_s


class Job:
    """One request's journey through the emulated cluster.

    `tokens` receives one item per generated token: the perf_counter time it was made;
    END when the request is complete. The frontend reads it and streams.
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

    def emit(self) -> None:
        self.generated += 1
        self.tokens.put_nowait(time.perf_counter())

    @property
    def done(self) -> bool:
        return self.generated >= self.osl


class Worker:
    """Common lifecycle: starting -> ready -> draining -> stopped."""

    role = "worker"

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

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speedup)

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
        speedup: float = 1.0,
    ):
        super().__init__(name, timing, speedup)
        self.max_batch_tokens = max_batch_tokens
        self.queue: collections.deque[Job] = collections.deque()
        # Called with each job whose prefill is complete (the cluster moves it to decode).
        self._handoff = handoff

    def load(self) -> int:
        return sum(j.prefill_left for j in self.queue)

    def submit(self, job: Job) -> None:
        self.queue.append(job)
        self._wake.set()

    def _fail_all(self, reason: str) -> None:
        while self.queue:
            job = self.queue.popleft()
            job.error = reason
            job.tokens.put_nowait(END)

    async def _run(self) -> None:
        while True:
            while not self.queue:
                if self.state == DRAINING:
                    self._stop()
                    return
                self._wake.clear()
                await self._wake.wait()
            batch: list[tuple[Job, int]] = []
            budget = self.max_batch_tokens
            for job in self.queue:
                if budget <= 0:
                    break
                if job.cancelled:
                    job.prefill_left = 0
                    continue
                take = min(job.prefill_left, budget)
                batch.append((job, take))
                budget -= take
            if batch:
                await self._sleep(self.timing.prefill_step_s(self.max_batch_tokens - budget))
            for job, take in batch:
                job.prefill_left -= take
            while self.queue and self.queue[0].prefill_left <= 0:
                # Cancelled jobs go through the handoff too, so the decode side forgets them.
                self._handoff(self.queue.popleft())


class DecodeWorker(Worker):
    """Continuous batching: admit while the KV cache has room, one token per request per step.

    Admission reserves a request's final context (isl + osl) so a batch never overflows
    the KV cache: the emulator has no preemption (the simulator models it).
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
        self.waiting: collections.deque[Job] = collections.deque()
        self.running: list[Job] = []
        self._reserved = 0
        self.assigned = 0  # routed here, prefill not finished yet

    def load(self) -> int:
        return len(self.running) + len(self.waiting) + self.assigned

    def submit(self, job: Job) -> None:
        self.waiting.append(job)
        self._wake.set()

    def _fail_all(self, reason: str) -> None:
        for job in [*self.running, *self.waiting]:
            job.error = reason
            job.tokens.put_nowait(END)
        self.running.clear()
        self.waiting.clear()

    def _admit(self) -> None:
        while self.waiting and len(self.running) < self.max_num_seqs:
            job = self.waiting[0]
            need = job.isl + job.osl
            if self.running and self._reserved + need > self.max_kv_tokens:
                break
            self.waiting.popleft()
            if job.cancelled:
                continue
            self._reserved += need
            self.running.append(job)

    async def _run(self) -> None:
        while True:
            self._admit()
            if not self.running:
                if self.state == DRAINING and not self.waiting and self.assigned == 0:
                    self._stop()
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self.running
            kv_in_use = 0
            for job in batch:
                kv_in_use += job.isl + job.generated
            step_s = self.timing.decode_step_s(len(batch), kv_in_use, kv_in_use / len(batch))
            await self._sleep(step_s)
            still: list[Job] = []
            for job in batch:
                if job.cancelled:
                    self._reserved -= job.isl + job.osl
                    continue
                job.emit()
                if job.done:
                    self._reserved -= job.isl + job.osl
                    job.tokens.put_nowait(END)
                else:
                    still.append(job)
            self.running = still
