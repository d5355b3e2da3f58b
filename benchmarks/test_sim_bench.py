"""Simulator speed: the Azure conversation trace (19,366 requests, one hour) under the
dynamo policy with a constant predictor, in simulated requests per wall second and peak
memory; and a 24-hour, one-million-request synthetic day.

Targets (issue 3): >= 20,000 requests per wall second on one core, peak memory < 1 GiB,
the 24-hour run in under 2 minutes. Run with `python -m pytest benchmarks/test_sim_bench.py`.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from planlab.profiles import resolve_model
from scenario import (
    AnalyticSpec,
    ArrivalSpec,
    ClusterSpec,
    LengthDist,
    ModelSpec,
    PlannerSpec,
    RoleSpec,
    Scenario,
    SineRate,
    SLASpec,
    TraceSpec,
    WorkloadSpec,
)
from scenario.workload import generate
from sim.simulate import simulate

AZURE_TRACE = Path(__file__).resolve().parents[2] / "shared" / "traces" / "azure-llm-2023-conv.csv"
MODEL = ModelSpec(analytic=AnalyticSpec("llama-3.1-8b", "h200"))
PLANNER = PlannerSpec(policy="dynamo", interval_s=60.0, predictor="constant")


@pytest.fixture(scope="module")
def azure():
    if not AZURE_TRACE.exists():
        pytest.skip(f"reference trace not found at {AZURE_TRACE} (../shared is absent)")
    sc = Scenario(
        name="azure-bench",
        seed=1,
        duration_s=3600.0,
        model=MODEL,
        cluster=ClusterSpec(prefill=RoleSpec(replicas=1), decode=RoleSpec(replicas=1)),
        workload=WorkloadSpec(trace=TraceSpec(path=AZURE_TRACE, format="azure")),
        sla=SLASpec(ttft_ms=500.0, itl_ms=50.0),
        planner=PLANNER,
    )
    profile = resolve_model(sc.model)
    return sc, profile, generate(sc.workload, sc.duration_s, sc.seed)


@pytest.mark.benchmark(group="sim")
def test_azure_trace_requests_per_wall_second(benchmark, azure):
    sc, profile, reqs = azure
    result = benchmark.pedantic(
        lambda: simulate(sc, profile, requests=reqs), rounds=3, iterations=1, warmup_rounds=1
    )
    # the cluster keeps up: everything completes and nothing waits for the drain limit
    assert result.counts["completed"] == len(reqs) == 19_366
    assert result.end_s < sc.duration_s + 120
    rate = len(reqs) / benchmark.stats.stats.min
    benchmark.extra_info["requests_per_wall_s"] = round(rate)
    assert rate >= 20_000


@pytest.mark.benchmark(group="sim")
def test_azure_trace_peak_memory(benchmark, azure):
    sc, profile, reqs = azure
    peak: list[int] = []

    def run():
        tracemalloc.start()
        try:
            simulate(sc, profile, requests=reqs)
            peak.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["peak_mib"] = round(peak[0] / 2**20, 1)
    assert peak[0] < 2**30


@pytest.mark.slow
@pytest.mark.benchmark(group="sim")
def test_day_of_one_million_requests(benchmark):
    # A diurnal day around 11.6 req/s (1M requests in 24 h), ISL ~1000, OSL ~200.
    sc = Scenario(
        name="day-bench",
        seed=2,
        duration_s=86_400.0,
        model=MODEL,
        cluster=ClusterSpec(
            prefill=RoleSpec(replicas=1, startup_s=120.0),
            decode=RoleSpec(replicas=1, startup_s=120.0),
        ),
        workload=WorkloadSpec(
            arrival=ArrivalSpec("poisson", SineRate(mean=11.574, amplitude=6.0, period_s=86_400.0)),
            isl=LengthDist("lognormal", mean=1000, cv=0.5, max=16000),
            osl=LengthDist("lognormal", mean=200, cv=0.5, max=2000),
        ),
        sla=SLASpec(ttft_ms=500.0, itl_ms=50.0),
        planner=PLANNER,
    )
    profile = resolve_model(sc.model)
    result = benchmark.pedantic(lambda: simulate(sc, profile), rounds=1, iterations=1)
    n = result.counts["arrived"]
    assert 990_000 < n < 1_010_000
    assert result.counts["completed"] == n
    benchmark.extra_info["requests"] = n
    benchmark.extra_info["requests_per_wall_s"] = round(n / result.wall_s)
    assert benchmark.stats.stats.max < 120.0
