"""`simulate(...)`: one scenario on one simpy.Environment: workload, frontend and router,
prefill and decode pools, KV transfer, Prometheus scraping, the planner loop and faults.

Order at equal timestamps is deterministic: SimPy runs events by (time, priority, insertion
order); scrapes are URGENT so a planner tick at the same instant sees that scrape.
"""

from __future__ import annotations

import logging
import math
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from simpy.core import NORMAL, URGENT

from planner.errors import ConfigError
from planner.loop import PlannerLoop
from planner.metrics import BUCKET_SETS
from planner.policies import Policy, make_policy
from planner.types import DecisionRecord, PlannerConfig
from scenario import Scenario
from scenario.workload import LengthSampler, Requests, generate, make_rng
from sim.clock import Clock
from sim.connector import SimConnector
from sim.engine import DEAD, Req, Worker
from sim.prometheus import FrontendMetrics, ScrapeStore, SimMetricsSource
from sim.router import ROUTERS
from sim.timing import EngineTiming

log = logging.getLogger(__name__)

STATUS_IN_FLIGHT, STATUS_SUCCESS, STATUS_FAILED = 0, 1, 2
STATUS_NAMES = ("in_flight", "success", "failed")
# Why a request failed, by code in the `error` column (0: it did not fail).
ERRORS = ("", "ISL + OSL exceed a decode worker's KV capacity", "its worker died")
DEFAULT_PREFILL_BUDGET = 16384
MAX_RETRIES = 3


@dataclass(frozen=True)
class SimOptions:
    """Knobs of the model itself (not of the scenario); defaults documented in docs/simulator.md.

    drain_limit_s: after the last arrival, how long in-flight requests may run on;
    max_skip_steps / max_skip_s: the longest run of identical decode steps in one event.
    """

    drain_limit_s: float = 600.0
    max_skip_steps: int = 256
    max_skip_s: float = 1.0
    prefill_budget_tokens: int = DEFAULT_PREFILL_BUDGET


@dataclass
class SimResult:
    """Everything a run produced; planlab.results turns it into files and a summary."""

    requests: dict[str, np.ndarray]
    timeline: list[dict[str, Any]]
    records: list[DecisionRecord]
    gpu_seconds: dict[str, dict[str, float]]
    end_s: float
    duration_s: float
    preemptions: int
    scaling_events: int
    worker_failures: int
    wall_s: float
    counts: dict[str, int] = field(default_factory=dict)
    # one dict per worker ever started: role, wid, state, t_requested, t_ready, t_drain, t_end
    workers: list[dict[str, Any]] = field(default_factory=list)


def _bytes(a: np.ndarray, dtype) -> memoryview:
    return memoryview(np.ascontiguousarray(a, dtype)).cast("B")


class _RequestLog:
    """Per-request columns: the inputs (arrival, ISL, OSL) and the outcome, handed out as
    numpy arrays at the end. Outcomes are written in place during the run into array.array
    columns (8 bytes an entry; a store costs a third of a numpy scalar store); the closed
    loop appends a row per request it makes."""

    FLOAT = ("first_token_s", "finish_s")
    INT = ("prefill_worker", "decode_worker", "status", "preemptions", "retries", "error")

    def __init__(self, requests: Requests | None):
        if requests is not None:
            n = len(requests)
        self.arrival_s, self.isl, self.osl = array("d"), array("q"), array("q")
        if requests is not None:
            n = len(requests)
            self.arrival_s.frombytes(_bytes(requests.arrival_s, np.float64))
            self.isl.frombytes(_bytes(requests.isl, np.int64))
            self.osl.frombytes(_bytes(requests.osl, np.int64))
        else:
            n = 0
        self.n = n
        nan = array("d", [math.nan])
        self.first_token_s = nan * n
        self.finish_s = nan * n
        self.prefill_worker = array("q", [-1]) * n
        self.decode_worker = array("q", [-1]) * n
        self.status = array("q", [0]) * n
        self.preemptions = array("q", [0]) * n
        self.retries = array("q", [0]) * n
        self.error = array("q", [0]) * n

    def add(self, arrival_s: float, isl: int, osl: int) -> int:
        """A new request of the closed loop; returns its index."""
        self.arrival_s.append(arrival_s)
        self.isl.append(isl)
        self.osl.append(osl)
        for name in self.FLOAT:
            getattr(self, name).append(math.nan)
        for name in self.INT:
            getattr(self, name).append(-1 if name.endswith("worker") else 0)
        self.n += 1
        return self.n - 1

    def finish(self, req: Req, status: int, now: float, error: int = 0) -> None:
        i = req.idx
        self.status[i] = status
        if error:
            self.error[i] = error
        self.finish_s[i] = now
        if req.first_token_s >= 0:
            self.first_token_s[i] = req.first_token_s
        self.prefill_worker[i] = req.prefill_worker
        self.decode_worker[i] = req.decode_worker
        self.preemptions[i] = req.preemptions
        self.retries[i] = req.retries

    def table(self) -> dict[str, np.ndarray]:
        names = ("arrival_s",) + self.FLOAT + ("isl", "osl") + self.INT
        return {
            name: np.frombuffer(
                getattr(self, name), np.float64 if name.endswith("_s") else np.int64
            )
            for name in names
        }


