"""`slaplan`: its queueing pieces against closed forms, and its rules as behaviours."""

from __future__ import annotations

import math

import pytest
from policy_helpers import flat_profile, idle_obs, make_cfg, make_obs, make_state

from planner.policies import make_policy
from planner.policies.slaplan import _wait_tail


def policy(**kw):
    kw.setdefault("ttft_ms", 200.0)
    kw.setdefault("itl_ms", 15.0)
    kw.setdefault("correction", False)
    return make_policy(make_cfg("slaplan", **kw), flat_profile())


def test_wait_tail_is_exact_for_mm1_and_solves_lindley_for_md1() -> None:
    # M/M/1: P(W > x) = rho exp(-(mu - lambda) x); mu = 1, lambda = 0.6.
    c, g = _wait_tail(0.6, 1.0, cv2=1.0, shape=1.0)
    assert c == pytest.approx(0.6) and g == pytest.approx(0.4, rel=1e-6)
    # M/D/1 at rho 0.3: g solves exp(g) = 1 + g / 0.3 (E[exp(gS)] = 1 + g / lambda).
    _, g = _wait_tail(0.3, 1.0, cv2=0.0, shape=1.0)
    assert math.exp(g) == pytest.approx(1 + g / 0.3, rel=1e-6)
    # More regular arrivals (a round-robin share, shape 4) queue less: faster decay.
    _, g4 = _wait_tail(0.3, 1.0, cv2=0.0, shape=4.0)
    assert g4 > g
    assert _wait_tail(1.2, 1.0, 1.0, 1.0) is None  # unstable


def test_prefill_misses_fall_with_replicas_and_the_plan_meets_the_budget() -> None:
    pol = policy()
    # 1,000-token prompts at 10,000 tok/s: 0.1 s of work each; 25 req/s needs > 2.5 replicas.
    misses = [pol.prefill_miss(c, 25.0, 1000.0) for c in range(1, 8)]
    assert misses[0] == 1.0 and misses[1] == 1.0  # rho >= 1
    assert all(a >= b for a, b in zip(misses, misses[1:], strict=False))
    need = pol.prefill_needed(25.0, 1000.0)
    assert pol.prefill_miss(need, 25.0, 1000.0) <= pol.eps_ttft
    assert pol.prefill_miss(need - 1, 25.0, 1000.0) > pol.eps_ttft


def test_decode_inflight_is_the_little_fixed_point() -> None:
    pol = policy()
    # ITL = 5 + 20 kv ms, context 900 + 200/2 = 1000, 100,000 KV tokens: kv = n / 100.
    # n = rate x OSL x ITL(n) = 10 x 200 x (5 + 0.2 n) / 1000  ->  n = 10 / 0.6 = 16.67.
    assert pol.decode_inflight(10.0, 900.0, 200.0, 1) == pytest.approx(10 / 0.6, rel=1e-3)
    # Two replicas: n = 5 x 200 x ITL / 1000 = ITL; below the first measured point
    # (kv 0.1) the profile holds ITL at 7 ms, so n = 7.
    assert pol.decode_inflight(10.0, 900.0, 200.0, 2) == pytest.approx(7.0, rel=1e-3)
    # No fixed point below full KV: the replica cannot keep up.
    assert math.isinf(pol.decode_inflight(40.0, 900.0, 200.0, 1))


def test_a_steady_load_gives_a_steady_size() -> None:
    pol = policy()
    targets = set()
    for k in range(1, 12):
        d = pol.decide(
            make_obs(1500.0, isl=1000.0, osl=200.0, t_s=60.0 * k), make_state(4, 2), 60.0 * k
        )
        targets.add((d.prefill, d.decode))
    assert len(targets) == 1


