"""Benchmarks of the load predictors: one ARIMA observe+predict step on 200 points."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from planner.predictors import make_predictor


def ar1_series(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = np.empty(n)
    y[0] = 600.0
    for i in range(1, n):
        y[i] = 600.0 + 0.6 * (y[i - 1] - 600.0) + rng.normal(0.0, 40.0)
    return y


def arima_step(benchmark, rounds=100, **options):
    pred = make_predictor("arima", **options)
    pred.warm_start(ar1_series(200))
    upcoming = itertools.cycle(ar1_series(100, seed=1))

    def step():
        pred.observe(next(upcoming))
        return pred.predict()

    # A bounded number of steps: with refit_every=10, 100 steps hold 10 refits.
    result = benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=0)
    assert result is not None and result > 0


@pytest.mark.benchmark(group="arima")
def test_arima_step_default(benchmark):
    """Default schedule (window 100, refit every 10 steps, filter in between)."""
    arima_step(benchmark)


@pytest.mark.benchmark(group="arima")
def test_arima_step_refit_every_step(benchmark):
    """Worst case: a warm-started refit on every step."""
    arima_step(benchmark, rounds=30, refit_every=1)


@pytest.mark.benchmark(group="arima")
def test_arima_step_filter_only(benchmark):
    """Best case: the model is only extended by the new value (no refit in 100 steps)."""
    arima_step(benchmark, refit_every=1000)