class Simulation:
    """The wiring; engines call back into prefill_done / complete / fail."""

    def __init__(
        self,
        scenario: Scenario,
        profile,
        cfg: PlannerConfig,
        policy: Policy,
        requests: Requests | None,
        seed: int,
        options: SimOptions,
        kv_bytes_per_token: float | None,
        progress: Callable[[float, float], None] | None,
    ):
        self.scenario = scenario
        self.cfg = cfg
        self.options = options
        self.duration_s = float(scenario.duration_s)
        self.env = Clock()
        cluster = scenario.cluster
        self.prefill_budget = int(cluster.prefill.max_batch_tokens or options.prefill_budget_tokens)
        self.timing = EngineTiming(
            profile,
            kv_bytes_per_token=kv_bytes_per_token,
            bandwidth_gbps=cluster.kv_transfer.bandwidth_gbps,
            latency_ms=cluster.kv_transfer.latency_ms,
            prefill_table_tokens=self.prefill_budget,
        )
        self.max_skip_steps = options.max_skip_steps
        self.max_skip_s = options.max_skip_s
        buckets = BUCKET_SETS[scenario.prometheus.buckets]
        self.metrics = FrontendMetrics(buckets)
        # Every scrape the run can make, so the matrix is never copied to grow.
        scrapes = (self.duration_s + options.drain_limit_s) / scenario.prometheus.scrape_interval_s
        self.store = ScrapeStore(capacity=int(scrapes) + 2, buckets=buckets)
        self.source = SimMetricsSource(self.store)
        if cluster.router not in ROUTERS:
            raise ConfigError(
                f"unknown router {cluster.router!r}; expected one of {', '.join(ROUTERS)}",
                source=str(scenario.source) if scenario.source else None,
                key="cluster.router",
            )
        self.route = {"prefill": ROUTERS[cluster.router](), "decode": ROUTERS[cluster.router]()}
        self.connector = SimConnector(
            self, {"prefill": cluster.prefill, "decode": cluster.decode}, make_rng(seed + 1)
        )
        self.fault_rng = make_rng(seed + 2)
        self.loop = PlannerLoop(policy, cfg)
        self.records: list[DecisionRecord] = []
        self.timeline: list[dict[str, Any]] = []
        self.progress = progress

        self.requests = requests
        self.closed = scenario.workload.closed_loop if requests is None else None
        self.log = _RequestLog(requests)
        self.user_rng = make_rng(seed + 3)

        self.pending = {"prefill": deque(), "decode": deque()}  # no worker ready
        self.ready = {"prefill": [], "decode": []}
        self.arrived = 0
        self.completed = 0
        self.failed = 0
        self.preemptions = 0
        self.worker_failures = 0
        self.arrivals_done = False
        self.arrivals_since_scrape = 0
        self.last_prediction: dict[str, float | None] = {}
        self.stop = self.env.event()

    # -- frontend ------------------------------------------------------------------

    def _accepting(self, role: str) -> list[Worker]:
        if self.connector.ready_changed:
            for r, pool in self.connector.pools.items():
                self.ready[r] = pool.accepting()
            self.connector.ready_changed = False
        return self.ready[role]

    def admit(self, req: Req) -> None:
        self.arrived += 1
        self.arrivals_since_scrape += 1
        if req.isl + req.osl > self.timing.max_kv_tokens:
            self.fail(req, "frontend", ERRORS[1])
            return
        self.route_prefill(req)

    def route_prefill(self, req: Req) -> None:
        workers = self._accepting("prefill")
        if not workers:
            self.pending["prefill"].append(req)
            return
        self.route["prefill"](workers).enqueue(req)

    def prefill_done(self, req: Req) -> None:
        workers = self._accepting("decode")
        if not workers:
            self.pending["decode"].append(req)
            return
        self._transfer(req, self.route["decode"](workers))

    def _transfer(self, req: Req, w) -> None:
        w.reserve(req)
        self.env.call_later(
            self.timing.kv_transfer_s(req.isl + req.generated), self._landed, (req, w)
        )

    def _landed(self, req_w: tuple[Req, Worker]) -> None:
        req, w = req_w
        if w.state == DEAD:
            w.inflight -= 1
            w.incoming -= 1
            self._lost(req)
            return
        w.arrive(req)

    def complete(self, req: Req, now: float) -> None:
        self.completed += 1
        self.log.finish(req, STATUS_SUCCESS, now)
        m = self.metrics
        m.requests["success"] += 1
        m.observe_duration(now - req.arrival_s)
        m.observe_isl(req.isl)
        m.observe_osl(req.osl)
        self._after_finish(req)

    def fail(self, req: Req, where: str, why: str) -> None:
        log.debug("t=%.3f request %d failed at %s: %s", self.env.now, req.idx, where, why)
        self.failed += 1
        self.log.finish(req, STATUS_FAILED, self.env.now, ERRORS.index(why) if why in ERRORS else 1)
        self.metrics.requests["error"] += 1
        self._after_finish(req)

    def _after_finish(self, req: Req) -> None:
        if self.closed is not None and not self.arrivals_done:
            self.env.call_later(self.closed.think_time_s, self._user_next, req.user)
        elif self.arrivals_done and self.completed + self.failed == self.arrived:
            if not self.stop.triggered:
                self.stop.succeed()

    # -- workers -------------------------------------------------------------------

    def on_worker_ready(self, w: Worker) -> None:
        pending = self.pending[w.role]
        if w.role == "prefill":
            while pending:
                self.route_prefill(pending.popleft())
        else:
            while pending:
                self.prefill_done(pending.popleft())

    def worker_gone(self, w: Worker) -> None:
        self.connector.on_gone(w)

    def on_worker_lost(self, w: Worker, reqs: list[Req]) -> None:
        self.worker_failures += 1
        log.info(
            "t=%.1f %s worker %d died holding %d requests", self.env.now, w.role, w.wid, len(reqs)
        )
        for req in reqs:
            self._lost(req)

    def _lost(self, req: Req) -> None:
        mode = self.fault_mode.get("prefill" if req.decode_worker < 0 else "decode", "retry")
        if mode == "fail" or req.retries >= MAX_RETRIES:
            self.fail(req, "worker", ERRORS[2])
            return
        # Retry from the frontend: the lost KV is recomputed by a prefill of every token so far.
        req.retries += 1
        req.prefill_left = req.prefill_total = req.isl + req.generated
        req.recompute = False
        req.decode_worker = -1
        self.route_prefill(req)

    # -- processes -----------------------------------------------------------------

    def _start_arrivals(self) -> None:
        # One callback per distinct arrival time, each scheduling the next: the same events
        # in the same order as a SimPy process that yields a timeout per gap (it was one).
        # The log's array.array columns, not lists: a million Python floats and ints would
        # be 80 MB more (an element becomes a Python number only when it is read).
        self._arrival = self.log.arrival_s
        self._isl = self.log.isl
        self._osl = self.log.osl
        self.env.call_later(0, self._arrive, 0, URGENT)  # where the process would start

    def _arrive(self, i: int) -> None:
        arrival = self._arrival
        n = len(arrival)
        now = self.env._now
        while i < n:
            t = arrival[i]
            if t > now:
                self.env.call_later(t - now, self._arrive, i)
                return
            self.admit(Req(i, t, self._isl[i], self._osl[i]))
            i += 1

    def _start_users(self) -> None:
        self.sampler = LengthSampler(
            self.scenario.workload.isl, self.scenario.workload.osl, self.scenario.workload.isl_scale
        )
        for user in range(self.closed.users):
            self._user_send(user)

    def _user_next(self, user: int) -> None:
        if not self.arrivals_done:
            self._user_send(user)

    def _user_send(self, user: int) -> None:
        isl, osl = self.sampler.sample(self.user_rng, self.env.now)
        now = self.env.now
        req = Req(self.log.add(now, isl, osl), now, isl, osl)
        req.user = user
        self.admit(req)

    def _end_arrivals(self, ev) -> None:
        self.arrivals_done = True
        if self.completed + self.failed == self.arrived and not self.stop.triggered:
            self.stop.succeed()

    def _every(self, period_s: float, fn, priority: int) -> None:
        """Call fn(now) at k * period_s for k = 1, 2, ... (no accumulated rounding)."""
        env = self.env

        def fire(k: int) -> None:
            fn(env.now)
            env.call_later((k + 1) * period_s - env.now, fire, k + 1, priority)

        env.call_later(period_s, fire, 1, priority)

    def _scrape(self, now: float) -> None:
        queued = len(self.pending["prefill"]) + len(self.pending["decode"])
        for pool in self.connector.pools.values():
            for w in pool.alive:
                queued += len(w.queue) if w.role == "prefill" else len(w.waiting)
        m = self.metrics
        m.inflight = self.arrived - self.completed - self.failed
        m.requests_started = self.arrived
        m.queued = queued
        self.store.scrape(now, m)
        scrape_s = self.scenario.prometheus.scrape_interval_s
        row: dict[str, Any] = {
            "t_s": now,
            "request_rate": self.arrivals_since_scrape / scrape_s,
            "inflight": m.inflight,
            "queued": queued,
        }
        self.arrivals_since_scrape = 0
        for role, pool in self.connector.pools.items():
            row[f"{role}_desired"] = pool.desired
            row[f"{role}_ready"] = pool.count("ready")
            row[f"{role}_starting"] = pool.count("starting")
            row[f"{role}_draining"] = pool.count("draining")
        row["gpus"] = self.connector.gpus_in_use()
        num_req = self.last_prediction.get("num_req")
        row["predicted_rate"] = (
            num_req / self.cfg.interval_s
            if num_req is not None and math.isfinite(num_req)
            else None
        )
        self.timeline.append(row)
        if self.progress is not None:
            self.progress(now, self.duration_s)

    def _tick(self, now: float) -> None:
        stats = self.source.window(now, self.cfg.interval_s)
        state = self.connector.state()
        record = self.loop.tick(stats, state, now)
        d = record.decision
        applied = self.connector.scale(d.prefill, d.decode)
        self.records.append(PlannerLoop.mark_applied(record, applied))
        self.last_prediction = dict(d.prediction)

    def _faults(self) -> None:
        self.fault_mode: dict[str, str] = {}
        for fault in self.scenario.cluster.faults:
            self.fault_mode[fault.role] = fault.on_failure
            if fault.at_s is not None:
                self.env.call_later(fault.at_s, self.connector.kill_one, fault.role)
            if fault.rate_per_hour:
                self.env.process(self._fault_rate(fault.role, fault.rate_per_hour / 3600.0))

    def _fault_rate(self, role: str, rate_per_s: float):
        while True:
            n = max(1, len(self.connector.pools[role].accepting()))
            yield self.env.timeout(float(self.fault_rng.exponential(1.0 / (rate_per_s * n))))
            if not self.arrivals_done:
                self.connector.kill_one(role)

    # -- run -----------------------------------------------------------------------

    def run(self) -> SimResult:
        wall0 = time.perf_counter()
        env = self.env
        self.connector.start_initial()
        self._faults()
        if self.requests is not None:
            self._start_arrivals()
        elif self.closed is not None:
            self._start_users()
        end_arr = env.timeout(self.duration_s)
        end_arr.callbacks.append(self._end_arrivals)
        limit = env.timeout(self.duration_s + self.options.drain_limit_s)
        limit.callbacks.append(lambda ev: None if self.stop.triggered else self.stop.succeed())
        self._every(self.scenario.prometheus.scrape_interval_s, self._scrape, URGENT)
        self._every(self.cfg.interval_s, self._tick, NORMAL)
        env.run(until=self.stop)
        end_s = env.now
        if not self.timeline or end_s - self.timeline[-1]["t_s"] >= 1e-3:
            self._scrape(end_s)  # a last timeline row at the end of the run
        in_flight = self.arrived - self.completed - self.failed
        return SimResult(
            requests=self.log.table(),
            timeline=self.timeline,
            records=self.records,
            gpu_seconds=self.connector.gpu_seconds(end_s),
            end_s=end_s,
            duration_s=self.duration_s,
            preemptions=self.preemptions,
            scaling_events=self.connector.scaling_events,
            worker_failures=self.worker_failures,
            wall_s=time.perf_counter() - wall0,
            workers=[
                {
                    "role": w.role,
                    "wid": w.wid,
                    "state": w.state,
                    "t_requested": w.t_requested,
                    "t_ready": w.t_ready,
                    "t_drain": w.t_drain,
                    "t_end": w.t_end,
                }
                for pool in self.connector.pools.values()
                for w in pool.all
            ],
            counts={
                "arrived": self.arrived,
                "completed": self.completed,
                "failed": self.failed,
                "in_flight": in_flight,
            },
        )


def simulate(
    scenario: Scenario,
    profile,
    cfg: PlannerConfig | None = None,
    policy: Policy | None = None,
    *,
    requests: Requests | None = None,
    seed: int | None = None,
    options: SimOptions | None = None,
    kv_bytes_per_token: float | None = None,
    progress: Callable[[float, float], None] | None = None,
) -> SimResult:
    """Run one scenario. cfg defaults to scenario.planner_config(); policy to make_policy;
    requests to the scenario's workload generated under seed (None for a closed loop)."""
    seed = scenario.seed if seed is None else int(seed)
    cfg = cfg or scenario.planner_config()
    if requests is None and scenario.workload.closed_loop is None:
        requests = generate(scenario.workload, scenario.duration_s, seed)
    if policy is None:
        extra = {"requests": requests} if cfg.policy == "oracle" else {}
        policy = make_policy(cfg, profile, **extra)
    sim = Simulation(
        scenario,
        profile,
        cfg,
        policy,
        requests,
        seed,
        options or SimOptions(),
        kv_bytes_per_token,
        progress,
    )
    return sim.run()