def test_scale_down_waits_for_the_window_and_never_goes_below_need() -> None:
    pol = policy(options=(("scale_down_window_s", 180.0),))
    high = make_obs(2400.0, isl=1000.0, osl=200.0)
    st = make_state(1, 1)
    for t in (60.0, 120.0):
        d = pol.decide(high, st, t)
        st = make_state(d.prefill, d.decode)
    big = d.prefill
    low = make_obs(300.0, isl=1000.0, osl=200.0)
    kept = [pol.decide(low, st, t).prefill for t in (180.0, 240.0, 300.0)]
    assert kept == [big, big, big]  # the high need is still in the 180 s window
    later = pol.decide(low, st, 480.0).prefill
    assert later < big


def test_budget_is_kept_and_shared_so_no_role_starves() -> None:
    pol = policy(max_gpu_budget=6)
    d = pol.decide(make_obs(6000.0, isl=1000.0, osl=200.0), make_state(1, 1), 60.0)
    assert d.prefill + d.decode <= 6
    assert d.prefill >= 2 and d.decode >= 2
    assert "budget" in d.rule


def test_missing_metrics_hold_and_idle_decays_after_the_grace() -> None:
    pol = policy(options=(("idle_grace_s", 120.0),))
    missing = make_obs(500.0, ttft_ms=None, missing=("ttft",), errors=("prometheus: timeout",))
    d = pol.decide(missing, make_state(3, 2), 60.0)
    assert (d.prefill, d.decode, d.rule) == (3, 2, "hold-missing")
    assert "prometheus: timeout" in d.reason
    rules = [pol.decide(idle_obs(t), make_state(3, 2), t).rule for t in (120.0, 180.0, 240.0)]
    assert rules == ["idle-grace", "idle-min", "idle-min"]
    assert pol.decide(idle_obs(300.0), make_state(3, 2), 300.0).prefill == 1


def test_replicas_stuck_starting_are_replaced() -> None:
    pol = policy()
    obs = make_obs(1500.0, isl=1000.0, osl=200.0)
    plain = policy().decide(obs, make_state(4, 2), 60.0)
    stuck = pol.decide(obs, make_state(4, 2, p_ready=3, p_stuck=1), 60.0)
    assert stuck.prefill == plain.prefill + 1
    assert "stuck" in stuck.rule


def test_a_long_startup_plans_further_ahead_on_a_rising_load() -> None:
    def final(startup_s: float) -> int:
        pol = policy(predictor="holt", startup_prefill_s=startup_s, startup_decode_s=startup_s)
        st = make_state(2, 1)
        for k in range(1, 9):
            obs = make_obs(600.0 + 150.0 * k, isl=1000.0, osl=200.0, t_s=60.0 * k)
            d = pol.decide(obs, st, 60.0 * k)
            st = make_state(d.prefill, d.decode)
        return d.prefill

    assert final(600.0) > final(0.0)


def test_a_ttft_tail_worse_than_the_model_raises_capacity() -> None:
    base = policy(correction=True)
    worse = policy(correction=True)
    for k in range(1, 6):
        obs_ok = make_obs(
            1200.0, isl=1000.0, osl=200.0, t_s=60.0 * k, ttft_ms=60.0, ttft_p90_ms=None
        )
        obs_bad = make_obs(
            1200.0, isl=1000.0, osl=200.0, t_s=60.0 * k, ttft_ms=60.0, ttft_p90_ms=190.0
        )
        obs_ok = type(obs_ok)(**{**obs_ok.to_dict(), "ttft_p50_ms": 45.0, "ttft_p90_ms": 60.0})
        obs_bad = type(obs_bad)(**{**obs_bad.to_dict(), "ttft_p50_ms": 45.0})
        a = base.decide(obs_ok, make_state(3, 2), 60.0 * k)
        b = worse.decide(obs_bad, make_state(3, 2), 60.0 * k)
    assert worse.arrival_cv2 > base.arrival_cv2
    assert b.prefill > a.prefill


def test_lengths_follow_a_steady_climb_but_not_noise() -> None:
    from collections import deque

    from planner.policies.slaplan import _trend_ahead

    climb = deque([2000.0, 2300.0, 2600.0, 2900.0], maxlen=4)
    assert _trend_ahead(climb, 3) == pytest.approx(2900.0 + 300.0 * 3)
    noisy = deque([1000.0, 1015.0, 1200.0, 1100.0], maxlen=4)  # not four 2% rises
    assert _trend_ahead(noisy, 3) == 1100.0
    short = deque([1.0, 2.0], maxlen=4)
    assert _trend_ahead(short, 3) == 2.0


