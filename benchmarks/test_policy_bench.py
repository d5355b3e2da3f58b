"""Benchmark of one planner tick, `decide()` on the observations of a simulated steady run
(60 req/s on llama-3.1-8b/H200, 4-6 prefill replicas): slaplan (ARIMA forecasts, the
TTFT-tail model, corrections and the error budget) and dynamo (Dynamo 1.6: forecasts, the
prefill and decode batch searches over the fitted per-iteration model, the change cap and
the budget fit)."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest

from planlab.profiles import resolve_model
from planlab.runner import run_scenario
from planner.policies import make_policy
from scenario import load_scenario

STEADY = Path(__file__).resolve().parents[1] / "scenarios" / "suite" / "steady.yaml"


@pytest.fixture(scope="module", params=["slaplan", "dynamo"])
def ticks(request):
    sc = load_scenario(STEADY, {"duration": "20m", "planner.policy": request.param})
    records = run_scenario(sc, write=False).result.records
    return sc, [(r.observation, r.current, r.t_s) for r in records]


@pytest.mark.benchmark(group="policy")
def test_policy_decide(benchmark, ticks):
    sc, seen = ticks
    policy = make_policy(sc.planner_config(), resolve_model(sc.model))
    replay = itertools.cycle(seen)
    lap = itertools.count()

    def tick():
        obs, state, t_s = next(replay)
        now = t_s + 1200.0 * (next(lap) // len(seen))  # time keeps moving forward
        return policy.decide(dataclasses.replace(obs, t_s=now), state, now)

    decision = benchmark.pedantic(tick, rounds=100, iterations=1, warmup_rounds=0)
    assert decision.prefill >= 1 and decision.decode >= 1
