"""MoE, MLA and expert parallelism in the analytic model against hand-computed parameter
counts, bytes and FLOPs (public configs: the models' Hugging Face config.json)."""

from __future__ import annotations

import numpy as np
import pytest

from planner.analytic import GPUS, MODELS, analytic_profile, roofline
from planner.errors import ConfigError


def test_total_and_active_parameters_match_published_sizes():
    # Qwen3 model cards: 30.5B total / 3.3B active; 235B / 22B. gpt-oss model card: 20.91B /
    # 3.61B and 116.83B / 5.13B active (active counts leave out the embedding table).
    # DeepSeek-V3 report: 671B total, 37B active (without the MTP module).
    q30, q235 = MODELS["qwen3-30b-a3b"], MODELS["qwen3-235b-a22b"]
    assert q30.params == pytest.approx(30.5e9, rel=0.01)
    assert q30.active_params == pytest.approx(3.3e9, rel=0.03)
    assert q235.params == pytest.approx(235e9, rel=0.01)
    assert q235.active_params == pytest.approx(22e9, rel=0.02)
    for name, total, active in (
        ("gpt-oss-20b", 20.91e9, 3.61e9),
        ("gpt-oss-120b", 116.83e9, 5.13e9),
    ):
        m = MODELS[name]
        assert m.params == pytest.approx(total, rel=0.01)
        assert m.active_params - m.embedding_params == pytest.approx(active, rel=0.01)
    ds = MODELS["deepseek-v3"]
    assert ds.params == pytest.approx(671e9, rel=0.01)
    assert ds.active_params == pytest.approx(37e9, rel=0.02)


def test_qwen3_30b_by_hand():
    m = MODELS["qwen3-30b-a3b"]
    attn = 2 * 2048 * 32 * 128 + 2 * 2048 * 4 * 128  # q, o and k, v
    expert = 3 * 2048 * 768
    assert m.layer_params == 48 * (attn + 128 * expert + 2048 * 128)
    assert m.active_layer_params == 48 * (attn + 8 * expert + 2048 * 128)
    r = roofline("qwen3-30b-a3b", "h200", "bf16")
    # weights: everything at 2 bytes (embeddings and lm_head too)
    assert r.weight_bytes == pytest.approx(2 * m.params)
    # one sequence touches 8 experts per layer; 1,000 sequences touch nearly all 128
    rest = m.layer_params - 48 * 128 * expert
    one = (rest + 48 * 8 * expert) * 2 + m.embedding_params * 2
    assert r.decode_weight_bytes_at(1) == pytest.approx(one)
    assert m.experts_touched(1) == pytest.approx(8.0)
    assert m.experts_touched(16) == pytest.approx(128 * (1 - (120 / 128) ** 16))
    assert m.experts_touched(1000) == pytest.approx(128, rel=1e-6)
    # compute follows active parameters: 2 FLOPs per active weight per token
    b, c = 64, 2000
    flops = b * 2 * (m.active_layer_params + m.embedding_params) + b * 4 * 48 * 32 * 128 * c
    e = r.eff
    mem = (r.decode_weight_bytes_at(b) + b * c * r.kv_bytes_per_token) / (e.decode_memory * 4800e9)
    overhead_ms = e.decode_overhead_ms + 48 * e.layer_overhead_us / 1000  # 48 layers
    expect_ms = overhead_ms + 1000 * (mem + flops / (e.decode_compute * 989e12))
    assert r.decode_itl_ms(b, c) == pytest.approx(expect_ms)


def test_decode_bytes_grow_with_the_experts_a_batch_touches():
    r = roofline("qwen3-235b-a22b", "h200", "fp8", 8)
    small, large = r.decode_weight_bytes_at(1), r.decode_weight_bytes_at(512)
    assert large > 5 * small
    assert large == pytest.approx(
        r.weight_bytes - MODELS["qwen3-235b-a22b"].embedding_params * 2, rel=1e-3
    )
    # step time per sequence falls steeply with batch: the expert bytes are shared
    itl = r.decode_itl_ms(np.array([1.0, 8.0, 64.0]), 2000.0)
    assert np.all(np.diff(itl) > 0)
    assert itl[2] / 64 < itl[0] / 8


def test_gpt_oss_experts_are_mxfp4():
    m = MODELS["gpt-oss-120b"]
    r = roofline("gpt-oss-120b", "h200", "bf16")
    experts = 36 * 128 * 3 * 2880 * 2880
    assert m.routed_expert_params == experts
    expect = (m.layer_params - experts) * 2 + experts * 4.25 / 8 + 2 * m.embedding_params * 2
    assert r.weight_bytes == pytest.approx(expect)
    # fits one 80 GB H100, as OpenAI says
    assert r.weight_bytes / 2**30 == pytest.approx(60.5, rel=0.02)  # the 65 GB checkpoint
    assert analytic_profile("gpt-oss-120b", "h100-sxm", "bf16").max_kv_tokens > 100_000


