"""The emulated cluster: worker pools per role, a router, and the request path prefill -> decode."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable

from live.emulator.workers import (
    DRAINING,
    END,
    READY,
    STARTING,
    STOPPED,
    DecodeWorker,
    Job,
    PrefillWorker,
    Timing,
    Worker,
)
from planner.errors import ConfigError
from planner.types import ReplicaState, RoleState

log = logging.getLogger(__name__)


class RequestTooLong(Exception):
    """A request whose prompt plus output can never fit one decode worker's KV cache."""

    def __init__(self, isl: int, osl: int, max_kv_tokens: int):
        super().__init__(
            f"this request needs {isl + osl} tokens of KV cache ({isl} prompt + {osl} "
            f"max_tokens) but a decode worker holds at most {max_kv_tokens}: it could never "
            "be scheduled; shorten the prompt or lower max_tokens"
        )
        self.isl, self.osl, self.max_kv_tokens = isl, osl, max_kv_tokens


class ClusterStopped(Exception):
    """The cluster is shutting down; no new request is taken."""


class RoundRobin:
    def __init__(self) -> None:
        self._n = 0

    def pick(self, workers: list[Worker]) -> Worker:
        self._n += 1
        return workers[self._n % len(workers)]


class LeastLoaded:
    def pick(self, workers: list[Worker]) -> Worker:
        return min(workers, key=lambda w: w.load())


ROUTERS: dict[str, Callable[[], RoundRobin | LeastLoaded]] = {
    "round_robin": RoundRobin,
    "least_loaded": LeastLoaded,
}


