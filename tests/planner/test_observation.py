"""Observation building from window statistics, checked against hand-computed values."""

from __future__ import annotations

import json
import math

import pytest

from planner.observation import (
    HistogramDelta,
    WindowStats,
    build_observation,
    cdf_fraction_above,
    histogram_quantile,
    sparse_cdf,
)
from planner.types import Decision, DecisionRecord, ReplicaState, RoleState

BOUNDS = (0.1, 0.2, 0.4, 0.8)


def test_quantile_interpolates_linearly_inside_the_bucket() -> None:
    # 10 obs <= 0.1, 30 <= 0.2, 90 <= 0.4, 100 <= 0.8, 100 total.
    cum = (10, 30, 90, 100, 100)
    # p50: rank 50 falls in (0.2, 0.4] holding 60 obs, 20 into it: 0.2 + 0.2 * 20/60.
    assert histogram_quantile(0.5, BOUNDS, cum) == pytest.approx(0.2 + 0.2 * 20 / 60)
    # p90: rank 90 is exactly the top of (0.2, 0.4].
    assert histogram_quantile(0.9, BOUNDS, cum) == pytest.approx(0.4)
    # p99: rank 99 in (0.4, 0.8] holding 10, 9 into it.
    assert histogram_quantile(0.99, BOUNDS, cum) == pytest.approx(0.4 + 0.4 * 9 / 10)
    # lowest bucket starts at 0: p5 = rank 5 of 10 in (0, 0.1].
    assert histogram_quantile(0.05, BOUNDS, cum) == pytest.approx(0.05)


def test_quantile_in_the_inf_bucket_returns_the_highest_finite_bound() -> None:
    cum = (0, 0, 0, 50, 100)  # half above 0.8
    assert histogram_quantile(0.9, BOUNDS, cum) == pytest.approx(0.8)


def test_quantile_of_an_empty_histogram_is_none() -> None:
    assert histogram_quantile(0.5, BOUNDS, (0, 0, 0, 0, 0)) is None
    assert histogram_quantile(0.5, BOUNDS, (0, 0, 0, 0, math.nan)) is None


def test_quantile_repairs_non_monotone_buckets_like_prometheus() -> None:
    # A scrape race can leave a lower le bucket above a higher one; a running max fixes it.
    cum = (10, 8, 20, 20, 20)
    assert histogram_quantile(0.5, BOUNDS, cum) == pytest.approx(0.1)


def _h(cum: tuple[float, ...], total_sum: float) -> HistogramDelta:
    return HistogramDelta(BOUNDS, cum, total_sum, cum[-1])


def test_observation_means_rates_and_percentiles_in_ms() -> None:
    stats = WindowStats(
        t_s=120.0,
        window_s=60.0,
        requests=120.0,
        ttft_s=_h((10, 30, 90, 100, 100), 25.0),  # mean 0.25 s
        itl_s=_h((100, 100, 100, 100, 100), 2.0),  # mean 0.02 s
        duration_s=_h((0, 0, 0, 100, 100), 300.0),
        isl_tokens=HistogramDelta((1000.0, 4000.0), (0, 100, 100), 300_000.0, 100),
        osl_tokens=HistogramDelta((100.0, 400.0), (0, 100, 100), 15_000.0, 100),
        inflight=7.0,
    )
    obs = build_observation(stats)
    assert obs.num_req == 120.0
    assert obs.request_rate == pytest.approx(2.0)
    assert obs.isl_mean == pytest.approx(3000.0)
    assert obs.osl_mean == pytest.approx(150.0)
    assert obs.ttft_mean_ms == pytest.approx(250.0)
    assert obs.ttft_p50_ms == pytest.approx(1000 * (0.2 + 0.2 * 20 / 60))
    assert obs.ttft_p99_ms == pytest.approx(1000 * (0.4 + 0.4 * 9 / 10))
    assert obs.itl_mean_ms == pytest.approx(20.0)
    assert obs.request_duration_mean_s == pytest.approx(3.0)
    assert obs.inflight == 7.0
    assert obs.missing == ()


