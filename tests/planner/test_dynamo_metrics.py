"""The frontend metrics as Dynamo 1.6 and vLLM export them: bucket layouts, and the
simulator's requests_started_total and active_requests read back through its source."""

from __future__ import annotations

import pytest

from planner import metrics as M
from planner.errors import ConfigError
from sim.prometheus import FrontendMetrics, ScrapeStore, SimMetricsSource


def test_dynamo_ttft_buckets_are_the_exported_ones() -> None:
    # what a Dynamo 1.6 frontend's /metrics shows for TTFT (le, seconds)
    assert M.BUCKETS[M.TTFT] == (
        0.0, 0.0022, 0.0047, 0.01, 0.022, 0.047, 0.1, 0.22, 0.47,
        1.0, 2.2, 4.7, 10.0, 22.0, 48.0, 100.0, 220.0, 480.0,
    )  # fmt: skip


def test_generate_log_buckets_port() -> None:
    # ITL (0.001, 2, 13): ratio 2000^(1/12) = 1.883 per step, two significant figures
    assert M.BUCKETS[M.ITL][:4] == (0.0, 0.0019, 0.0035, 0.0067) and M.BUCKETS[M.ITL][-1] == 2.0
    # request duration (1, 512, 10): powers of two, rounded: 128 -> 130, 256 -> 260
    assert M.BUCKETS[M.REQUEST_DURATION] == (
        0.0,
        2.0,
        4.0,
        8.0,
        16.0,
        32.0,
        64.0,
        130.0,
        260.0,
        510.0,
    )
    # rounding duplicates are dropped: 1..1.2 in 30 steps gives few distinct values
    b = M.dynamo_log_buckets(1.0, 1.2, 30)
    assert len(b) == len(set(b)) < 30 and b == tuple(sorted(b))


def test_vllm_buckets() -> None:
    v = M.BUCKET_SETS["vllm"]
    assert v[M.TTFT][:3] == (0.001, 0.005, 0.01) and v[M.TTFT][-1] == 2560.0
    assert len(v[M.TTFT]) == 22 and len(v[M.ITL]) == 19
    assert v[M.ISL][:6] == (1.0, 2.0, 5.0, 10.0, 20.0, 50.0) and v[M.ISL][-1] == 100000.0


def test_sim_exports_requests_started_and_active() -> None:
    buckets = M.BUCKET_SETS["vllm"]
    metrics, store = FrontendMetrics(buckets), ScrapeStore(buckets=buckets)
    for t in range(0, 65, 5):
        metrics.requests_started = 10 * t  # 2 per second admitted
        metrics.requests["success"] = 5 * t  # 1 per second finished
        metrics.inflight = 7
        store.scrape(float(t), metrics)
    stats = SimMetricsSource(store).window(60.0, 60.0)
    assert stats.requests_started == pytest.approx(600.0)
    assert stats.requests == pytest.approx(300.0)
    assert stats.ttft_s.upper_bounds == buckets[M.TTFT]
    assert store.values[-1, store.cols[M.ACTIVE]] == 7


def test_scenario_chooses_the_bucket_layout(tmp_path) -> None:
    from scenario import load_scenario

    path = tmp_path / "s.yaml"
    path.write_text(
        "duration: 10m\nmodel: {analytic: {model: llama-3.1-8b, gpu: h200}}\n"
        "workload: {arrival: {rate: 1}, isl: 100, osl: 10}\n"
    )
    assert load_scenario(path).prometheus.buckets == "dynamo"
    assert load_scenario(path, {"prometheus.buckets": "fine"}).prometheus.buckets == "fine"
    with pytest.raises(ConfigError, match="prometheus.buckets"):
        load_scenario(path, {"prometheus.buckets": "coarse"})


def test_engine_limits_reach_the_policy_under_either_name(tmp_path) -> None:
    from scenario import load_scenario

    path = tmp_path / "s.yaml"
    path.write_text(
        "duration: 10m\nmodel: {analytic: {model: llama-3.1-8b, gpu: h200}}\n"
        "workload: {arrival: {rate: 1}, isl: 100, osl: 10}\n"
        "cluster: {prefill: {max_num_batched_tokens: 4096, max_num_seqs: 64},"
        " decode: {max_num_seqs: 128}}\n"
    )
    cfg = load_scenario(path).planner_config()
    assert (cfg.prefill_max_batch_tokens, cfg.prefill_max_num_seqs, cfg.decode_max_num_seqs) == (
        4096,
        64,
        128,
    )
    with pytest.raises(ConfigError, match="max_num_batched_tokens"):
        load_scenario(path, {"cluster.prefill.max_batch_tokens": 2048})


def test_emulator_frontend_exports_started_and_active_with_dynamos_buckets() -> None:
    pytest.importorskip("prometheus_client", reason="the emulator needs prometheus_client")
    from live.emulator.frontend import FrontendMetrics as EmulatorMetrics

    em = EmulatorMetrics("m")
    em.started.labels(model="m", request_type="stream").inc()
    em.active.set(3)
    text = em.exposition().decode()
    assert f'{M.REQUESTS_STARTED_TOTAL}{{model="m",request_type="stream"}} 1.0' in text
    assert f'{M.ACTIVE}{{model="m"}} 3.0' in text
    assert f'{M.TTFT}_bucket{{le="0.22",model="m"}} 0.0' in text
