"""oracle-sla replays a schedule: capacity asked one startup ahead of the interval that
needs it, held while an interval within reach needs it; min, max and budget applied; a
missing or malformed schedule is a ConfigError naming the key."""

from __future__ import annotations

import pytest
from policy_helpers import flat_profile, make_obs, make_state

from planner.errors import ConfigError
from planner.policies import make_policy
from planner.policies.oracle_sla import Schedule, desired_series, lead_intervals
from planner.types import PlannerConfig

SCHEDULE = {"interval_s": 30.0, "prefill": [1, 1, 4, 2, 1, 1], "decode": [1, 2, 2, 1, 1, 3]}


def cfg(**kw) -> PlannerConfig:
    base = dict(
        policy="oracle-sla",
        interval_s=30.0,
        startup_prefill_s=50.0,  # two intervals ahead
        startup_decode_s=20.0,  # one interval ahead
        options=(("schedule", SCHEDULE),),
    )
    base.update(kw)
    return PlannerConfig(**base)


def decide(c: PlannerConfig, now_s: float):
    policy = make_policy(c, flat_profile())
    return policy.decide(make_obs(10.0, t_s=now_s), make_state(1, 1), now_s)


def test_lead_is_the_startup_in_whole_intervals():
    assert lead_intervals(50.0, 30.0) == 2
    assert lead_intervals(30.0, 30.0) == 1
    assert lead_intervals(20.0, 30.0) == 1
    assert lead_intervals(0.0, 30.0) == 0


def test_asks_one_startup_ahead_and_holds_what_is_still_needed():
    c = cfg()
    # tick at 30 s (interval 1): prefill max(1, 4, 2) over intervals 1..3; decode max(2, 2)
    d = decide(c, 30.0)
    assert (d.prefill, d.decode) == (4, 2)
    # tick at 90 s (interval 3): prefill max(2, 1, 1); decode max(1, 1)
    d = decide(c, 90.0)
    assert (d.prefill, d.decode) == (2, 1)
    # tick at 120 s: decode sees interval 5's 3 one interval ahead
    d = decide(c, 120.0)
    assert (d.prefill, d.decode) == (1, 3)
    # past the end of the schedule: the minimum
    d = decide(c, 600.0)
    assert (d.prefill, d.decode) == (1, 1)
    # the series the search checks against the budget is what decide asks for
    want = desired_series(Schedule.from_dict(SCHEDULE), c)
    for k in range(1, 6):
        got = decide(c, 30.0 * k)
        assert (got.prefill, got.decode) == (want["prefill"][k - 1], want["decode"][k - 1])


def test_min_replicas_and_budget_applied():
    d = decide(cfg(min_replicas=2), 90.0)
    assert (d.prefill, d.decode) == (2, 2)
    # 4P + 2D wanted at 30 s, budget 5: Dynamo's proportional rule, never above it
    d = decide(cfg(max_gpu_budget=5), 30.0)
    assert d.prefill + d.decode <= 5 and d.prefill >= 1 and d.decode >= 1
    assert "budget" in d.reason


@pytest.mark.parametrize(
    "schedule, words",
    [
        ([1, 2], "expected a mapping"),
        ({"interval_s": 0, "prefill": [1], "decode": [1]}, "interval_s"),
        ({"interval_s": 30, "prefill": [1, -1], "decode": [1, 1]}, "prefill[1]"),
        ({"interval_s": 30, "prefill": [1, 1.5], "decode": [1, 1]}, "prefill[1]"),
        ({"interval_s": 30, "prefill": [1, 1], "decode": [1]}, "same number"),
        ({"interval_s": 30, "prefill": [1], "decode": [1], "extra": 1}, "unknown key"),
    ],
)
def test_bad_schedule_names_the_key(schedule, words):
    with pytest.raises(ConfigError) as exc:
        make_policy(cfg(options=(("schedule", schedule),)), flat_profile())
    assert "planner.options.schedule" in str(exc.value) and words in str(exc.value)


def test_no_schedule_says_how_to_get_one():
    with pytest.raises(ConfigError, match="planlab oracle"):
        make_policy(cfg(options=()), flat_profile())
