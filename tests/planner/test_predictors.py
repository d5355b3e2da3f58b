"""Load predictors on synthetic series: tracking, quantiles, missing data, leading zeros,
warm start and option validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from planner.errors import ConfigError
from planner.predictors import PREDICTORS, make_predictor

NAMES = ("constant", "moving_average", "holt", "holt_winters", "kalman", "arima")
# holt_winters needs a period; a short one so its seasonal path (not the Holt fallback) runs.
OPTIONS = {"holt_winters": {"period": 4}}


def make(name, **extra):
    return make_predictor(name, **{**OPTIONS.get(name, {}), **extra})


def one_step(pred, series, start=0):
    """Forecasts made before each value, and the values, from index `start` on."""
    forecasts, actual = [], []
    for i, v in enumerate(series):
        f = pred.predict()
        if i >= start:
            forecasts.append(f)
            actual.append(v)
        pred.observe(v)
    return np.array(forecasts, dtype=float), np.array(actual, dtype=float)


def mae(pred, series, start):
    f, y = one_step(pred, series, start)
    return float(np.mean(np.abs(f - y)))


def test_registry_has_the_six_methods():
    assert set(PREDICTORS) == set(NAMES)
    for name in NAMES:
        assert make(name).name == name


@pytest.mark.parametrize("name", NAMES)
def test_constant_series_stays_constant(name):
    pred = make(name)
    assert pred.predict() is None
    for _ in range(30):
        pred.observe(42.0)
        assert pred.predict() == pytest.approx(42.0, rel=1e-9)
    assert pred.predict(steps=5) == pytest.approx(42.0, rel=1e-9)
    # No error was ever made: the upper bound has no room above the value.
    assert pred.upper(0.9) == pytest.approx(42.0, rel=1e-6)


@pytest.mark.parametrize("name", ["holt", "kalman"])
def test_noiseless_linear_trend_is_extrapolated_exactly(name):
    pred = make(name)
    for t in range(10):
        pred.observe(10.0 + 3.0 * t)
    assert pred.predict() == pytest.approx(40.0, rel=1e-6)
    assert pred.predict(steps=4) == pytest.approx(49.0, rel=1e-6)


@pytest.mark.parametrize("name", ["holt", "kalman"])
def test_noisy_linear_trend_is_followed_within_5_percent(name):
    rng = np.random.default_rng(3)
    t = np.arange(80)
    series = 100.0 + 5.0 * t + rng.normal(0.0, 3.0, t.size)
    f, _ = one_step(make(name), series, start=20)
    truth = 100.0 + 5.0 * t[20:]
    assert np.max(np.abs(f - truth) / truth) < 0.05
    # A method without a trend lags by the slope at every step: > 5% early on.
    f_ma, _ = one_step(make("moving_average", window=5), series, start=20)
    assert np.abs(f_ma[0] - truth[0]) / truth[0] > 0.05


def sine_series(n=240, period=24, noise=2.0, seed=1):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 100.0 + 50.0 * np.sin(2 * np.pi * t / period) + rng.normal(0.0, noise, n)


def test_holt_winters_tracks_a_seasonal_series_better_than_constant():
    series = sine_series()
    hw = mae(make_predictor("holt_winters", period=24), series, start=72)
    const = mae(make_predictor("constant"), series, start=72)
    # Last value misses by about amplitude * 2*pi/24 * 2/pi = 8.3 on average; HW by the noise.
    assert const > 7.0
    assert hw < 0.5 * const


def test_holt_winters_is_holt_until_two_periods():
    series = sine_series(n=60, period=24)
    hw = make_predictor("holt_winters", period=24, alpha=0.4, beta=0.2)
    holt = make_predictor("holt", alpha=0.4, beta=0.2)
    for i, v in enumerate(series):
        if i < 48:
            assert hw.predict() == holt.predict()
        hw.observe(v)
        holt.observe(v)
    assert hw.predict() != pytest.approx(holt.predict(), rel=1e-3)


def test_holt_winters_hand_computed_start():
    # period 2, values 1, 3, 3, 5: period means 2 and 4 -> trend 1 per step, season -0.5 and
    # +0.5, level 2.5 at t=1; both updates over the second period keep level + season exact.
    hw = make_predictor("holt_winters", period=2, alpha=0.3, beta=0.2, gamma=0.4)
    hw.warm_start([1.0, 3.0, 3.0, 5.0])
    assert hw.predict() == pytest.approx(5.0)
    assert hw.predict(steps=2) == pytest.approx(7.0)
    assert hw.predict(steps=3) == pytest.approx(7.0)


def test_arima_beats_constant_on_ar1():
    rng = np.random.default_rng(11)
    n, phi = 140, 0.3
    y = np.empty(n)
    y[0] = 50.0
    for i in range(1, n):
        y[i] = 50.0 + phi * (y[i - 1] - 50.0) + rng.normal(0.0, 5.0)
    arima = mae(make_predictor("arima", refit_every=20), y, start=40)
    const = mae(make_predictor("constant"), y, start=40)
    # Error variances: last value 2/(1+phi) = 1.54 sigma^2, the AR model sigma^2.
    assert arima < 0.92 * const


@pytest.mark.parametrize("name", NAMES)
def test_upper_quantile_coverage_on_noise(name):
    rng = np.random.default_rng(5)
    n = 160 if name == "arima" else 400
    series = 100.0 + rng.normal(0.0, 10.0, n)
    pred = make(name, **({"refit_every": 20} if name == "arima" else {}))
    hits = total = 0
    for i, v in enumerate(series):
        up, point = pred.upper(0.9), pred.predict()
        if i >= 30:
            assert up is not None
            assert up >= point
            total += 1
            hits += v <= up
        pred.observe(v)
    assert 0.8 <= hits / total <= 0.97


def test_upper_before_enough_errors_is_none_for_empirical_methods():
    pred = make_predictor("holt")
    for v in (10.0, 12.0, 11.0):
        pred.observe(v)
    assert pred.predict() is not None
    assert pred.upper(0.9) is None


def test_upper_rejects_bad_quantile():
    pred = make_predictor("constant")
    with pytest.raises(ValueError):
        pred.upper(1.0)
    with pytest.raises(ValueError):
        pred.predict(steps=0)


def test_kalman_interval_widens_with_horizon_and_missing_data():
    rng = np.random.default_rng(2)
    pred = make_predictor("kalman")
    pred.warm_start(100.0 + rng.normal(0.0, 5.0, 50))
    width1 = pred.upper(0.9) - pred.predict()
    assert pred.upper(0.9, steps=4) - pred.predict(steps=4) > width1
    pred.observe(None)
    assert pred.upper(0.9) - pred.predict() > width1


def test_missing_values_before_data_are_ignored():
    for name in NAMES:
        pred = make(name)
        pred.observe(None)
        pred.observe(math.nan)
        assert pred.predict() is None


def test_missing_value_holds_the_last_value():
    pred = make_predictor("constant")
    for v in (5.0, None, math.nan, math.inf):
        pred.observe(v)
    assert pred.predict() == 5.0


def test_missing_interval_advances_holt_by_its_trend():
    pred = make_predictor("holt", alpha=0.5, beta=0.1)
    # 10, 20 -> level 20, trend 10; a gap moves the level to 30; 40 lands on the forecast.
    for v in (10.0, 20.0, None, 40.0):
        pred.observe(v)
    assert pred.predict() == pytest.approx(50.0)
    # A gap before the trend is known spreads the first difference over both steps.
    pred = make_predictor("holt")
    for v in (10.0, None, 30.0):
        pred.observe(v)
    assert pred.predict() == pytest.approx(40.0)


def test_missing_interval_keeps_the_holt_winters_season_in_phase():
    pattern = [10.0, 30.0, 20.0, 40.0]
    hw = make_predictor("holt_winters", period=4)
    hw.warm_start(pattern * 3)
    hw.observe(None)  # the interval that would have been 10
    assert hw.predict() == pytest.approx(30.0)
    hw.observe(30.0)
    assert hw.predict() == pytest.approx(20.0)


def test_arima_filters_through_missing_values():
    series = list(sine_series(n=40, period=12))
    series[20] = None
    series[30] = math.nan
    pred = make_predictor("arima")
    pred.warm_start(series)
    assert pred.predict() is not None and math.isfinite(pred.predict())
    assert pred.upper(0.9) >= pred.predict()


def test_negative_values_are_read_as_zero():
    pred = make_predictor("constant")
    pred.observe(5.0)
    pred.observe(-3.0)
    assert pred.predict() == 0.0


@pytest.mark.parametrize("name", NAMES)
def test_leading_zeros_are_skipped(name):
    pred = make(name)
    for _ in range(4):
        pred.observe(0.0)
    assert pred.predict() == 0.0
    assert pred.upper(0.9) is None
    ramp = [10.0 * (i + 1) + (i % 3) for i in range(12)]
    for v in ramp:
        pred.observe(v)
    clean = make(name)
    clean.warm_start(ramp)
    assert pred.predict() == pytest.approx(clean.predict(), rel=1e-12)


def test_leading_zeros_would_bend_holt_otherwise():
    # Skipped zeros: 10, 20, 30 -> 40. Fed zeros, the trend would start at 0 and lag.
    pred = make_predictor("holt")
    pred.warm_start([0.0, 0.0, 10.0, 20.0, 30.0])
    assert pred.predict() == pytest.approx(40.0)
    # A zero after traffic started is data.
    pred.observe(0.0)
    assert pred.predict() < 40.0


def noisy_with_gaps(n=70):
    rng = np.random.default_rng(9)
    series: list[float | None] = [0.0, 0.0, None]
    series += list(60.0 + 0.4 * np.arange(n) + rng.normal(0.0, 4.0, n))
    series[20] = None
    series[41] = math.nan
    return series


@pytest.mark.parametrize("name", NAMES)
def test_warm_start_equals_feeding_one_by_one(name):
    series = noisy_with_gaps()
    fed = make(name)
    for v in series:
        fed.observe(v)
    warm = make(name)
    warm.warm_start(series)
    # ARIMA's warm start fits once where one-by-one feeding refitted from the previous
    # parameters: equal up to the optimizer's tolerance; the others are the same arithmetic.
    rel = 1e-3 if name == "arima" else 1e-12
    assert warm.predict() == pytest.approx(fed.predict(), rel=rel)
    assert warm.upper(0.9) == pytest.approx(fed.upper(0.9), rel=rel)
    for v in (70.0, None, 75.0):
        fed.observe(v)
        warm.observe(v)
        assert warm.predict() == pytest.approx(fed.predict(), rel=rel)


def test_arima_warm_start_in_two_pieces_equals_one():
    series = noisy_with_gaps()
    whole = make_predictor("arima")
    whole.warm_start(series)
    pieces = make_predictor("arima")
    pieces.warm_start(series[:33])
    pieces.warm_start(series[33:])
    assert pieces.predict() == pytest.approx(whole.predict(), rel=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name):
    series = noisy_with_gaps(50)
    a, b = make(name), make(name)
    out = []
    for pred in (a, b):
        f, _ = one_step(pred, series)
        out.append((f, pred.upper(0.9)))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    assert out[0][1] == out[1][1]


@pytest.mark.parametrize(
    ("name", "options", "key", "shown"),
    [
        ("prophet", {}, "planner.predictor", "'prophet'"),
        ("holt", {"gamma": 0.1}, "planner.predictor_options.gamma", "'gamma'"),
        ("holt", {"alpha": 0.0}, "planner.predictor_options.alpha", "0.0"),
        ("holt", {"alpha": 1.5}, "planner.predictor_options.alpha", "1.5"),
        ("holt", {"alpha": "0.5"}, "planner.predictor_options.alpha", "'0.5'"),
        ("holt", {"beta": -0.1}, "planner.predictor_options.beta", "-0.1"),
        ("holt_winters", {}, "planner.predictor_options.period", "period"),
        ("holt_winters", {"period": 1}, "planner.predictor_options.period", "1"),
        ("holt_winters", {"period": 24.5}, "planner.predictor_options.period", "24.5"),
        ("moving_average", {"window": 0}, "planner.predictor_options.window", "0"),
        ("kalman", {"r": 0}, "planner.predictor_options.r", "0"),
        ("kalman", {"q_level": -1.0}, "planner.predictor_options.q_level", "-1.0"),
        ("arima", {"order": [1, 1]}, "planner.predictor_options.order", "[1, 1]"),
        ("arima", {"order": [1, 3, 1]}, "planner.predictor_options.order", "[1, 3, 1]"),
        ("arima", {"refit_every": 0}, "planner.predictor_options.refit_every", "0"),
        ("constant", {"window": 3}, "planner.predictor_options.window", "'window'"),
    ],
)
def test_make_predictor_rejects_bad_input(name, options, key, shown):
    with pytest.raises(ConfigError) as err:
        make_predictor(name, **options)
    assert err.value.key == key
    assert shown in str(err.value)
    assert "expected" in str(err.value)


def test_make_predictor_accepts_edges_and_auto_order():
    assert make_predictor("holt", alpha=1.0, beta=0.0).alpha == 1.0
    assert make_predictor("holt_winters", period=2).period == 2
    pred = make_predictor("arima", order="auto", refit_every=50)
    pred.warm_start(sine_series(n=40, period=12))
    assert pred.predict() is not None and pred._fit_order is not None


def test_damped_holt_levels_off_where_the_linear_trend_runs_on():
    # alpha 1, beta 1 after 1, 2, 3: level 3, trend 3 - 2 = 1 (the damped trend carried
    # into the update, 0.5, is fully replaced with beta 1). The damped forecast h steps
    # ahead is 3 + (phi + ... + phi^h) * 1 = 3 + (1 - 0.5^h) with phi 0.5: it tends to 4.
    linear = make_predictor("holt", alpha=1.0, beta=1.0)
    damped = make_predictor("holt", alpha=1.0, beta=1.0, damping=0.5)
    for v in (1.0, 2.0, 3.0):
        linear.observe(v)
        damped.observe(v)
    assert [linear.predict(h) for h in (1, 2, 3)] == pytest.approx([4.0, 5.0, 6.0])
    assert [damped.predict(h) for h in (1, 2, 3, 30)] == pytest.approx([3.5, 3.75, 3.875, 4.0])
    # A missing interval moves the level by the damped trend and damps the trend once more.
    damped.observe(None)
    assert damped.predict(1) == pytest.approx(3.5 + 0.25)


def test_damping_one_is_the_classic_holt_and_bad_damping_is_named():
    a = make_predictor("holt", alpha=0.4, beta=0.2)
    b = make_predictor("holt", alpha=0.4, beta=0.2, damping=1.0)
    for v in (5.0, 7.0, 6.0, 9.0, 12.0):
        a.observe(v)
        b.observe(v)
    assert [a.predict(h) for h in (1, 4)] == [b.predict(h) for h in (1, 4)]
    with pytest.raises(ConfigError, match="planner.predictor_options.damping"):
        make_predictor("holt", damping=0.0)
