"""Benchmarks of the simulated metrics: one ITL observation (the simulator's per-step hot
path), one scrape, and one window query on a 24-hour store (17,280 scrapes at 5 s)."""

from __future__ import annotations

import numpy as np
import pytest

from planner.observation import build_observation
from sim.prometheus import FrontendMetrics, ScrapeStore, SimMetricsSource

DAY_S = 86_400
SCRAPE_S = 5.0


@pytest.mark.benchmark(group="metrics")
def test_observe_itl(benchmark):
    metrics = FrontendMetrics()
    itl = metrics.observe_itl
    values = np.random.default_rng(0).lognormal(np.log(0.02), 0.4, 1000).tolist()

    def thousand_steps():
        for v in values:
            itl(v, 32)

    # Per call: the reported time divided by 1000.
    benchmark.pedantic(thousand_steps, rounds=200, iterations=1, warmup_rounds=5)
    assert metrics._itl.count == 32 * 1000 * 205


@pytest.fixture(scope="module")
def day_store() -> ScrapeStore:
    rng = np.random.default_rng(1)
    metrics, store = FrontendMetrics(), ScrapeStore()
    for k in range(int(DAY_S / SCRAPE_S)):
        # About 10 req/s with a few decode steps per scrape interval: enough to fill buckets.
        for _ in range(int(rng.poisson(50))):
            metrics.inc_requests()
            metrics.observe_ttft(float(rng.lognormal(np.log(0.15), 0.5)))
            metrics.observe_isl(3000)
            metrics.observe_osl(150)
            metrics.observe_duration(float(rng.lognormal(np.log(3.0), 0.3)))
        metrics.observe_itl(float(rng.lognormal(np.log(0.02), 0.3)), 64)
        store.scrape(k * SCRAPE_S, metrics)
    return store


@pytest.mark.benchmark(group="metrics")
def test_scrape(benchmark):
    metrics, store = FrontendMetrics(), ScrapeStore(capacity=20_000)
    metrics.observe_itl(0.02, 10)
    t = iter(range(10**9))
    benchmark.pedantic(lambda: store.scrape(next(t) * SCRAPE_S, metrics), rounds=5000, iterations=1)


@pytest.mark.benchmark(group="metrics")
def test_window_on_a_day_store(benchmark, day_store):
    source = SimMetricsSource(day_store)
    assert len(day_store) == 17_280
    t_end = (len(day_store) - 1) * SCRAPE_S

    def tick():
        return build_observation(source.window(t_end, 60.0))

    obs = benchmark.pedantic(tick, rounds=300, iterations=1, warmup_rounds=5)
    assert obs.num_req is not None and obs.num_req > 0
    assert obs.itl_p90_ms is not None
