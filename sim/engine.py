"""Simulated prefill and decode workers: one scheduled SimPy event per engine step (or per
run of identical decode steps), never one per token.

Each worker is a small state machine driven by timeout callbacks on the shared
simpy.Environment. A worker's pending step event carries the worker's generation number;
killing the worker or cutting a decode skip short bumps the generation so that the old
event is ignored when it fires (SimPy cannot cancel a scheduled event).
"""

from __future__ import annotations

from collections import deque
from heapq import heappop, heappush
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sim.clock import Clock
    from sim.prometheus import FrontendMetrics
    from sim.timing import EngineTiming

STARTING, READY, DRAINING, RELEASED, DEAD, CANCELLED = (
    "starting",
    "ready",
    "draining",
    "released",
    "dead",
    "cancelled",
)


class Req:
    """One request in flight. `generated` counts output tokens already streamed."""

    __slots__ = (
        "idx",
        "arrival_s",
        "isl",
        "osl",
        "prefill_left",
        "prefill_total",
        "generated",
        "first_token_s",
        "prefill_worker",
        "decode_worker",
        "preemptions",
        "retries",
        "admit_step",
        "gen_at_admit",
        "kv_at_admit",
        "heap_key",
        "recompute",
        "user",
    )

    def __init__(self, idx: int, arrival_s: float, isl: int, osl: int):
        self.idx = idx
        self.arrival_s = arrival_s
        self.isl = isl
        self.osl = osl
        self.prefill_left = isl
        self.prefill_total = isl
        self.generated = 0
        self.first_token_s = -1.0
        self.prefill_worker = -1
        self.decode_worker = -1
        self.preemptions = 0
        self.retries = 0
        self.admit_step = 0
        self.gen_at_admit = 0
        self.kv_at_admit = 0
        self.heap_key = None
        self.recompute = False
        self.user = -1


class EngineHost(Protocol):
    """What a worker is handed by the simulation that runs it: the clock, the timing
    model, the frontend metrics, and the callbacks through which it reports. Workers
    never import the simulation (sim.simulate.Simulation implements this port)."""

    env: Clock
    timing: EngineTiming
    metrics: FrontendMetrics
    preemptions: int

    def prefill_done(self, req: Req) -> None: ...

    def complete(self, req: Req, now: float) -> None: ...

    def fail(self, req: Req, where: str, why: str) -> None: ...

    def worker_gone(self, worker: Worker) -> None: ...


class Worker:
    """Lifecycle shared by both roles: starting -> ready -> draining -> released (or dead,
    or cancelled while starting). Times are recorded for GPU-second accounting."""

    role = ""

    def __init__(self, sim: EngineHost, wid: int, t_s: float, ready: bool):
        self.sim = sim
        self.env = sim.env
        self.timing = sim.timing
        self.metrics = sim.metrics
        self.wid = wid
        self.state = READY if ready else STARTING
        self.t_requested = t_s
        self.t_ready = t_s if ready else None
        self.t_drain = None
        self.t_end = None
        self.inflight = 0
        self.gen = 0
        self.never_ready = False  # a start that hangs (image pull back-off, unschedulable)

    @property
    def accepting(self) -> bool:
        return self.state == READY

    def _schedule(self, delay_s: float, callback) -> None:
        self.env.call_later(delay_s, callback, self.gen)

    def drain(self) -> None:
        self.state = DRAINING
        self.t_drain = self.env.now
        if self.inflight == 0:
            self._release()

    def _maybe_release(self) -> None:
        if self.state == DRAINING and self.inflight == 0:
            self._release()

    def _release(self) -> None:
        self.state = RELEASED
        self.t_end = self.env.now
        self.sim.worker_gone(self)

    def kill(self) -> list[Req]:
        """Dies now; returns the requests it held (the caller retries or fails them)."""
        self.gen += 1
        self.state = DEAD
        self.t_end = self.env.now
        return self._take_inflight()

    def _take_inflight(self) -> list[Req]:
        raise NotImplementedError


