"""The simulated frontend metrics, the scrape store and Prometheus' increase() semantics."""

from __future__ import annotations

import math
import re
import shutil
import subprocess

import numpy as np
import pytest
import yaml

from planner import metrics as M
from planner.observation import build_observation, histogram_quantile
from sim.prometheus import (
    FrontendMetrics,
    ScrapeStore,
    SimMetricsSource,
    prom_increase,
)

# --- prom_increase against hand-computed values ------------------------------------------


def test_linear_counter_on_aligned_window_is_exact():
    t = np.arange(0, 65, 5.0)
    # 13 samples cover [0, 60] exactly: no extrapolation, the plain difference 2 * 60.
    assert prom_increase(t, 2 * t, 60, 60) == pytest.approx(120.0)


def test_counter_reset_adds_the_value_before_the_drop():
    t = [0, 10, 20, 30, 40]
    v = [10, 20, 30, 5, 15]
    # (15 - 10) + 30 lost at the reset = 35; the samples sit on both edges.
    assert prom_increase(t, v, 40, 40) == pytest.approx(35.0)


def test_extrapolates_to_both_edges_when_close():
    # Range [5, 35]: gaps of 5 s < 1.1 * 10 s on both sides; zero point 100 s away.
    assert prom_increase([10, 20, 30], [100, 110, 120], 35, 30) == pytest.approx(20 * 30 / 20)


def test_extrapolates_half_an_interval_when_far():
    # Range [-30, 45]: the first sample is 40 s from the start (> 11 s), so only 5 s is
    # added there; 5 s to the end is added in full: 30 * (30 + 5 + 5) / 30.
    assert prom_increase([10, 20, 30, 40], [100, 110, 120, 130], 45, 75) == pytest.approx(40.0)


def test_counter_not_extrapolated_below_zero():
    # Range [0, 30]; the start gap is 10 s (< 11 s) but the line hits zero 1 s before the
    # first sample, so only 1 s is added: 20 * (20 + 1) / 20 = 21, the counter's own value.
    assert prom_increase([10, 20, 30], [1, 11, 21], 30, 30) == pytest.approx(21.0)


def test_too_few_samples_is_none():
    assert prom_increase([], [], 10, 60) is None
    assert prom_increase([5.0], [3.0], 10, 60) is None
    # Two samples exist, but only one is inside [40, 100].
    assert prom_increase([0.0, 50.0], [0.0, 5.0], 100, 60) is None


def test_flavor_3_range_is_left_open():
    # A sample exactly at t - w is inside the 2.x range, outside the 3.x one.
    assert prom_increase([0, 10], [0, 10], 10, 10) == pytest.approx(10.0)
    assert prom_increase([0, 10], [0, 10], 10, 10, flavor="3") is None


def test_flavor_order_of_zero_rule_and_threshold():
    # Samples 8, 18, 28 at 20, 30, 40 s; range [0, 40]: start gap 20 s >= 11 s; zero point
    # 8 s before the first sample. 2.42 cuts to the zero point first (8 s < 11 s: used):
    # 20 * 28 / 20 = 28. 3.x takes half an interval first (5 s), then min(5, 8): 25.
    t, v = [20, 30, 40], [8, 18, 28]
    assert prom_increase(t, v, 40, 40) == pytest.approx(28.0)
    assert prom_increase(t, v, 40, 40, flavor="3") == pytest.approx(25.0)


def test_bad_input_rejected():
    with pytest.raises(ValueError):
        prom_increase([0, 0], [1, 2], 10, 10)
    with pytest.raises(ValueError):
        prom_increase([0, 1], [1, 2], 10, 10, flavor="2.0")


def _promtool_doc(values: str, cases: list[tuple[int, int]]) -> dict:
    """A promtool rule-test file asking increase(x[w]) at t for each case, on a 5 s series."""
    doc = {
        "rule_files": [],
        # promtool appends the input samples as its clock advances by this step.
        "evaluation_interval": "1s",
        "tests": [
            {
                "interval": "5s",
                "input_series": [{"series": "x", "values": values}],
                "promql_expr_test": [
                    {
                        "expr": f"increase(x[{w}s])",
                        "eval_time": f"{t}s",
                        "exp_samples": [{"labels": "{}", "value": -12345}],
                    }
                    for w, t in cases
                ],
            }
        ],
    }
    return doc


