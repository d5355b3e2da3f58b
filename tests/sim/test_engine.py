"""The engine timing model and the prefill/decode workers against hand-computed schedules."""

from __future__ import annotations

import numpy as np
import pytest
from _simkit import StubSim, synthetic_profile

from sim.engine import DecodeWorker, PrefillWorker, Req
from sim.timing import EngineTiming


def test_kv_transfer_by_hand():
    t = EngineTiming(
        synthetic_profile(), kv_bytes_per_token=131072, bandwidth_gbps=200, latency_ms=1
    )
    # 3000 tokens x 128 KiB over 25 GB/s, plus 1 ms
    assert t.kv_transfer_s(3000) == pytest.approx(3000 * 131072 / 25e9 + 0.001)


def test_timing_follows_the_profile(h200_profile_dir):
    from planlab.profiles import load_profile

    profile = load_profile(h200_profile_dir)
    t = EngineTiming(profile)
    for isl in (100, 3000, 7219, 16000):
        assert t.prefill_step_s(isl) == pytest.approx(profile.prefill_ttft_ms_at(isl) / 1000)
        # one whole prompt in a batch step costs exactly its TTFT
        assert t.prefill_batch_s([(0, isl)]) == pytest.approx(t.prefill_step_s(isl))
    # batching two prompts costs less than two steps (the overhead is shared) ...
    two = t.prefill_batch_s([(0, 3000), (0, 3000)])
    assert t.prefill_step_s(3000) < two < 2 * t.prefill_step_s(3000)
    # ... and less than one prompt of the same total length (attention is per prompt)
    assert two < t.prefill_step_s(6000)
    rng = np.random.default_rng(0)
    for _ in range(50):
        kv = rng.uniform(0.01, 0.9)
        ctx = rng.uniform(400, 12000)
        want = profile.decode_itl_ms_at(kv, ctx) / 1000
        got = t.decode_step_s(10, kv * profile.max_kv_tokens, ctx)
        assert got == pytest.approx(want, rel=0.02)


def _req(i, isl, osl, t=0.0):
    return Req(i, t, isl, osl)


def test_prefill_batches_and_chunks_under_the_budget():
    # TTFT(l) = 10 ms + 0.01 ms/token: overhead 10 ms, marginal 0.01 ms/token
    sim = StubSim(synthetic_profile(prefill_ms=(10.0, 0.01)))
    w = PrefillWorker(sim, 0, 0.0, True, budget_tokens=4096, max_seqs=None)
    for i in range(3):
        w.enqueue(_req(i, 3000, 10))
    sim.env.run()
    # an idle engine starts at once: step 1 is A alone -> 10 + 30 ms; A done at 40 ms
    # step 2: B 3000 + C 1096 -> 10 + 40.96 ms; B done at 90.96 ms
    # step 3: C 1904          -> 10 + 19.04 ms; C done at 120 ms
    got = dict(sim.prefilled)
    assert got[0] == pytest.approx(0.040)
    assert got[1] == pytest.approx(0.09096)
    assert got[2] == pytest.approx(0.120)
    assert w.inflight == 0 and w.queued_tokens == 0


def test_prefill_max_num_seqs_one_is_fifo_single_service():
    sim = StubSim(synthetic_profile(prefill_ms=(100.0, 0.0)))
    w = PrefillWorker(sim, 0, 0.0, True, budget_tokens=16384, max_seqs=1)
    for i in range(4):
        w.enqueue(_req(i, 500, 10))
    sim.env.run()
    assert [t for _, t in sim.prefilled] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert [i for i, _ in sim.prefilled] == [0, 1, 2, 3]


def _decode(sim, max_kv=1_000_000, max_seqs=None, skip=256):
    return DecodeWorker(sim, 0, 0.0, True, max_kv, max_seqs, skip, 10.0)


def _deliver(w, req):
    w.reserve(req)
    w.arrive(req)


