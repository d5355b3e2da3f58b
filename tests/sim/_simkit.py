"""Small builders for simulator tests: synthetic profiles with hand-checkable timing and
scenarios assembled from the dataclasses (no YAML)."""

from __future__ import annotations

import dataclasses

import numpy as np

from planner.profile import PerfProfile
from scenario import (
    ArrivalSpec,
    ClusterSpec,
    KVTransferSpec,
    LengthDist,
    ModelSpec,
    PiecewiseRate,
    PlannerSpec,
    PrometheusSpec,
    RoleSpec,
    Scenario,
    SLASpec,
    WorkloadSpec,
)
from sim.clock import Clock
from sim.timing import EngineTiming


def synthetic_profile(
    *,
    prefill_ms: tuple[float, float] = (50.0, 0.0),
    itl_ms: float = 10.0,
    itl_slope_ms: float = 0.0,
    max_kv_tokens: int = 1_000_000,
) -> PerfProfile:
    """Prefill TTFT(l) = a + b*l ms (prefill_ms = (a, b)); decode ITL = itl_ms +
    itl_slope_ms * kv_usage at every context."""
    a, b = prefill_ms
    isl = np.array([100.0, 1000.0, 4000.0, 16000.0, 64000.0])
    ttft = a + b * isl
    kv, ctx = np.meshgrid([0.0, 0.25, 0.5, 0.75, 1.0], [100.0, 1000.0, 10000.0, 100000.0])
    kv, ctx = kv.ravel(), ctx.ravel()
    itl = itl_ms + itl_slope_ms * kv
    thpt = np.maximum(kv * max_kv_tokens / ctx, 1.0) / itl * 1000.0
    return PerfProfile.from_arrays(
        {
            "prefill_isl": isl,
            "prefill_ttft": ttft,
            "prefill_thpt_per_gpu": isl / ttft * 1000.0,
            "x_kv_usage": kv,
            "y_context_length": ctx,
            "z_itl": itl,
            "z_thpt_per_gpu": thpt,
            "max_kv_tokens": [max_kv_tokens],
        },
        "synthetic",
    )


def scenario(
    *,
    duration_s: float = 300.0,
    rate: tuple[tuple[float, float], ...] = ((0.0, 1.0),),
    process: str = "poisson",
    isl: float = 1000,
    osl: float = 50,
    prefill: RoleSpec | None = None,
    decode: RoleSpec | None = None,
    policy: str = "static",
    interval_s: float = 60.0,
    seed: int = 1,
    kv: KVTransferSpec | None = None,
    faults: tuple = (),
    router: str = "round_robin",
    **planner_kw,
) -> Scenario:
    return Scenario(
        name="test",
        seed=seed,
        duration_s=duration_s,
        model=ModelSpec(),
        cluster=ClusterSpec(
            prefill=prefill or RoleSpec(startup_s=60.0),
            decode=decode or RoleSpec(startup_s=60.0),
            kv_transfer=kv or KVTransferSpec(),
            router=router,
            faults=tuple(faults),
        ),
        workload=WorkloadSpec(
            arrival=ArrivalSpec(process, PiecewiseRate(tuple(rate))),
            isl=LengthDist("fixed", value=isl),
            osl=LengthDist("fixed", value=osl),
        ),
        sla=SLASpec(ttft_ms=200.0, itl_ms=20.0),
        planner=PlannerSpec(policy=policy, interval_s=interval_s, **planner_kw),
        prometheus=PrometheusSpec(scrape_interval_s=5.0),
    )


def with_planner(sc: Scenario, **kw) -> Scenario:
    return dataclasses.replace(sc, planner=dataclasses.replace(sc.planner, **kw))


class StubSim:
    """An EngineHost (sim.engine) standing in for the Simulation, recording what the
    worker hands back."""

    def __init__(self, profile: PerfProfile, **timing_kw):
        from sim.prometheus import FrontendMetrics

        self.env = Clock()
        self.timing = EngineTiming(profile, **timing_kw)
        self.metrics = FrontendMetrics()
        self.preemptions = 0
        self.prefilled: list[tuple[int, float]] = []
        self.completed: list[tuple[int, float]] = []
        self.failed: list[int] = []

    def prefill_done(self, req) -> None:
        self.prefilled.append((req.idx, self.env.now))

    def complete(self, req, now: float) -> None:
        self.completed.append((req.idx, now))

    def fail(self, req, where: str, why: str) -> None:
        self.failed.append(req.idx)

    def worker_gone(self, worker) -> None:
        pass