def _with_ttft(obs, cdf):
    return type(obs)(**{**obs.to_dict(), "ttft_cdf_ms": cdf})


def test_unspent_error_budget_buys_fewer_replicas_and_an_overspend_never_fewer() -> None:
    # 25 req/s of 1,000-token prompts, TTFT target 200 ms: 6 replicas keep the modelled
    # misses within 0.8% (5 give 1.16%); an allowance of 1.5% would take 5.
    met = ((50.0, 0.0), (100.0, 1.0))  # every request well inside 200 ms
    missed = ((100.0, 0.0), (400.0, 0.9))  # 90% spread over 100-400 ms, 10% in +Inf: 70% miss
    saver, spender = policy(), policy()
    sizes = {"met": [], "missed": []}
    for k in range(1, 11):
        t = 60.0 * k
        obs = make_obs(1500.0, isl=1000.0, osl=200.0, t_s=t)
        sizes["met"].append(saver.decide(_with_ttft(obs, met), make_state(6, 2), t).prefill)
        sizes["missed"].append(spender.decide(_with_ttft(obs, missed), make_state(6, 2), t).prefill)
    # Ten windows met the target with room: 0.8% of their 15,000 requests (13,900 after
    # an hour's decay) unspent, spread over the next 600 s (15,000 requests): the
    # allowance about doubles and one replica goes.
    assert saver.budget_misses == 0.0
    assert saver.budget_requests == pytest.approx(
        1500.0 * sum(math.exp(-k / 60) for k in range(10))
    )
    assert saver.budget_allowance(25.0, 1000.0) == pytest.approx(2 * saver.eps_ttft, rel=0.05)
    assert sizes["met"][0] == 6 and sizes["met"][-1] == 5
    # Windows that overspent it do not push the plan above what the target alone needs.
    # Inside the 100-400 ms bucket the misses split as the model's TTFT tail falls: more
    # than the 10% past 400 ms, less than the 70% a straight line through the bucket says.
    assert 0.1 < spender.budget_misses / spender.budget_requests < 0.7
    assert spender.budget_allowance(25.0, 1000.0) == spender.eps_ttft
    assert sizes["missed"] == [6] * 10
    obs = _with_ttft(make_obs(1500.0, isl=1000.0, osl=200.0, t_s=660.0), met)
    d = saver.decide(obs, make_state(5, 2), 660.0)
    assert any("TTFT error budget" in line for line in d.arithmetic)


class _StubForecast:
    """A predictor with a fixed point forecast and normal error of a given sd."""

    def __init__(self, point: float, sd: float):
        self.point, self.sd = point, sd

    def predict(self, steps: int = 1) -> float:
        return self.point

    def upper(self, q: float, steps: int = 1) -> float:
        from statistics import NormalDist

        return self.point + NormalDist().inv_cdf(q) * self.sd


def test_headroom_is_the_rate_uncertainty_beyond_poisson_count_noise() -> None:
    pol = policy()
    z = 1.2815515655446004  # the 0.9 quantile
    # An error no larger than Poisson noise around 1,000 requests (sd sqrt(1000)): the
    # rate itself is known, and the queueing model has the Poisson arrivals already.
    pol.num_req_pred = _StubForecast(1000.0, math.sqrt(1000.0))
    assert pol._rate_ahead(1, 60.0, [], "prefill") == pytest.approx(1000.0 / 60.0)
    # sd 50: variance 2,500 of which 1,000 is count noise -> headroom z sqrt(1,500).
    pol.num_req_pred = _StubForecast(1000.0, 50.0)
    lines: list[str] = []
    rate = pol._rate_ahead(1, 60.0, lines, "prefill")
    assert rate == pytest.approx((1000.0 + z * math.sqrt(1500.0)) / 60.0)
    assert "headroom 49.6" in lines[0]