def test_decode_one_request_by_hand():
    sim = StubSim(synthetic_profile(itl_ms=10.0))
    w = _decode(sim)
    _deliver(w, _req(0, 1000, 11))
    sim.env.run()
    # 11 tokens, one per 10 ms step: first at 10 ms, last at 110 ms
    assert sim.completed == [(0, pytest.approx(0.11))]
    ttft = sim.metrics.histograms["dynamo_frontend_time_to_first_token_seconds"]
    itl = sim.metrics.histograms["dynamo_frontend_inter_token_latency_seconds"]
    assert ttft.count == 1 and ttft.sum == pytest.approx(0.01)
    assert itl.count == 10 and itl.sum == pytest.approx(0.1)
    assert sim.metrics.output_tokens == 11


def test_decode_admits_a_late_request_at_the_next_step_boundary():
    sim = StubSim(synthetic_profile(itl_ms=10.0))
    w = _decode(sim)
    _deliver(w, _req(0, 1000, 100))
    late = _req(1, 1000, 5, t=0.0555)

    def arrive(_):
        _deliver(w, late)

    sim.env.timeout(0.0555).callbacks.append(arrive)
    sim.env.run()
    done = dict(sim.completed)
    # the run of steps is cut at 60 ms; the late request's 5 tokens end at 110 ms
    assert done[1] == pytest.approx(0.11)
    assert done[0] == pytest.approx(1.0)
    assert sim.metrics.output_tokens == 105


def test_decode_preempts_the_newest_request_and_recomputes_it():
    # KV 102 tokens: two requests of 40 prompt tokens fit with room for 11 steps of growth
    sim = StubSim(synthetic_profile(prefill_ms=(5.0, 0.0), itl_ms=10.0, max_kv_tokens=102))
    w = _decode(sim, max_kv=102)
    _deliver(w, _req(0, 40, 30))
    _deliver(w, _req(1, 40, 30))
    sim.env.run()
    done = dict(sim.completed)
    # A starts alone at t=0 (B lands while A's first step runs and joins at 10 ms).
    # Steps 2..11 run both (kv 81 -> 101); step 12 would need 103 > 102: B, the newest,
    # is preempted holding 40 + 10 tokens. A runs alone to its 30th token at 300 ms. B
    # comes back when A leaves: its first step also recomputes its 50 tokens (flat 5 ms
    # prefill), then it needs 19 more tokens: 300 + 10 + 5 + 19 * 10 = 505 ms.
    assert sim.preemptions == 1
    assert done[0] == pytest.approx(0.30)
    assert done[1] == pytest.approx(0.505)
    assert sim.metrics.output_tokens == 60


def test_skip_ahead_matches_step_by_step():
    """Advancing runs of identical steps in one event gives the same schedule as one event
    per step: mean E2E within 1%, 95% of requests within 2% (the step time is taken at the run's midpoint KV usage)."""
    profile = synthetic_profile(itl_ms=5.0, itl_slope_ms=40.0, max_kv_tokens=200_000)
    rng = np.random.default_rng(3)
    arrivals = np.cumsum(rng.exponential(0.02, 300))
    isl = rng.integers(200, 3000, 300)
    osl = rng.integers(20, 400, 300)

    def run(skip: int) -> dict[int, float]:
        sim = StubSim(profile)
        w = _decode(sim, max_kv=200_000, skip=skip)
        for i, t in enumerate(arrivals):
            req = _req(i, int(isl[i]), int(osl[i]), t=float(t))
            sim.env.timeout(float(t), req).callbacks.append(lambda ev: _deliver(w, ev.value))
        sim.env.run()
        return dict(sim.completed)

    fine = run(1)
    coarse = run(256)
    assert len(fine) == len(coarse) == 300
    e2e_fine = np.array([fine[i] - arrivals[i] for i in range(300)])
    e2e_coarse = np.array([coarse[i] - arrivals[i] for i in range(300)])
    assert abs(e2e_coarse.mean() / e2e_fine.mean() - 1) < 0.01
    # single requests may shift by a step or two where a cut lands on another boundary
    assert np.quantile(np.abs(e2e_coarse - e2e_fine) / e2e_fine, 0.95) < 0.02
