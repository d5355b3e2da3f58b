"""slaplan plans for the state when capacity asked now is ready: the backlog then (a fluid
queue drained by the replicas already there), the demand then; what serves until then is
kept, never bought."""

from __future__ import annotations

import dataclasses

from policy_helpers import flat_profile, make_cfg, make_obs, make_state

from planner.policies import make_policy


class _Forecast:
    """A predictor whose point forecast k intervals ahead is values[k - 1] (last repeated),
    with no error band."""

    def __init__(self, *values: float):
        self.values = values

    def observe(self, value) -> None:
        pass

    def predict(self, steps: int = 1) -> float:
        return self.values[min(steps, len(self.values)) - 1]

    def upper(self, q: float, steps: int = 1) -> float:
        return self.predict(steps)


def policy(*forecast: float):
    # flat profile at ISL 1000: 0.1 s of prefill per request, 10 req/s per replica;
    # interval 60 s and 120 s cold starts: capacity asked now serves from interval 3
    pol = make_policy(
        make_cfg(
            "slaplan",
            ttft_ms=200.0,
            itl_ms=15.0,
            correction=False,
            startup_prefill_s=120.0,
            startup_decode_s=120.0,
        ),
        flat_profile(),
    )
    pol.num_req_pred = _Forecast(*forecast)
    return pol


def obs(queued: float, num_req: float = 300.0):
    return dataclasses.replace(make_obs(num_req, isl=1000.0, osl=200.0), queued=queued)


def test_backlog_then_is_the_fluid_queue_the_replicas_there_leave() -> None:
    pol = policy(300.0)
    # 2 ready replicas serve 1,200 per interval against 300 arriving: 2,000 queued now
    # -> 1,100 after one interval -> 200 when the new capacity is ready
    got = pol._backlog_then(
        "prefill", make_state(2, 1).prefill, 120.0, 3, obs(2000.0), 1000, 200, []
    )
    assert got == 200.0
    # 1 replica: 2,000 + 2 x (300 - 600) = 1,400
    got = pol._backlog_then(
        "prefill", make_state(1, 1).prefill, 120.0, 3, obs(2000.0), 1000, 200, []
    )
    assert got == 1400.0
    # a replica still starting counts from the next interval: 2,000 + 300 - 600 + 300 - 1,200
    st = make_state(2, 1, p_ready=1).prefill
    assert pol._backlog_then("prefill", st, 120.0, 3, obs(2000.0), 1000, 200, []) == 800.0


def test_a_queue_the_replicas_there_drain_in_time_buys_nothing() -> None:
    pol = policy(300.0)
    d = pol.decide(obs(1000.0), make_state(2, 1), 60.0)
    # planned for 5 req/s, not 5 + 1,000 / 60 as if the queue had to be drained by
    # capacity that cannot arrive before it is gone
    assert d.prefill <= 2
    assert pol.prefill_needed(5.0 + 1000.0 / 60.0, 1000.0) > 2
    assert any("0 left when new capacity is ready" in line for line in d.arithmetic)


def test_a_queue_that_outlasts_the_cold_start_is_bought() -> None:
    pol = policy(300.0)
    d = pol.decide(obs(5000.0), make_state(1, 1), 60.0)
    assert any("4400 left when new capacity is ready" in line for line in d.arithmetic)
    assert d.prefill > 1


def test_demand_before_capacity_can_arrive_keeps_replicas_but_buys_none() -> None:
    # falling: 1,200 next interval, 900, then 300 from when new capacity would be ready
    pol = policy(1200.0, 900.0, 300.0)
    d = pol.decide(obs(0.0, num_req=1200.0), make_state(4, 1), 60.0)
    need_now = pol.prefill_needed(20.0, 1000.0)
    assert need_now >= 3 and pol.prefill_needed(5.0, 1000.0) < need_now
    assert d.prefill == min(4, need_now)
    # on 2 replicas the same forecast buys nothing for the next two intervals
    pol = policy(1200.0, 900.0, 300.0)
    d = pol.decide(obs(0.0, num_req=1200.0), make_state(2, 1), 60.0)
    assert d.prefill <= 2
