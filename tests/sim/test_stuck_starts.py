"""Capacity that never arrives: starts that hang are reported as stuck after the startup
timeout, hold their GPUs, never serve, and slaplan asks for replacements."""

from __future__ import annotations

from _simkit import scenario, synthetic_profile

from scenario import RoleSpec
from sim.simulate import simulate

PROFILE = dict(prefill_ms=(20.0, 0.05), itl_ms=10.0)


def _run(stuck_probability: float):
    sc = scenario(
        duration_s=1500.0,
        rate=((0.0, 5.0), (300.0, 60.0)),
        isl=2000,
        osl=50,
        prefill=RoleSpec(
            replicas=1, startup_s=60.0, stuck_probability=stuck_probability, startup_timeout_s=150.0
        ),
        decode=RoleSpec(replicas=2, startup_s=60.0),
        policy="slaplan",
        predictor="constant",
        interval_s=60.0,
        seed=3,
    )
    return simulate(sc, synthetic_profile(**PROFILE))


def test_stuck_starts_are_reported_replaced_and_never_serve():
    res = _run(0.5)
    stuck_workers = [
        w
        for w in res.workers
        if w["role"] == "prefill" and w["t_ready"] is None and w["t_requested"] < 1500.0 - 150.0
    ]
    assert stuck_workers, "with p = 0.5 some starts should hang"
    # Reported as stuck only once they have been starting for longer than the timeout.
    first = min(w["t_requested"] for w in stuck_workers)
    reported = [r for r in res.records if r.current.prefill.stuck > 0]
    assert reported and min(r.t_s for r in reported) > first + 150.0
    # slaplan asks for a replacement on top of what it needs, and says so.
    assert all("stuck" in r.decision.rule for r in reported if r.decision.rule.startswith("scale"))
    # The replacements arrive: ready prefill workers reach the plan despite the hung starts.
    late = [r for r in res.records if r.t_s > 1200.0]
    assert max(r.current.prefill.ready for r in late) >= 3
    # A hung start never serves a request, and it is paid for as startup time.
    served = set(res.requests["prefill_worker"].tolist())
    assert not any(w["wid"] in served for w in stuck_workers)
    assert res.gpu_seconds["prefill"]["startup"] > 150.0 * len(stuck_workers)
    c = res.counts
    assert c["arrived"] == c["completed"] + c["failed"] + c["in_flight"]


def test_without_hangs_nothing_is_stuck():
    res = _run(0.0)
    assert all(r.current.prefill.stuck == 0 for r in res.records)
    # every start that had its 60 s before the end became ready (or was cancelled)
    for w in res.workers:
        if w["t_requested"] < res.end_s - 60.0 and w["t_ready"] is None:
            assert w["t_end"] is not None and w["t_end"] - w["t_requested"] < 60.0
