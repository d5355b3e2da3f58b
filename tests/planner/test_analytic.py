"""Analytic (roofline) profiles: hand-computed sizes, physical trends, bad input, and the
calibration against the measured H200 profile."""

from __future__ import annotations

import numpy as np
import pytest

from planner.analytic import GIB, GPUS, MODELS, analytic_profile, kv_bytes_per_token, roofline
from planner.errors import ConfigError


def test_kv_bytes_per_token_by_hand():
    # K and V x 32 layers x 8 KV heads x 128 dims x 2 bytes
    assert kv_bytes_per_token("llama-3.1-8b", "bf16") == 2 * 32 * 8 * 128 * 2 == 131_072
    assert kv_bytes_per_token("llama-3.1-8b", "fp8") == 65_536
    # 70B: 80 layers; qwen3-32b: 64 layers; both 8 KV heads of 128
    assert kv_bytes_per_token("llama-3.1-70b") == 2 * 80 * 8 * 128 * 2
    assert kv_bytes_per_token("qwen3-32b") == 2 * 64 * 8 * 128 * 2
    # tp 16 > 8 KV heads: every GPU holds a replica of one head, so the engine stores 16
    assert kv_bytes_per_token("llama-3.1-8b", "bf16", tp=16) == 2 * 32 * 16 * 128 * 2
    prof = analytic_profile("llama-3.1-8b", "h200", "fp8", 1)
    assert prof.kv_bytes_per_token == 131_072


def test_parameter_counts_match_published_sizes():
    # Llama-3.1-8B has 8.03B parameters, 70B 70.6B; Qwen3-0.6B 0.6B (tied), 8B 8.2B, 32B 32.8B
    assert MODELS["llama-3.1-8b"].params == pytest.approx(8.03e9, rel=0.01)
    assert MODELS["llama-3.1-70b"].params == pytest.approx(70.6e9, rel=0.01)
    assert MODELS["qwen3-0.6b"].params == pytest.approx(0.6e9, rel=0.05)
    assert MODELS["qwen3-8b"].params == pytest.approx(8.2e9, rel=0.01)
    assert MODELS["qwen3-32b"].params == pytest.approx(32.8e9, rel=0.01)


def test_max_kv_tokens_from_free_memory_by_hand():
    r = roofline("llama-3.1-8b", "h200", "fp8", 1)
    e = r.eff
    free = 143771 / 1024 * GIB * e.gpu_mem_utilization - r.weight_bytes - r.reserve_bytes_per_gpu
    assert r.max_kv_tokens == int(free // 131_072)
    # weights: 6.98B decoder parameters at 1 byte + embeddings and lm_head (2 x 525M) at 2
    assert r.weight_bytes == pytest.approx(6.98e9 + 2 * 0.525e9 * 2, rel=0.01)
    # the measured profile holds 945,029 tokens; ours is within 1%
    assert r.max_kv_tokens == pytest.approx(945_029, rel=0.01)


def test_tp_and_dtype_trends():
    tp1 = analytic_profile("llama-3.1-70b", "h100-sxm", "fp8", 2)
    tp4 = analytic_profile("llama-3.1-70b", "h100-sxm", "fp8", 4)
    assert tp4.max_kv_tokens > 2 * tp1.max_kv_tokens  # weights split over more memory
    assert tp4.prefill_ttft_ms_at(8000.0) < tp1.prefill_ttft_ms_at(8000.0)
    bf16 = analytic_profile("llama-3.1-8b", "h100-sxm", "bf16", 1)
    fp8 = analytic_profile("llama-3.1-8b", "h100-sxm", "fp8", 1)
    assert fp8.prefill_ttft_ms_at(8000.0) < bf16.prefill_ttft_ms_at(8000.0)
    assert fp8.max_kv_tokens > bf16.max_kv_tokens
    # more bandwidth -> shorter decode steps at the same batch and context
    h100 = roofline("llama-3.1-8b", "h100-sxm")
    h200 = roofline("llama-3.1-8b", "h200")
    assert h200.decode_itl_ms(64, 3000) < h100.decode_itl_ms(64, 3000)


def test_a100_fp8_is_weight_only_at_bf16_compute():
    fp8 = roofline("llama-3.1-8b", "a100-80g", "fp8")
    bf16 = roofline("llama-3.1-8b", "a100-80g", "bf16")
    assert fp8.weight_bytes < bf16.weight_bytes
    # compute-bound long prefill: same FLOP rate, so about the same time
    assert fp8.prefill_ms(16000) == pytest.approx(bf16.prefill_ms(16000), rel=0.01)


def test_prefill_attention_term_is_quadratic():
    r = roofline("llama-3.1-8b", "h200")
    # time per token grows with the prompt once attention matters
    assert r.prefill_ms(131072) / 131072 > 1.5 * (r.prefill_ms(8192) / 8192)


@pytest.mark.parametrize(
    "args, key",
    [
        (("gpt-5", "h200"), "model.analytic.model"),
        (("llama-3.1-8b", "tpu"), "model.analytic.gpu"),
        (("llama-3.1-8b", "h200", "int4"), "model.analytic.dtype"),
        (("llama-3.1-8b", "h200", "fp8", 0), "model.analytic.tp"),
        (("llama-3.1-8b", "h200", "fp8", 3), "model.analytic.tp"),
        (("llama-3.1-70b", "l40s", "bf16", 1), "model.analytic"),
    ],
)
def test_bad_analytic_input(args, key):
    with pytest.raises(ConfigError) as err:
        analytic_profile(*args)
    assert err.value.key == key


def test_every_model_gpu_pair_that_fits_gives_a_sane_profile():
    for m in MODELS:
        for g in GPUS:
            try:
                prof = analytic_profile(m, g, "fp8", 8)
            except ConfigError:
                continue
            t = [prof.best_decode_throughput_per_gpu(x, 3000.0) for x in (10, 20, 50, 100)]
            assert np.all(np.diff(t) >= 0), (m, g)
            assert prof.prefill_ttft_ms_at(1000.0) < prof.prefill_ttft_ms_at(8000.0)


def _engine_capped(x, y, z, t, max_kv):
    """Points where the engine ran fewer sequences than the nominal kv * max_kv / context
    (throughput * ITL below 90% of it): vLLM's sequence cap, not the roofline."""
    return t * z / 1000.0 < 0.9 * x * max_kv / y


def test_calibration_against_measured_h200_profile(h200_profile_dir):
    prof = analytic_profile("llama-3.1-8b", "h200", "fp8", 1)
    pre = np.load(h200_profile_dir / "prefill_raw_data.npz")
    isl, ttft = pre["prefill_isl"], pre["prefill_ttft"]
    sel = (isl >= 1000) & (isl <= 16_000)
    err = prof.prefill_ttft_ms_at(isl[sel].astype(float)) / ttft[sel] - 1
    assert sel.sum() >= 14
    assert np.max(np.abs(err)) < 0.30, err

    dec = np.load(h200_profile_dir / "decode_raw_data.npz")
    x, y, z, t = dec["x_kv_usage"], dec["y_context_length"], dec["z_itl"], dec["z_thpt_per_gpu"]
    capped = _engine_capped(x, y, z, t, int(dec["max_kv_tokens"][0]))
    assert capped.sum() == 3  # context 350 at kv 0.39, 0.49, 0.58
    err = prof.decode_itl_ms_at(x[~capped], y[~capped]) / z[~capped] - 1
    assert np.max(np.abs(err)) < 0.30, err
    assert prof.max_kv_tokens == pytest.approx(945_029, rel=0.01)