class PrefillWorker(Worker):
    """FIFO queue; each step takes prompts from the head under a token budget (and at most
    max_num_seqs prompts), chunking a long prompt across steps."""

    role = "prefill"

    def __init__(self, sim, wid, t_s, ready, budget_tokens: int, max_seqs: int | None):
        super().__init__(sim, wid, t_s, ready)
        self.queue: deque[Req] = deque()
        self.queued_tokens = 0
        self.budget = budget_tokens
        self.max_seqs = max_seqs or 1 << 30
        self.busy = False
        self.step: list[tuple[Req, int]] = []

    @property
    def load(self) -> int:
        return self.queued_tokens

    def enqueue(self, req: Req) -> None:
        req.prefill_worker = self.wid
        self.queue.append(req)
        self.queued_tokens += req.prefill_left
        self.inflight += 1
        if not self.busy:
            self._start_step()

    def _start_step(self) -> None:
        budget = self.budget
        max_seqs = self.max_seqs
        step = []
        tokens = 0
        timing = self.timing
        marginal = timing._marginal_s
        n_table = timing._prefill_n
        dt = timing.prefill_overhead_s
        for req in self.queue:
            take = req.prefill_left
            room = budget - tokens
            if take > room:
                take = room
            if take <= 0:
                break
            step.append((req, take))
            tokens += take
            start = req.prefill_total - req.prefill_left
            end = start + take
            if end <= n_table:
                dt += marginal[end] - marginal[start]
            else:
                dt += timing.prefill_marginal_s(end) - timing.prefill_marginal_s(start)
            if len(step) >= max_seqs:
                break
        self.step = step
        self.busy = True
        self._schedule(dt, self._end_step)

    def _end_step(self, gen: int) -> None:
        if gen != self.gen:
            return
        queue = self.queue
        done = []
        for req, take in self.step:
            req.prefill_left -= take
            self.queued_tokens -= take
            if req.prefill_left == 0:
                queue.popleft()  # finished prompts are always at the head (FIFO)
                done.append(req)
        self.step = []
        self.busy = False
        self.inflight -= len(done)
        if queue:
            self._start_step()
        for req in done:
            self.sim.prefill_done(req)
        self._maybe_release()

    def _take_inflight(self) -> list[Req]:
        reqs = list(self.queue)
        self.queue.clear()
        self.step = []
        self.busy = False
        self.queued_tokens = 0
        self.inflight = 0
        return reqs