def test_matches_real_promtool(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Prometheus) is not on PATH")
    version = subprocess.run([promtool, "--version"], capture_output=True, text=True).stdout
    if "version 2." not in version or re.search(r"version 2\.(5[1-9])", version):
        pytest.skip(f"the default flavor models Prometheus <= 2.50; found {version.split()[:3]}")
    rng = np.random.default_rng(3)
    n = 30
    v = np.cumsum(rng.integers(0, 20, n)).astype(float) + 7
    for r in (9, 21):  # two counter resets
        v[r:] -= v[r] - 2
    present = rng.random(n) > 0.25  # missed scrapes
    values = " ".join(str(int(x)) if p else "_" for x, p in zip(v, present, strict=True))
    cases = [(int(rng.integers(3, 80)), int(rng.integers(0, 160))) for _ in range(40)]
    cases += [(60, 60), (12, 47), (40, 40), (100, 50)]
    path = tmp_path / "t.yml"
    path.write_text(yaml.safe_dump(_promtool_doc(values, cases)))
    out = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    got = re.findall(r"got: (.*)", out.stdout + out.stderr)
    assert len(got) == len(cases), out.stdout + out.stderr
    times = np.arange(n) * 5.0
    for (w, t), g in zip(cases, got, strict=True):
        ref = None if g.strip() == "nil" else float(g.split()[1])
        mine = prom_increase(times[present], v[present], t, w)
        if ref is None:
            assert mine is None, (w, t)
        else:
            assert mine == pytest.approx(ref, rel=1e-9), (w, t)


# --- the scrape model ----------------------------------------------------------------------


def _run_counter(rate_per_s: float, end_s: float, scrape_s: float = 5.0) -> ScrapeStore:
    """Requests at k / rate (deterministic), scraped every scrape_s seconds."""
    metrics, store = FrontendMetrics(), ScrapeStore(capacity=4)
    events = np.arange(1, int(end_s * rate_per_s) + 1) / rate_per_s
    i = 0
    for t in np.arange(0, end_s + scrape_s / 2, scrape_s):
        while i < len(events) and events[i] <= t:
            metrics.inc_requests("success" if i % 7 else "error")
            i += 1
        store.scrape(t, metrics)
    return store


@pytest.mark.parametrize("window_s", [30, 60, 180, 300])
@pytest.mark.parametrize("t_s", [600, 1200, 1795])
def test_counter_rate_through_scrapes_within_one_percent(window_s, t_s):
    rate = 3.7
    source = SimMetricsSource(_run_counter(rate, 1800))
    stats = source.window(t_s, window_s)
    # Both statuses count: one request in seven is an error.
    assert stats.requests / window_s == pytest.approx(rate, rel=0.01)
    assert build_observation(stats).request_rate == pytest.approx(rate, rel=0.01)


def test_store_grows_and_keeps_every_sample():
    store = _run_counter(2.0, 500)  # 101 scrapes from a capacity of 4
    times, values = store.series(f"{M.REQUESTS_TOTAL}{{status=success}}")
    assert len(store) == 101
    assert times[-1] == 500.0
    # 1000 requests, every seventh (i = 0, 7, ...) an error: 143 errors, 857 successes.
    assert values[-1] == 857
    _, errors = store.series(f"{M.REQUESTS_TOTAL}{{status=error}}")
    assert errors[-1] == 143


