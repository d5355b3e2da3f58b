"""The `dynamo-legacy` policy (Dynamo's original SLA deployment guide) against hand-computed numbers on a synthetic profile, and Dynamo's
own e2e expectation on the shared H200 profile."""

from __future__ import annotations

import math

import numpy as np
import pytest
from policy_helpers import flat_profile as synthetic_profile
from policy_helpers import make_cfg, make_obs, make_state

from planner.observation import Observation
from planner.policies import make_policy
from planner.profile import PerfProfile


@pytest.fixture
def flat_profile() -> PerfProfile:
    return synthetic_profile()


def obs(num_req, **kw):
    return make_obs(num_req, **kw)


def state(p=1, d=1):
    return make_state(p, d)


def cfg(**kw):
    return make_cfg("dynamo-legacy", **kw)


def test_sizing_without_correction(flat_profile) -> None:
    d = make_policy(cfg(), flat_profile).decide(obs(3100), state(), 60.0)
    # prefill: 3100 * 900 / 60 = 46,500 tok/s over 10,000 -> ceil(4.65) = 5
    # decode: best at ITL 15 ms, context 900 + 200/2 = 1000 is kv 0.5 -> 50 seqs at 15 ms
    #   = 3,333 tok/s; 3100 * 200 / 60 = 10,333 tok/s -> ceil(3.1) = 4
    assert (d.prefill, d.decode) == (5, 4)
    assert d.rule == "scale"
    assert d.demand["prefill_tokens_per_s"] == pytest.approx(46500)
    assert d.capacity["decode_tokens_per_s_per_replica"] == pytest.approx(50 / 0.015, rel=1e-3)


def test_prefill_correction_only_lowers(flat_profile) -> None:
    # Expected TTFT at ISL 900 = 18 ms (20 ms per 1000 tokens). Observed 10 ms:
    # p_corr = 0.556 -> ceil(46,500 * 0.556 / 10,000) = ceil(2.58) = 3.
    d = make_policy(cfg(correction=True), flat_profile).decide(
        obs(3100, ttft_ms=10.0), state(1, 4), 60.0
    )
    assert d.prefill == 3
    assert d.capacity["p_corr"] == pytest.approx(10 / 18)
    # Observed 40 ms: p_corr = 2.2 is used as min(1, 2.2) = 1 -> 5 as without correction.
    d = make_policy(cfg(correction=True), flat_profile).decide(
        obs(3100, ttft_ms=40.0), state(1, 4), 60.0
    )
    assert d.prefill == 5


def test_decode_correction_tightens_the_itl_target(flat_profile) -> None:
    # 2 decode workers, 3100 requests of 3 s in 60 s: concurrency 3100/2*3/60 = 77.5 per
    # worker at context 1000 -> kv 0.775 -> expected ITL 5 + 20*0.775 = 20.5 ms.
    # Observed 30 ms: d_corr = 1.463, ITL target 15/1.463 = 10.25 ms -> kv 0.2625 -> 26.25
    # seqs at 10.25 ms = 2,561 tok/s -> ceil(10,333 / 2,561) = 5.
    d = make_policy(cfg(correction=True), flat_profile).decide(
        obs(3100, ttft_ms=18.0, itl_ms=30.0), state(1, 2), 60.0
    )
    assert d.capacity["d_corr"] == pytest.approx(30 / 20.5)
    assert d.decode == 5
    assert d.expected_itl_ms == pytest.approx(10.25, abs=0.06)


def test_budget_scales_both_roles(flat_profile) -> None:
    # 6,200 requests: 10 prefill (93,000 tok/s) and 7 decode (20,667 / 3,333 = 6.2).
    # Budget 8: s = 8/17; P = max(1, min(floor(7/1), floor(10 * 8/17))) = 4; D = 8 - 4 = 4.
    d = make_policy(cfg(max_gpu_budget=8), flat_profile).decide(obs(6200), state(), 60.0)
    assert (d.prefill, d.decode) == (4, 4)
    assert "GPU budget 8" in d.reason


def test_idle_goes_to_minimum_and_keeps_last_lengths(flat_profile) -> None:
    pol = make_policy(cfg(min_replicas=2), flat_profile)
    pol.decide(obs(3100), state(5, 4), 60.0)
    d = pol.decide(
        obs(0.0, isl=None, osl=None, ttft_ms=None, itl_ms=None, duration_s=None), state(5, 4), 120.0
    )
    assert (d.prefill, d.decode, d.rule) == (2, 2, "idle")
    assert d.prediction["isl"] == pytest.approx(900.0)
    assert d.prediction["osl"] == pytest.approx(200.0)


def test_missing_metrics_hold_current_size_and_say_so(flat_profile) -> None:
    pol = make_policy(cfg(), flat_profile)
    missing = Observation(
        **{
            **obs(500).to_dict(),
            "ttft_mean_ms": None,
            "missing": ("ttft",),
            "errors": ("prometheus: connection refused",),
        }
    )
    d = pol.decide(missing, state(3, 2), 120.0)
    assert (d.prefill, d.decode, d.rule) == (3, 2, "hold-missing")
    assert "ttft" in d.reason and "connection refused" in d.reason
    unknown = Observation(**{**obs(None).to_dict(), "missing": ("num_req",)})
    d = pol.decide(unknown, state(3, 2), 180.0)
    assert (d.prefill, d.decode, d.rule) == (3, 2, "hold-missing")


@pytest.mark.parametrize("num_req,expected", [(600, (1, 1)), (1200, (2, 1))])
def test_dynamo_e2e_expectation_on_the_h200_profile(h200_profile_dir, num_req, expected) -> None:
    """Dynamo's planner e2e test: ISL/OSL 3000/150, interval 60 s, TTFT 200 ms, ITL 10 ms,
    no correction: 10 req/s -> 1P + 1D, 20 req/s -> 2P + 1D."""
    arrays = {}
    for name in ("prefill_raw_data.npz", "decode_raw_data.npz"):
        with np.load(h200_profile_dir / name) as z:
            arrays.update({k: z[k] for k in z.files})
    prof = PerfProfile.from_arrays(arrays, source=str(h200_profile_dir))
    c = cfg(itl_ms=10.0)
    d = make_policy(c, prof).decide(obs(num_req, isl=3000.0, osl=150.0), state(), 60.0)
    assert (d.prefill, d.decode) == expected
    # and the arithmetic it prints is the formula with these numbers
    tps = num_req * 3000 / 60
    assert math.ceil(tps / prof.prefill_thpt_per_gpu_at(3000.0)) == expected[0]
    assert any(f"{tps:.0f}" in line for line in d.arithmetic)
