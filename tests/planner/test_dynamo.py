"""The `dynamo` policy (Dynamo 1.6.1's throughput SLA planner) against hand-computed numbers:
the non-negative fit, the batch searches, the change cap, startup reductions, the budget fit,
engines vs GPUs, requests_started vs requests_total, and Dynamo's own e2e expectation."""

from __future__ import annotations

import numpy as np
import pytest
from policy_helpers import make_cfg, make_obs, make_state

from planner.errors import ConfigError
from planner.observation import Observation
from planner.policies import dynamo_sizing as S
from planner.policies import make_policy
from planner.profile import PerfProfile
from planner.types import ReplicaState, RoleState


def linear_profile() -> PerfProfile:
    """Prefill TTFT = 10 ms + 0.01 ms/token. Decode ITL = 4 ms + 0.05 ms x batch + 0.0001 ms
    x KV tokens, at the batch Dynamo derives: round(kv x 100,000 / context), half to even."""
    kv = np.array([0.1, 0.5, 0.9] * 2)
    # context 1000: batch 10, 50, 90; context 4000: 2.5 -> 2, 12.5 -> 12, 22.5 -> 22
    batch = np.array([10, 50, 90, 2, 12, 22])
    return PerfProfile.from_arrays(
        {
            "prefill_isl": np.array([1000.0, 2000.0, 4000.0]),
            "prefill_ttft": np.array([20.0, 30.0, 50.0]),
            "prefill_thpt_per_gpu": np.array([1.0, 1.0, 1.0]),  # not read by dynamo
            "x_kv_usage": kv,
            "y_context_length": np.array([1000.0] * 3 + [4000.0] * 3),
            "z_itl": 4 + 0.05 * batch + 0.0001 * kv * 100000,
            "z_thpt_per_gpu": np.full(6, 1.0),
            "max_kv_tokens": np.array([100000]),
        },
        source="linear",
    )


def cfg(**kw):
    base = dict(ttft_ms=50.0, itl_ms=15.0)
    base.update(kw)
    return make_cfg("dynamo", **base)


def obs(num_req, started=None, **kw) -> Observation:
    o = make_obs(num_req, **kw)
    return Observation(**{**o.to_dict(), "num_req_started": started})


# -- the fit --------------------------------------------------------------------------------


def test_fit_recovers_a_linear_profile() -> None:
    prof = linear_profile()
    p = S.fit_prefill(prof)
    assert p.intercept_s == pytest.approx(0.010) and p.slopes_s[0] == pytest.approx(1e-5)
    d = S.fit_decode(prof)
    assert d.intercept_s == pytest.approx(0.004)
    assert d.slopes_s == pytest.approx((0.05e-3, 0.0001e-3))


def test_fit_keeps_slopes_non_negative() -> None:
    # y = 3, 2, 1 falls with x: the unconstrained slope is -1; the fit is the mean, slope 0.
    f = S.fit_nonnegative(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0]), ("x",))
    assert (f.intercept_s, f.slopes_s) == (pytest.approx(2.0), (0.0,))
    # y = 2 x2 - 0.5 x1 exactly; without x1: slope 8/5 = 1.6, intercept 3.75 - 1.6 x 2.5
    x = np.array([[1, 1], [2, 3], [3, 2], [4, 4]], dtype=float)
    y = 2 * x[:, 1] - 0.5 * x[:, 0]
    f = S.fit_nonnegative(x, y, ("x1", "x2"))
    assert f.slopes_s == (0.0, pytest.approx(1.6)) and f.intercept_s == pytest.approx(-0.25)


# -- the batch searches ---------------------------------------------------------------------


def test_prefill_batch_search() -> None:
    fit = S.fit_prefill(linear_profile())
    # ISL 1000: B up to min(256, 8192 // 1000) = 8; TTFT(B) = 10 + 10 B ms; rps = B / TTFT.
    c = S.prefill_capacity(fit, 1000, 0.050, 8192, 256)
    assert (c.batch, c.max_batch, c.eligible) == (4, 8, True)
    assert c.latency_s == pytest.approx(0.050) and c.rps == pytest.approx(80.0)
    # No batch meets 15 ms (B = 1 takes 20): the best rate of all, B = 8, 800 / 9 req/s.
    c = S.prefill_capacity(fit, 1000, 0.015, 8192, 256)
    assert (c.batch, c.eligible) == (8, False) and c.rps == pytest.approx(800 / 9)
    # max_num_seqs bounds the batch
    assert S.prefill_capacity(fit, 1000, 1.0, 8192, 3).batch == 3
    # ISL 10,000 > 8192: one request, chunked 8192 (91.92 ms) + 1808 (28.08 ms) = 120 ms
    c = S.prefill_capacity(fit, 10000, 1.0, 8192, 256)
    assert (c.batch, c.max_batch) == (1, 1) and c.latency_s == pytest.approx(0.120)