def test_share_above_a_target_is_the_inverse_of_the_quantile() -> None:
    # 100 requests: 10 <= 0.1 s, 20 in (0.1, 0.2], 60 in (0.2, 0.4], 10 in (0.4, 0.8].
    h = _h((10, 30, 90, 100, 100), 25.0)
    cdf = sparse_cdf(h.upper_bounds, h.cumulative)
    for q in (0.05, 0.2, 0.5, 0.9, 0.95):
        assert cdf_fraction_above(cdf, h.quantile(q)) == pytest.approx(1 - q)
    assert cdf_fraction_above(cdf, 0.4) == pytest.approx(0.10)
    assert cdf_fraction_above(cdf, 0.6) == pytest.approx(0.05)  # half of the last bucket
    assert cdf_fraction_above(cdf, 5.0) == 0.0


def test_observation_keeps_the_ttft_distribution_compactly_in_ms() -> None:
    # Empty buckets below, between and above drop out; the bound before each rise stays.
    cdf = sparse_cdf((0.1, 0.2, 0.4, 0.8, 1.6), (0, 0, 50, 50, 90, 100), 1000.0)
    assert cdf == ((200.0, 0.0), (400.0, 0.5), (800.0, 0.5), (1600.0, 0.9))
    assert cdf_fraction_above(cdf, 300.0) == pytest.approx(0.75)
    assert cdf_fraction_above(cdf, 600.0) == pytest.approx(0.5)
    assert cdf_fraction_above(cdf, 2000.0) == pytest.approx(0.1)  # the +Inf bucket
    assert cdf_fraction_above(None, 300.0) is None
    assert sparse_cdf((0.1,), (0, 0)) is None
    obs = build_observation(
        WindowStats(
            t_s=60.0,
            window_s=60.0,
            requests=100.0,
            ttft_s=_h((10, 30, 90, 100, 100), 25.0),
            itl_s=None,
            duration_s=None,
            isl_tokens=None,
            osl_tokens=None,
        )
    )
    assert cdf_fraction_above(obs.ttft_cdf_ms, 400.0) == pytest.approx(0.10)
    json.dumps(obs.to_dict(), allow_nan=False)  # finite: fits a decision record


def test_missing_statistics_are_named_not_zeroed() -> None:
    stats = WindowStats(
        60.0,
        60.0,
        requests=50.0,
        ttft_s=None,
        itl_s=None,
        duration_s=None,
        isl_tokens=None,
        osl_tokens=None,
        errors=("prometheus: connection refused",),
    )
    obs = build_observation(stats)
    assert obs.ttft_mean_ms is None
    assert set(obs.missing) == {"isl", "osl", "ttft", "itl", "request_duration"}
    assert obs.errors == ("prometheus: connection refused",)
    unknown = build_observation(WindowStats(60.0, 60.0, None, None, None, None, None, None))
    assert unknown.missing == ("num_req",) and not unknown.idle


def test_an_idle_window_is_not_missing_data() -> None:
    empty = _h((0, 0, 0, 0, 0), 0.0)
    obs = build_observation(WindowStats(60.0, 60.0, 0.0, empty, empty, empty, empty, empty))
    assert obs.idle and obs.missing == ()
    assert obs.ttft_mean_ms is None


def test_decision_record_is_one_json_line_with_nan_as_null() -> None:
    stats = WindowStats(60.0, 60.0, 10.0, None, None, None, None, None)
    state = ReplicaState(RoleState(1, 1), RoleState(2, 1, starting=1, startup_s=(30.0,)))
    rec = DecisionRecord(
        t_s=60.0,
        policy="dynamo",
        observation=build_observation(stats),
        decision=Decision(
            prefill=2, decode=2, rule="scale", reason="r", prediction={"num_req": math.nan}
        ),
        current=state,
        applied=True,
    )
    line = rec.to_json()
    assert "\n" not in line
    back = json.loads(line)
    assert back["prediction"]["num_req"] is None
    assert back["target"] == {"prefill": 2, "decode": 2}
    assert back["current"]["decode"]["startup_s"] == [30.0]
    assert back["applied"] is True
