"""Shared test helpers: a synthetic profile with hand-computable numbers and observations."""

from __future__ import annotations

import numpy as np

from planner.observation import Observation
from planner.profile import PerfProfile
from planner.types import PlannerConfig, ReplicaState, RoleState


def flat_profile() -> PerfProfile:
    """Prefill: 10,000 tok/s/GPU at every ISL, TTFT 20 ms per 1000 tokens.
    Decode: ITL = 5 + 20 * kv_usage ms at contexts 1000 and 4000; 100,000 KV tokens."""
    kv = np.array([0.1, 0.5, 0.9] * 2)
    return PerfProfile.from_arrays(
        {
            "prefill_isl": np.array([1000.0, 2000.0, 4000.0]),
            "prefill_ttft": np.array([20.0, 40.0, 80.0]),
            "prefill_thpt_per_gpu": np.array([10000.0, 10000.0, 10000.0]),
            "x_kv_usage": kv,
            "y_context_length": np.array([1000.0] * 3 + [4000.0] * 3),
            "z_itl": 5 + 20 * kv,
            "z_thpt_per_gpu": np.full(6, 1e9),
            "max_kv_tokens": np.array([100000]),
        },
        source="synthetic",
    )


def make_obs(
    num_req,
    isl=900.0,
    osl=200.0,
    ttft_ms=18.0,
    itl_ms=15.0,
    duration_s=3.0,
    interval=60.0,
    t_s=60.0,
    ttft_p90_ms=None,
    missing=(),
    errors=(),
) -> Observation:
    return Observation(
        t_s=t_s,
        interval_s=interval,
        num_req=num_req,
        request_rate=None if num_req is None else num_req / interval,
        isl_mean=isl,
        osl_mean=osl,
        ttft_mean_ms=ttft_ms,
        ttft_p50_ms=None,
        ttft_p90_ms=ttft_p90_ms,
        ttft_p99_ms=None,
        itl_mean_ms=itl_ms,
        itl_p50_ms=None,
        itl_p90_ms=None,
        itl_p99_ms=None,
        request_duration_mean_s=duration_s,
        missing=tuple(missing),
        errors=tuple(errors),
    )


def idle_obs(t_s: float, interval: float = 60.0) -> Observation:
    return make_obs(
        0.0,
        isl=None,
        osl=None,
        ttft_ms=None,
        itl_ms=None,
        duration_s=None,
        interval=interval,
        t_s=t_s,
    )


def make_state(p=1, d=1, p_ready=None, d_ready=None, p_stuck=0, d_stuck=0) -> ReplicaState:
    pr = p if p_ready is None else p_ready
    dr = d if d_ready is None else d_ready
    return ReplicaState(
        RoleState(p, pr, starting=p - pr, stuck=p_stuck),
        RoleState(d, dr, starting=d - dr, stuck=d_stuck),
    )


def make_cfg(policy: str, **kw) -> PlannerConfig:
    base = dict(
        policy=policy,
        interval_s=60.0,
        ttft_ms=200.0,
        itl_ms=15.0,
        predictor="constant",
        correction=False,
    )
    base.update(kw)
    return PlannerConfig(**base)