def test_itl_histogram_p90_matches_histogram_quantile_and_truth():
    rng = np.random.default_rng(11)
    metrics, store = FrontendMetrics(), ScrapeStore()
    in_window: list[tuple[float, int]] = []
    bounds = M.BUCKETS[M.ITL]
    for t in range(0, 305, 5):
        if t > 0:
            # One decode step per 10 ms of virtual time: one ITL value for a batch of tokens.
            for _ in range(50):
                itl = float(rng.lognormal(math.log(0.02), 0.4))
                batch = int(rng.integers(1, 64))
                metrics.observe_itl(itl, batch)
                if t > 240:
                    in_window.append((itl, batch))
        store.scrape(t, metrics)
    stats = SimMetricsSource(store).window(300, 60)
    values = np.repeat([x for x, _ in in_window], [n for _, n in in_window])

    # The bucket increases equal an independent count of the window's values (le inclusive).
    expected_cum = [float(np.sum(values <= b)) for b in bounds] + [float(len(values))]
    assert stats.itl_s.cumulative == pytest.approx(expected_cum)
    assert stats.itl_s.count == len(values)
    assert stats.itl_s.sum == pytest.approx(values.sum())

    obs = build_observation(stats)
    p90 = histogram_quantile(0.9, bounds, tuple(expected_cum))
    assert obs.itl_p90_ms == pytest.approx(p90 * 1000)
    assert obs.itl_mean_ms == pytest.approx(values.mean() * 1000)
    true_p90 = float(np.quantile(values, 0.9))
    k = int(np.searchsorted(bounds, true_p90))
    width = bounds[k] - bounds[k - 1]
    assert abs(obs.itl_p90_ms / 1000 - true_p90) <= width


def test_value_on_a_bound_counts_in_that_bucket():
    metrics, store = FrontendMetrics(), ScrapeStore()
    bound = M.BUCKETS[M.TTFT][10]
    store.scrape(0, metrics)
    metrics.observe_ttft(bound)
    store.scrape(5, metrics)
    h = SimMetricsSource(store).window(5, 5).ttft_s
    assert h.cumulative[9] == 0
    assert h.cumulative[10] == 1


def test_observe_itl_count_equals_repeated_calls():
    a, b = FrontendMetrics(), FrontendMetrics()
    a.observe_itl(0.0123, 32)
    for _ in range(32):
        b.observe_itl(0.0123)
    ha, hb = a.histograms[M.ITL], b.histograms[M.ITL]
    assert ha.counts == hb.counts and ha.count == hb.count == 32
    assert ha.sum == pytest.approx(hb.sum)


def test_frontend_restart_is_a_counter_reset():
    metrics, store = FrontendMetrics(), ScrapeStore()
    for t in range(0, 61):
        if t > 0:
            metrics.inc_requests()
            metrics.observe_isl(1000)
        if t == 32:
            metrics.reset()  # the requests at 31 and 32 were never scraped
        if t % 5 == 0:
            store.scrape(t, metrics)
    stats = SimMetricsSource(store).window(60, 60)
    # Scrapes read 0, 5, ..., 30, then 3, 8, ..., 28: 28 - 0 + 30 = 58 of the 60 requests.
    assert stats.requests == pytest.approx(58.0)
    assert stats.isl_tokens.count == pytest.approx(58.0)
    assert build_observation(stats).isl_mean == pytest.approx(1000.0)


def test_missing_data_is_none_with_a_reason():
    metrics, store = FrontendMetrics(), ScrapeStore()
    source = SimMetricsSource(store)
    empty = source.window(60, 60)
    assert empty.requests is None and empty.ttft_s is None and empty.inflight is None
    assert empty.errors and "0 scrape" in empty.errors[0]
    metrics.set_inflight(7)
    metrics.set_queued(2)
    store.scrape(10, metrics)
    one = source.window(12, 60)
    assert one.requests is None and one.itl_s is None and one.errors
    # Gauges are the last sample at or before t, until Prometheus' 5-minute lookback.
    assert (one.inflight, one.queued) == (7, 2)
    assert source.window(9, 60).inflight is None
    assert source.window(311, 60).inflight is None
    obs = build_observation(one)
    assert obs.num_req is None and "num_req" in obs.missing


def test_unknown_status_rejected():
    with pytest.raises(ValueError, match="status"):
        FrontendMetrics().inc_requests("ok")
