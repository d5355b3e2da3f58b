"""The GPU budget and min/max clamps every policy shares (Dynamo's rule, hand-computed)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from policy_helpers import flat_profile, make_cfg

from planner.errors import ConfigError
from planner.policies import make_policy
from planner.policies.base import apply_budget, clamp_min_max, validate_budget
from planner.types import PlannerConfig


def test_budget_examples_from_the_issue() -> None:
    # 10P + 6D on 1-GPU engines, B = 8: s = 0.5 -> P = min(floor((8-1)/1), floor(5)) = 5, D = 3.
    assert apply_budget(10, 6, PlannerConfig(max_gpu_budget=8))[:2] == (5, 3)
    # 5P + 5D on 2-GPU engines, B = 8: s = 0.4 -> P = min(floor(6/2), floor(2)) = 2, D = floor(4/2) = 2.
    cfg = PlannerConfig(max_gpu_budget=8, gpus_per_prefill=2, gpus_per_decode=2)
    assert apply_budget(5, 5, cfg)[:2] == (2, 2)


def test_budget_that_does_not_bind_changes_nothing() -> None:
    p, d, note = apply_budget(3, 4, PlannerConfig(max_gpu_budget=7))
    assert (p, d, note) == (3, 4, None)
    assert apply_budget(30, 40, PlannerConfig(max_gpu_budget=None))[:2] == (30, 40)


@pytest.mark.parametrize("p,d", [(1, 40), (40, 1), (17, 3), (3, 17), (9, 9)])
@pytest.mark.parametrize("gp,gd,budget", [(1, 1, 8), (2, 1, 9), (1, 4, 12), (4, 4, 16)])
def test_budget_is_never_exceeded_and_minimum_kept(p, d, gp, gd, budget) -> None:
    cfg = PlannerConfig(max_gpu_budget=budget, gpus_per_prefill=gp, gpus_per_decode=gd)
    np_, nd, _ = apply_budget(p, d, cfg)
    assert np_ * gp + nd * gd <= budget
    assert np_ >= 1 and nd >= 1


def test_budget_below_the_minimum_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"planner.max_gpu_budget.*below the 4 GPUs"):
        validate_budget(PlannerConfig(max_gpu_budget=3, gpus_per_prefill=2, gpus_per_decode=2))
    validate_budget(PlannerConfig(max_gpu_budget=4, gpus_per_prefill=2, gpus_per_decode=2))


def test_min_and_max_replicas() -> None:
    cfg = PlannerConfig(min_replicas=2, max_replicas=5)
    assert clamp_min_max(0, 9, cfg) == (2, 5)


@pytest.mark.parametrize(
    ("policy", "key", "bad"),
    [
        ("slaplan", "budget_window_s", 0),  # a time constant that would divide by zero
        ("slaplan", "headroom_quantile", 1.5),
        ("slaplan", "decode_z", "high"),
        ("slaplan", "arrival_cv2", -1),
        ("threshold", "prefill_target", 0),
        ("threshold", "scale_down_window_s", float("nan")),
        ("oracle", "decode_utilisation", 2),
    ],
)
def test_bad_policy_options_are_named_not_a_traceback(policy, key, bad) -> None:
    extra = {}
    if policy == "oracle":
        extra["requests"] = SimpleNamespace(arrival_s=np.zeros(1), isl=np.ones(1), osl=np.ones(1))
    with pytest.raises(ConfigError, match=rf"planner\.options\.{key}: .* expected a number"):
        make_policy(make_cfg(policy, options=((key, bad),)), flat_profile(), **extra)