def test_mla_kv_bytes_and_attention_flops_by_hand():
    # DeepSeek-V3: one latent of kv_lora_rank 512 + rope 64 per layer, bf16, on each of 8 GPUs
    r = roofline("deepseek-v3", "h200", "fp8", 8)
    assert r.kv_bytes_per_token == 61 * (512 + 64) * 2 * 8 == 562_176
    # GQA with 128 KV heads of 128 would need 2 x 61 x 128 x 128 x 2 = 3,997,696 per token
    m = MODELS["deepseek-v3"]
    assert m.attention_dims(decode=True) == (576, 512)
    assert m.attention_dims(decode=False) == (192, 128)
    # attention parameters per layer: q_a, q_b, kv_a, kv_b, o
    attn = 7168 * 1536 + 1536 * 128 * 192 + 7168 * 576 + 512 * 128 * 256 + 128 * 128 * 7168
    assert m.attn_params_per_layer == attn
    # three dense layers of 18,432; 58 MoE layers with 256 routed + 1 shared expert of 2,048
    mlp = 3 * 18432 * 7168 * 3 + 58 * (257 * 3 * 7168 * 2048 + 7168 * 256)
    assert m.layer_params == 61 * attn + mlp


def test_expert_parallelism_changes_communication_only():
    tp = roofline("qwen3-235b-a22b", "h200", "fp8", 8, ep=1)
    ep = roofline("qwen3-235b-a22b", "h200", "fp8", 8, ep=8)
    assert ep.weight_bytes == tp.weight_bytes and ep.max_kv_tokens == tp.max_kv_tokens
    # one token: the all-to-all's latency replaces the all-reduce's; hand-computed
    e = tp.eff
    link, lat, nbytes = 450e9, e.allreduce_latency_us * 1e-6, 4096 * 2
    ring = 2 * 7 / 8 * nbytes / link
    a2a = 8 * nbytes / 8 * 7 / 8 / link
    assert tp._comm_s(1.0) == pytest.approx(2 * 94 * (ring + lat))
    assert ep._comm_s(1.0) == pytest.approx(94 * (ring + lat) + 94 * 2 * (a2a + lat))
    assert analytic_profile("qwen3-235b-a22b", "h200", "fp8", 8, ep=8).name.endswith("/ep8")


@pytest.mark.parametrize(
    "model, tp, ep",
    [("llama-3.1-8b", 2, 2), ("qwen3-30b-a3b", 4, 3), ("qwen3-30b-a3b", 2, 0)],
)
def test_bad_ep(model, tp, ep):
    with pytest.raises(ConfigError) as err:
        roofline(model, "h200", "fp8", tp, ep=ep)
    assert err.value.key == "model.analytic.ep"


def test_new_gpus_from_public_specs():
    assert GPUS["b300"].fp8_tflops == 4500 and GPUS["b300"].hbm_gib == pytest.approx(
        268.6, rel=1e-3
    )
    assert GPUS["gb200"].bf16_tflops == 2500 and GPUS["gb200"].hbm_gbps == 8000
    assert GPUS["mi300x"].fp8_tflops == pytest.approx(2614.9) and GPUS["mi300x"].hbm_gbps == 5300
    # more HBM -> more KV room for the same engine
    kv = {
        g: roofline("llama-3.1-70b", g, "fp8", 4).max_kv_tokens for g in ("b200", "gb200", "b300")
    }
    assert kv["b200"] < kv["gb200"] < kv["b300"]
    assert analytic_profile("deepseek-v3", "mi300x", "fp8", 8).max_kv_tokens > 0


def _scenario(tmp_path, analytic: str):
    from scenario import load_scenario

    text = f"""name: moe
duration: 10m
model:
  analytic: {analytic}
cluster:
  prefill: {{replicas: 1, gpus_per_replica: 8, startup: 60s}}
  decode: {{replicas: 1, gpus_per_replica: 8, startup: 60s}}
workload:
  arrival: {{process: poisson, rate: 1.0}}
  isl: {{dist: fixed, value: 1000}}
  osl: {{dist: fixed, value: 100}}
sla: {{ttft_ms: 500, itl_ms: 50}}
planner: {{policy: static}}
"""
    path = tmp_path / "moe.yaml"
    path.write_text(text)
    return load_scenario(path)


def test_ep_is_a_scenario_key(tmp_path):
    from planlab.profiles import resolve_model
    from scenario import scenario_to_dict

    s = _scenario(tmp_path, "{model: qwen3-235b-a22b, gpu: b200, dtype: fp8, tp: 8, ep: 8}")
    assert s.model.analytic.ep == 8
    assert scenario_to_dict(s)["model"]["analytic"]["ep"] == 8
    prof = resolve_model(s.model)
    assert prof.name == "analytic:qwen3-235b-a22b/b200/fp8/tp8/ep8"
    # without ep the dump stays as before (no ep key)
    dense = _scenario(tmp_path, "{model: llama-3.1-8b, gpu: h200}")
    assert "ep" not in scenario_to_dict(dense)["model"]["analytic"]
    bad = _scenario(tmp_path, "{model: qwen3-235b-a22b, gpu: b200, tp: 8, ep: 3}")
    with pytest.raises(ConfigError) as err:
        resolve_model(bad.model)
    assert err.value.key == "model.analytic.ep"