def test_decode_batch_search() -> None:
    fit = S.fit_decode(linear_profile())
    # context 900 + 200 // 2 = 1000; B up to min(256, 100,000 // 1000) = 100;
    # ITL(B) = 4 + 0.05 B + 0.0001 x 1000 B = 4 + 0.15 B ms <= 15 -> B = 73 (14.95 ms)
    c = S.decode_capacity(fit, 900, 200, 0.015, 100000, 256)
    assert (c.batch, c.max_batch, c.searched) == (73, 100, 100)
    assert c.rps == pytest.approx(73 / (200 * 0.01495))
    c = S.decode_capacity(fit, 900, 200, 0.015, 100000, 50)
    assert c.batch == 50 and c.rps == pytest.approx(50 / (200 * 0.0115))
    # nothing meets 4 ms: the best rate of all is at the largest batch
    c = S.decode_capacity(fit, 900, 200, 0.004, 100000, 256)
    assert (c.batch, c.eligible) == (100, False)


def test_batch_candidates_are_spread_beyond_128() -> None:
    assert S.batch_candidates(5) == [1, 2, 3, 4, 5]
    c = S.batch_candidates(256)
    assert len(c) == 128 and c[:3] == [1, 3, 5] and c[-1] == 256


# -- a tick ---------------------------------------------------------------------------------
# Demand 6000 req / 60 s = 100 req/s at ISL 900 / OSL 200. Prefill: B up to 8192 // 900 = 9,
# TTFT(B) = 10 + 9 B ms <= 50 -> B = 4, 4 / 0.046 = 86.96 req/s -> ceil(1.15) = 2.
# Decode: 73 / (200 x 0.01495) = 24.41 req/s -> ceil(4.10) = 5.


def test_sizing_one_tick() -> None:
    d = make_policy(cfg(), linear_profile()).decide(obs(6000), make_state(1, 1), 60.0)
    assert (d.prefill, d.decode, d.rule) == (2, 5, "scale")
    assert d.capacity["prefill_rps_per_engine"] == pytest.approx(4 / 0.046)
    assert any("best B = 4" in line for line in d.arithmetic)
    assert any("best B = 73" in line for line in d.arithmetic)


def test_gpus_per_engine_enter_only_the_budget() -> None:
    d = make_policy(cfg(gpus_per_prefill=2, gpus_per_decode=2), linear_profile()).decide(
        obs(6000), make_state(1, 1), 60.0
    )
    assert (d.prefill, d.decode) == (2, 5)  # the same engines, now 14 GPUs
    # Budget 10 < 14: candidates between current (1, 1) and proposed (2, 5) under 10 GPUs,
    # closest to the proposal: (1, 4) and (2, 3) are both 2 away; (2, 3) is more
    # proportional (|1 x 4 - 2 x 1| = 2 < |0 x 4 - 3 x 1| = 3).
    pol = make_policy(
        cfg(gpus_per_prefill=2, gpus_per_decode=2, max_gpu_budget=10), linear_profile()
    )
    d = pol.decide(obs(6000), make_state(1, 1), 60.0)
    assert (d.prefill, d.decode) == (2, 3)
    assert "GPU budget 10" in d.reason


def test_change_cap_per_role_per_tick() -> None:
    # 1000 req/s: 12 prefill and 41 decode wanted, at most 8 more than the ready 1.
    d = make_policy(cfg(), linear_profile()).decide(obs(60000), make_state(1, 1), 60.0)
    assert (d.prefill, d.decode) == (9, 9)
    # and down: from 20 ready, at most 8 fewer
    d = make_policy(cfg(), linear_profile()).decide(obs(6000), make_state(20, 20), 60.0)
    assert (d.prefill, d.decode) == (12, 12)
    pol = make_policy(cfg(options=(("max_throughput_scaling_replicas", 2),)), linear_profile())
    assert (pol.decide(obs(60000), make_state(1, 1), 60.0).prefill) == 3


def test_only_reductions_while_replicas_start() -> None:
    pol = make_policy(cfg(), linear_profile())
    # 1 ready + 2 starting prefill: the proposal (2, 5) is an increase for both -> unchanged
    st = ReplicaState(RoleState(3, 1, starting=2), RoleState(1, 1))
    d = pol.decide(obs(6000), st, 60.0)
    assert (d.prefill, d.decode) == (3, 1)
    # 4 ready prefill, 6 ready + 2 starting decode: 2 and 5 are reductions -> applied
    st = ReplicaState(RoleState(4, 4), RoleState(8, 6, starting=2))
    d = make_policy(cfg(), linear_profile()).decide(obs(6000), st, 60.0)
    assert (d.prefill, d.decode) == (2, 5)