class EmulatedCluster:
    """Prefill and decode worker pools on the running asyncio loop.

    A request is routed to a prefill and a decode worker when it arrives (waiting,
    "queued", while a role has no ready worker); after its prefill the KV cache moves to
    decode in `timing.kv_transfer_s(isl)`, and decode makes every output token, one per
    step (TTFT = wait + prefill + transfer + admission + first decode step, as in sim/).
    Startup delays are wall seconds (not divided by `speedup`, which scales only the
    engine step times). A request that could never fit a decode worker's KV cache is
    refused at submit (RequestTooLong), as the simulator's frontend fails it.
    """

    def __init__(
        self,
        timing: Timing,
        *,
        prefill_replicas: int = 1,
        decode_replicas: int = 1,
        prefill_startup_s: float = 0.0,
        decode_startup_s: float = 0.0,
        router: str = "round_robin",
        max_batch_tokens: int = 16384,
        prefill_max_num_seqs: int | None = None,
        max_kv_tokens: int | None = None,
        max_num_seqs: int = 1024,
        speedup: float = 1.0,
        stuck_after_s: float | None = None,
    ):
        if router not in ROUTERS:
            raise ConfigError(
                f"unknown router {router!r}; expected one of {sorted(ROUTERS)}", key="router"
            )
        if speedup <= 0:
            raise ConfigError(f"speedup must be > 0, got {speedup}", key="speedup")
        self.timing = timing
        self.speedup = speedup
        self.startup_s = {"prefill": float(prefill_startup_s), "decode": float(decode_startup_s)}
        self.initial = {"prefill": int(prefill_replicas), "decode": int(decode_replicas)}
        self.max_batch_tokens = max_batch_tokens
        self.prefill_max_num_seqs = prefill_max_num_seqs
        # None: the profile's KV capacity (EngineTiming.max_kv_tokens), else unbounded.
        self.max_kv_tokens = max_kv_tokens or getattr(timing, "max_kv_tokens", None) or 10**9
        self.max_num_seqs = max_num_seqs
        self.stuck_after_s = stuck_after_s
        self.workers: dict[str, list[Worker]] = {"prefill": [], "decode": []}
        self.observed_startup_s: dict[str, list[float]] = {"prefill": [], "decode": []}
        self._routers = {role: ROUTERS[router]() for role in self.workers}
        self._names = {role: itertools.count() for role in self.workers}
        self._ids = itertools.count()
        self._changed: asyncio.Condition | None = None
        self._timers: set[asyncio.Task] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.waiting_for_workers = 0
        self.inflight = 0
        self.closed = False

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the initial workers, ready at once (the cluster was up before the run)."""
        self.loop = asyncio.get_running_loop()
        self._changed = asyncio.Condition()
        for role, n in self.initial.items():
            for _ in range(n):
                worker = self._new_worker(role)
                worker.requested_at = time.perf_counter()
                worker.mark_ready()
        log.info("emulated cluster started: %d prefill, %d decode", *self.initial.values())

    async def stop(self) -> None:
        """Fail every request still held (their clients get an error at once) and stop."""
        self.closed = True
        for task in self._timers:
            task.cancel()
        for workers in self.workers.values():
            for worker in workers:
                if worker.state != STOPPED:
                    worker.kill()
        await self._notify()

    def _new_worker(self, role: str) -> Worker:
        name = f"{role}-{next(self._names[role])}"
        if role == "prefill":
            worker: Worker = PrefillWorker(
                name,
                self.timing,
                self._prefill_done,
                max_batch_tokens=self.max_batch_tokens,
                max_num_seqs=self.prefill_max_num_seqs,
                speedup=self.speedup,
            )
        else:
            worker = DecodeWorker(
                name,
                self.timing,
                max_kv_tokens=self.max_kv_tokens,
                max_num_seqs=self.max_num_seqs,
                speedup=self.speedup,
            )
        self.workers[role].append(worker)
        return worker

    def live_workers(self, role: str) -> list[Worker]:
        """Workers that count toward the desired replicas: starting or ready."""
        return [w for w in self.workers[role] if w.state in (STARTING, READY)]

    def ready_workers(self, role: str) -> list[Worker]:
        return [w for w in self.workers[role] if w.state == READY]

    def scale_role(self, role: str, replicas: int) -> None:
        """Start or drain workers until `replicas` are starting or ready; safe to repeat.

        Scale-down first cancels workers still starting (newest first), then drains the
        least-loaded ready ones.
        """
        live = self.live_workers(role)
        for _ in range(replicas - len(live)):
            worker = self._new_worker(role)
            task = asyncio.get_running_loop().create_task(self._start_later(worker))
            self._timers.add(task)
            task.add_done_callback(self._timers.discard)
        excess = len(live) - replicas
        if excess > 0:
            starting = [w for w in live if w.state == STARTING][::-1]
            ready = sorted((w for w in live if w.state == READY), key=lambda w: w.load())
            for worker in (starting + ready)[:excess]:
                log.info("draining %s", worker.name)
                worker.drain()

    async def _start_later(self, worker: Worker) -> None:
        await asyncio.sleep(self.startup_s[worker.role])
        if worker.state != STARTING:
            return
        worker.mark_ready()
        self.observed_startup_s[worker.role].append(worker.ready_at - worker.requested_at)
        log.info("%s ready after %.2f s", worker.name, worker.ready_at - worker.requested_at)
        await self._notify()

    async def _notify(self) -> None:
        if self._changed is None:
            return
        async with self._changed:
            self._changed.notify_all()

    def role_state(self, role: str) -> RoleState:
        now = time.perf_counter()
        workers = self.workers[role]
        starting = [w for w in workers if w.state == STARTING]
        stuck = 0
        if self.stuck_after_s is not None:
            stuck = sum(1 for w in starting if now - w.requested_at > self.stuck_after_s)
        return RoleState(
            desired=len(self.live_workers(role)),
            ready=sum(1 for w in workers if w.state == READY),
            starting=len(starting),
            draining=sum(1 for w in workers if w.state == DRAINING),
            stuck=stuck,
            startup_s=tuple(self.observed_startup_s[role][-20:]),
        )

    def replica_state(self) -> ReplicaState:
        return ReplicaState(prefill=self.role_state("prefill"), decode=self.role_state("decode"))

    # -- the request path --------------------------------------------------------------

    def queued(self) -> int:
        """Requests not yet started: waiting for a ready worker or in a prefill queue
        without any prefill done."""
        n = self.waiting_for_workers
        for w in self.workers["prefill"]:
            n += sum(1 for j in w.queue if j.prefill_left == j.isl)
        return n

    async def submit(self, isl: int, osl: int) -> Job:
        """Route a new request; returns its Job once a prefill and a decode worker took it.

        RequestTooLong at once for a request that could never be scheduled (it would
        otherwise hold a decode worker forever); ClusterStopped once the cluster stops.
        """
        isl, osl = max(1, int(isl)), max(1, int(osl))
        if isl + osl > self.max_kv_tokens:
            raise RequestTooLong(isl, osl, self.max_kv_tokens)
        if self.closed:
            raise ClusterStopped("the emulated cluster is shutting down")
        job = Job(next(self._ids), isl, osl)
        self.inflight += 1
        prefill = self.ready_workers("prefill")
        decode = self.ready_workers("decode")
        if not prefill or not decode:
            self.waiting_for_workers += 1
            try:
                async with self._changed:
                    while not (prefill and decode):
                        await self._changed.wait()
                        if self.closed:
                            raise ClusterStopped("the emulated cluster is shutting down")
                        prefill = self.ready_workers("prefill")
                        decode = self.ready_workers("decode")
            except BaseException:
                self.inflight -= 1
                raise
            finally:
                self.waiting_for_workers -= 1
        job.decode_worker = self._routers["decode"].pick(decode)
        job.decode_worker.assigned += 1
        job.prefill_worker = self._routers["prefill"].pick(prefill)
        job.prefill_worker.submit(job)
        return job

    def finished(self, job: Job) -> None:
        """The frontend is done with this job (completed, failed or client gone)."""
        self.inflight -= 1
        if not job.done and not job.cancelled:
            job.cancelled = True
            # Wake the decode worker so a draining one notices it has nothing left.
            if job.decode_worker is not None:
                job.decode_worker._wake.set()

    def _prefill_done(self, job: Job, end_s: float) -> None:
        """The prefill of job ended (nominally) at loop time end_s; its KV cache lands on
        the decode worker after the transfer, which the worker accounts for itself."""
        decode = job.decode_worker
        decode.assigned -= 1
        if job.cancelled:
            decode._wake.set()
            return
        if decode.state == STOPPED:
            job.error = f"{decode.name} stopped"
            job.tokens.put_nowait(END)
            return
        # As in the simulator, every output token (the first included) comes from a
        # decode step, after the KV cache has moved.
        decode.submit(job, end_s + self.timing.kv_transfer_s(job.isl) / self.speedup)