class DecodeWorker(Worker):
    """Continuous batching with KV capacity in tokens.

    Aggregate state makes a step O(1): `steps` counts steps done; a request admitted at
    step s0 with g0 tokens generated has g0 + (steps - s0) tokens after `steps`, so its KV
    is kv_at_admit + (steps - s0) and it finishes at step s0 + osl - g0 (a heap keyed on
    that). A run of steps with an unchanged batch is one event, ended early ("cut") at the
    next step boundary when a newly arrived request could be admitted.
    """

    role = "decode"

    def __init__(
        self,
        sim,
        wid,
        t_s,
        ready,
        max_kv_tokens: int,
        max_seqs: int | None,
        max_skip_steps: int,
        max_skip_s: float,
    ):
        super().__init__(sim, wid, t_s, ready)
        self.max_kv = max_kv_tokens
        self.max_seqs = max_seqs or 1 << 30
        self.waiting: deque[Req] = deque()
        self.batch: dict[Req, None] = {}  # insertion order = admission order
        self.heap: list[tuple[int, int, Req]] = []
        self.seq = 0
        self.steps = 0
        self.kv = 0  # tokens in use by the batch
        self.new_first: list[Req] = []
        self.recompute_tokens = 0
        self.incoming = 0  # reserved: KV transfer under way to this worker
        self.busy = False
        self.max_skip_steps = max_skip_steps
        self.max_skip_s = max_skip_s
        # the run of steps under way: start time, steps, first-step and later step times
        self.t0 = 0.0
        self.n = 0
        self.dt0 = 0.0
        self.dt = 0.0

    @property
    def load(self) -> int:
        return self.inflight

    def reserve(self, req: Req) -> None:
        req.decode_worker = self.wid
        self.inflight += 1
        self.incoming += 1

    def arrive(self, req: Req) -> None:
        """The KV transfer finished: queue for admission."""
        self.incoming -= 1
        self.waiting.append(req)
        if not self.busy:
            self._boundary()
        elif self.n > 1 and len(self.batch) < self.max_seqs:
            self._maybe_cut(req)

    def _maybe_cut(self, req: Req) -> None:
        elapsed = self.env.now - self.t0
        done = 0 if elapsed < self.dt0 else 1 + int((elapsed - self.dt0) / self.dt)
        nxt = done + 1
        if nxt >= self.n:
            return
        b = len(self.batch)
        if self.kv + (done + 1) * b + req.isl + req.generated + 1 > self.max_kv:
            return  # it would not fit before the next completion anyway
        self.gen += 1
        self.n = nxt
        end = self.t0 + self.dt0 + (nxt - 1) * self.dt
        self._schedule(end - self.env.now, self._end_run)

    def _admit(self) -> None:
        waiting = self.waiting
        batch = self.batch
        while waiting and len(batch) < self.max_seqs:
            req = waiting[0]
            need = req.isl + req.generated
            # Room for the request and for the next step's token of every request, so a
            # fresh admission is never the one preempted at the same boundary.
            if self.kv + need + len(batch) + 1 > self.max_kv:
                if not batch:
                    # cannot fit even alone (checked at routing, so only after growth)
                    waiting.popleft()
                    self.inflight -= 1
                    self.sim.fail(req, "decode", "ISL + OSL exceed a decode worker's KV capacity")
                    continue
                break
            waiting.popleft()
            self.kv += need
            req.admit_step = self.steps
            req.gen_at_admit = req.generated
            req.kv_at_admit = need
            self.seq += 1
            key = (self.steps + req.osl - req.generated, self.seq, req)
            req.heap_key = key
            heappush(self.heap, key)
            batch[req] = None
            if req.recompute:
                self.recompute_tokens += need
                req.recompute = False
            if req.first_token_s < 0:
                self.new_first.append(req)

    def _preempt_to_fit(self) -> None:
        batch = self.batch
        while batch and self.kv + len(batch) > self.max_kv:
            req = next(reversed(batch))
            del batch[req]
            req.generated = req.gen_at_admit + self.steps - req.admit_step
            self.kv -= req.kv_at_admit + self.steps - req.admit_step
            req.heap_key = None  # heap entry is stale now
            req.recompute = True
            req.preemptions += 1
            self.sim.preemptions += 1
            if req in self.new_first:
                self.new_first.remove(req)
            self.waiting.appendleft(req)

    def _boundary(self) -> None:
        if self.waiting:
            self._admit()
        batch = self.batch
        b = len(batch)
        if b and self.kv + b > self.max_kv:
            self._preempt_to_fit()
            b = len(batch)
        if b == 0:
            self.busy = False
            self._maybe_release()
            return
        heap = self.heap
        top = heap[0]
        while top[2].heap_key is not top:
            heappop(heap)
            top = heap[0]
        kv = self.kv
        n = top[0] - self.steps
        room = (self.max_kv - kv) // b
        if room < n:
            n = room
        if n > self.max_skip_steps:
            n = self.max_skip_steps
        timing = self.timing
        step_s = timing.decode_step_s
        max_skip_s = self.max_skip_s
        # The run's step time is the one at its midpoint (KV grows by b tokens a step); the
        # step time now only caps n at max_skip_s, so skip it when a bound already does.
        if n <= 1 or n * timing.decode_step_bound_s(kv) > max_skip_s:
            dt = step_s(b, kv, kv / b)
            if n * dt > max_skip_s:
                n = max(1, int(max_skip_s / dt))
        if n > 1:
            mid = kv + b * (n - 1) * 0.5
            dt = step_s(b, mid, mid / b)
        dt0 = dt
        if self.recompute_tokens:
            # preempted requests re-prefill their tokens on this engine (vLLM's recompute)
            dt0 += self.timing.prefill_step_s(self.recompute_tokens)
            self.recompute_tokens = 0
        env = self.env
        self.t0 = env._now
        self.n = n
        self.dt0 = dt0
        self.dt = dt
        self.busy = True
        env.call_later(dt0 + (n - 1) * dt, self._end_run, self.gen)

    def _end_run(self, gen: int) -> None:
        if gen != self.gen:
            return
        metrics = self.metrics
        m = self.n
        batch = self.batch
        b = len(batch)
        new_first = self.new_first
        f = len(new_first)
        if f:
            t_first = self.t0 + self.dt0
            observe_ttft = metrics.observe_ttft
            for req in new_first:
                req.first_token_s = t_first
                observe_ttft(t_first - req.arrival_s)
            self.new_first = []
        if b > f:
            metrics.observe_itl(self.dt0, b - f)
        if m > 1:
            metrics.observe_itl(self.dt, (m - 1) * b)
        mb = m * b
        metrics.output_tokens += mb
        steps = self.steps + m
        self.steps = steps
        self.kv += mb
        heap = self.heap
        if heap[0][0] <= steps:
            sim = self.sim
            now = self.env._now
            while heap and heap[0][0] <= steps:
                key = heappop(heap)
                req = key[2]
                if req.heap_key is not key:
                    continue
                req.heap_key = None
                del batch[req]
                self.kv -= req.kv_at_admit + steps - req.admit_step
                req.generated = req.osl
                self.inflight -= 1
                sim.complete(req, now)
        self._boundary()

    def _take_inflight(self) -> list[Req]:
        steps_done = self.steps
        if self.busy and self.n:
            # count the whole steps finished before the failure; their tokens were streamed
            elapsed = self.env.now - self.t0
            done = 0 if elapsed < self.dt0 else min(self.n, 1 + int((elapsed - self.dt0) / self.dt))
            steps_done += done
        if steps_done > self.steps and self.new_first:
            for req in self.new_first:
                req.first_token_s = self.t0 + self.dt0
                self.sim.metrics.observe_ttft(req.first_token_s - req.arrival_s)
        reqs = []
        for req in self.batch:
            req.generated = min(req.osl - 1, req.gen_at_admit + steps_done - req.admit_step)
            req.heap_key = None
            reqs.append(req)
        reqs.extend(self.waiting)
        self.batch.clear()
        self.heap.clear()
        self.waiting.clear()
        self.new_first = []
        self.kv = 0
        self.busy = False
        # requests still in KV transfer notice the death when the transfer lands
        self.inflight = self.incoming
        return reqs