def test_budget_fit_at_the_ceiling() -> None:
    # at 4 of 4 GPUs a scale-up holds unless it is an opposing rebalance
    assert S.fit_budget(2, 2, 3, 2, 1, 1, 4, 1, 1) == (2, 2, "at the GPU ceiling: hold")
    assert S.fit_budget(2, 2, 3, 1, 1, 1, 4, 1, 1)[:2] == (3, 1)
    # over the budget already (someone scaled by hand): reconciled proportionally,
    # 6 x 4/8 -> 3 prefill, decode takes the remaining 1
    assert S.fit_budget(6, 2, 6, 2, 1, 1, 4, 1, 1)[:2] == (3, 1)


def test_role_specific_min_endpoints() -> None:
    opts = (("prefill_min_endpoint", 3), ("decode_min_endpoint", 6))
    d = make_policy(cfg(options=opts), linear_profile()).decide(obs(6000), make_state(1, 1), 60.0)
    assert (d.prefill, d.decode) == (3, 6)
    with pytest.raises(ConfigError, match="max_gpu_budget"):
        make_policy(cfg(options=opts, max_gpu_budget=8), linear_profile())


def test_demand_is_requests_started_else_requests_total() -> None:
    pol = make_policy(cfg(), linear_profile())
    # 6000 admitted, 600 finished: Dynamo 1.6 plans on the admitted ones
    d = pol.decide(obs(600, started=6000), make_state(1, 1), 60.0)
    assert (d.prefill, d.decode) == (2, 5)
    assert any("requests_started_total" in line for line in d.arithmetic)
    d = make_policy(cfg(), linear_profile()).decide(obs(600), make_state(1, 1), 60.0)
    # 10 req/s: ceil(10 / 86.96) = 1, ceil(10 / 24.41) = 1
    assert (d.prefill, d.decode) == (1, 1)
    assert any("requests_total (finished" in line for line in d.arithmetic)


def test_missing_metrics_hold_and_say_so() -> None:
    pol = make_policy(cfg(), linear_profile())
    d = pol.decide(
        obs(6000, missing=("ttft",), errors=("prometheus: timeout",)), make_state(3, 2), 60.0
    )
    assert (d.prefill, d.decode, d.rule) == (3, 2, "hold-missing")
    assert "timeout" in d.reason
    d = pol.decide(obs(None), make_state(3, 2), 120.0)
    assert (d.prefill, d.decode, d.rule) == (3, 2, "hold-missing")


@pytest.mark.parametrize("num_req,expected", [(600, (1, 1)), (1200, (2, 1))])
def test_dynamo_e2e_expectation_on_the_h200_profile(h200_profile_dir, num_req, expected) -> None:
    """Dynamo's planner e2e expectation: ISL/OSL 3000/150, interval 60 s, TTFT 200 ms,
    ITL 10 ms: 10 req/s -> 1P + 1D, 20 req/s -> 2P + 1D."""
    from planlab.profiles import load_profile

    prof = load_profile(str(h200_profile_dir))
    c = cfg(ttft_ms=200.0, itl_ms=10.0)
    d = make_policy(c, prof).decide(obs(num_req, isl=3000.0, osl=150.0), make_state(1, 1), 60.0)
    assert (d.prefill, d.decode) == expected


def test_engines_not_gpus_on_the_h200_profile(h200_profile_dir) -> None:
    """5,000 req/min at 2 GPUs per engine, TTFT 500 / ITL 50 ms: 6P + 2D as Dynamo 1.6
    sizes it (the legacy planner, dividing per-GPU throughput, says 3P + 1D)."""
    from planlab.profiles import load_profile

    prof = load_profile(str(h200_profile_dir))
    kw = dict(ttft_ms=500.0, itl_ms=50.0, gpus_per_prefill=2, gpus_per_decode=2)
    o = obs(5000, isl=3000.0, osl=150.0)
    d = make_policy(cfg(**kw), prof).decide(o, make_state(1, 1), 60.0)
    assert (d.prefill, d.decode) == (6, 2)
    legacy = make_policy(make_cfg("dynamo-legacy", **kw), prof).decide(o, make_state(1, 1), 60.0)
    assert (legacy.prefill, legacy.decode) == (3, 1)
