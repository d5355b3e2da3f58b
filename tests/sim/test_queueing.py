"""Queueing theory checks: one prefill worker with constant service time and Poisson arrivals
is an M/D/1 queue (Pollaczek-Khinchine mean wait); Little's law for requests in flight."""

from __future__ import annotations

import numpy as np
import pytest
from _simkit import scenario, synthetic_profile

from scenario import KVTransferSpec, RoleSpec
from sim.simulate import STATUS_SUCCESS, simulate

SERVICE_S = 0.1


def _md1_run(rho: float, duration_s: float, seed: int = 11):
    # Flat prefill TTFT: every step takes SERVICE_S whatever its size, one prompt per step.
    # Decode and KV transfer are made negligible (ITL 10 us, infinite link) so that
    # TTFT = wait in the prefill queue + SERVICE_S (+ < 20 us).
    profile = synthetic_profile(prefill_ms=(SERVICE_S * 1000, 0.0), itl_ms=0.01)
    sc = scenario(
        duration_s=duration_s,
        rate=((0.0, rho / SERVICE_S),),
        isl=1000,
        osl=1,
        prefill=RoleSpec(replicas=1, max_num_seqs=1),
        decode=RoleSpec(replicas=1),
        kv=KVTransferSpec(bandwidth_gbps=1e12, latency_ms=0.0),
        policy="static",
        interval_s=600.0,
        seed=seed,
    )
    return simulate(sc, profile)


@pytest.mark.slow
@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_md1_mean_wait_matches_pollaczek_khinchine(rho):
    # About 100k (rho 0.5) and 160k (rho 0.8) requests.
    res = _md1_run(rho, duration_s=20_000.0)
    r = res.requests
    ok = r["status"] == STATUS_SUCCESS
    assert ok.sum() == len(ok)
    ttft = r["first_token_s"][ok] - r["arrival_s"][ok]
    wait = ttft - SERVICE_S
    assert wait.min() > -1e-9  # nobody is served faster than the service time
    expected = rho * SERVICE_S / (2 * (1 - rho))
    assert wait.mean() == pytest.approx(expected, rel=0.05)


def test_littles_law_for_requests_in_flight():
    """Time-average of the in-flight gauge (sampled by the scraper every 5 s) equals the
    arrival rate times the mean time in system from the request records."""
    profile = synthetic_profile(prefill_ms=(20.0, 0.02), itl_ms=8.0, itl_slope_ms=30.0)
    sc = scenario(
        duration_s=4000.0,
        rate=((0.0, 6.0),),
        isl=2000,
        osl=200,
        policy="static",
        interval_s=600.0,
        seed=5,
    )
    res = simulate(sc, profile)
    r = res.requests
    e2e = r["finish_s"] - r["arrival_s"]
    lam = len(e2e) / sc.duration_s
    # only the scrapes while arrivals run (the last row is the end-of-run sample)
    rows = [row for row in res.timeline if row["t_s"] <= sc.duration_s]
    inflight = np.array([row["inflight"] for row in rows], dtype=float)
    assert inflight.mean() > 5  # a real queue, not an empty system
    assert inflight.mean() == pytest.approx(lam * e2e.mean(), rel=0.05)
