"""`planlab profile aic`: profiles from NVIDIA AIConfigurator (the extra planlab[aic]) load
and hold AIConfigurator's own predictions; the serving overhead fitted on the measured H200
profile; bad names and a missing extra are exit 2 with the flag or the install line."""

from __future__ import annotations

import importlib.util
import shutil
import sys

import numpy as np
import pytest

from planlab.aic import (
    AicEngine,
    aic_profile,
    calibrate_overhead,
    engine_sequences,
    resolve,
)
from planlab.cli import main
from planlab.profiles import load_profile
from planner.errors import ConfigError

HAVE_AIC = importlib.util.find_spec("aiconfigurator_core") is not None
needs_aic = pytest.mark.skipif(
    not HAVE_AIC, reason="aiconfigurator-core not installed (pip install 'planlab[aic]')"
)


@pytest.fixture(scope="module")
def llama8b_h200() -> AicEngine:
    return AicEngine(resolve("llama-3.1-8b", "h200_sxm", "vllm", 1, quant="fp8"))


def _sampled_decode_points(prof, every: int = 5):
    batch = np.round(prof.decode_kv_usage * prof.max_kv_tokens / prof.decode_context)
    idx = np.arange(0, batch.size, every)
    return idx, batch[idx], prof.decode_context[idx]


@needs_aic
def test_written_profile_loads_and_holds_aics_predictions(tmp_path, llama8b_h200, capsys):
    out = tmp_path / "p"
    args = "profile aic --model llama-3.1-8b --system h200_sxm --backend vllm --tp 1 --quant fp8"
    assert main([*args.split(), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    prof = load_profile(out)  # planlab-profile.json
    # The Dynamo layout alone (what Dynamo's planner reads) holds the same arrays.
    dyn = tmp_path / "dynamo"
    shutil.copytree(out, dyn)
    (dyn / "planlab-profile.json").unlink()
    dprof = load_profile(dyn)
    for key, arr in prof.to_arrays().items():
        np.testing.assert_allclose(dprof.to_arrays()[key], arr, rtol=1e-12, err_msg=key)

    eng = llama8b_h200
    # prefill: every grid ISL equals AIConfigurator's single-prompt latency
    sampled = prof.prefill_isl[::3]
    expect = [eng._handle.predict_prefill_latency(1, int(t)) for t in sampled]
    np.testing.assert_allclose(prof.prefill_ttft_ms_at(sampled), expect, rtol=1e-9)
    # decode: sampled points equal AIConfigurator's step latency at that batch and context
    idx, batch, ctx = _sampled_decode_points(prof)
    expect = [
        eng._handle.decode_step_latency(int(b), int(c) - 2, 2)
        for b, c in zip(batch, ctx, strict=True)
    ]
    np.testing.assert_allclose(prof.decode_itl_ms[idx], expect, rtol=1e-9)
    np.testing.assert_allclose(
        prof.decode_thpt_per_gpu[idx], batch / (np.array(expect) / 1000.0), rtol=1e-9
    )
    assert prof.max_kv_tokens == eng.max_kv_tokens
    # 2 x 32 layers x 8 KV heads x 128 x 2 bytes
    assert prof.kv_bytes_per_token == 131_072
    # AIConfigurator's KV estimate and the analytic one agree within 2% (same vLLM defaults)
    from planner.analytic import roofline

    assert prof.max_kv_tokens == pytest.approx(
        roofline("llama-3.1-8b", "h200").max_kv_tokens, rel=0.02
    )
    # and so do the weights: 6.98B decoder parameters at 1 byte + embeddings, lm_head at 2
    assert eng.weight_bytes == pytest.approx(
        roofline("llama-3.1-8b", "h200").weight_bytes, rel=0.01
    )


@needs_aic
@pytest.mark.parametrize(
    "model, tp, ep, kv_bytes",
    [
        # Qwen3-30B-A3B config.json: 48 layers, 4 KV heads of 128: 2 x 48 x 4 x 128 x 2
        ("qwen3-30b-a3b", 2, 2, 2 * 48 * 4 * 128 * 2),
        # DeepSeek-V3 MLA: one latent of kv_lora_rank 512 + rope 64 per layer (61), bf16,
        # replicated on each of the 8 GPUs
        ("deepseek-v3", 8, 8, 61 * (512 + 64) * 2 * 8),
        # gpt-oss-20b: 24 layers, 8 KV heads of 64
        ("gpt-oss-20b", 1, 1, 2 * 24 * 8 * 64 * 2),
    ],
)
def test_moe_profiles_from_aic(model, tp, ep, kv_bytes):
    spec = resolve(model, "h200_sxm", "vllm", tp, ep=ep)
    eng = AicEngine(spec)
    prof = aic_profile(spec, engine=eng)
    assert prof.kv_bytes_per_token == kv_bytes
    isl = prof.prefill_isl[4]
    assert prof.prefill_ttft_ms[4] == pytest.approx(float(eng.prefill_ms(isl)[0]), rel=1e-9)
    assert prof.decode_itl_ms[0] == pytest.approx(
        float(eng.decode_ms(1, prof.decode_context[0])[0]), rel=1e-9
    )


@needs_aic
def test_serving_overhead_fitted_on_the_measured_h200_profile(h200_profile_dir, llama8b_h200):
    measured = load_profile(h200_profile_dir)
    ov = calibrate_overhead(measured, llama8b_h200)
    # AIConfigurator times kernels only: the served engine is slower on both phases
    assert ov.prefill_scale > 1.0 and ov.prefill_ms > 5.0
    assert ov.decode_scale > 1.0
    raw = aic_profile(llama8b_h200.spec, engine=llama8b_h200)
    cal = aic_profile(llama8b_h200.spec, ov, engine=llama8b_h200)
    isl = measured.prefill_isl
    err_raw = raw.prefill_ttft_ms_at(isl) / measured.prefill_ttft_ms - 1
    err_cal = cal.prefill_ttft_ms_at(isl) / measured.prefill_ttft_ms - 1
    print("prefill error raw", np.round(err_raw, 3), "calibrated", np.round(err_cal, 3))
    # raw: 16-75% fast; with the overhead: 3% mean, 16% at worst (ISL 4,168, where the
    # measurement jumps)
    assert np.all(err_raw < -0.15)
    assert np.mean(np.abs(err_cal)) < 0.05, err_cal
    assert np.max(np.abs(err_cal)) < 0.17, err_cal
    seqs = engine_sequences(measured, 1)
    pred = ov.decode(llama8b_h200.decode_ms(seqs, measured.decode_context))
    err = pred / measured.decode_itl_ms - 1
    print("decode error calibrated", np.round(err, 3))
    assert np.median(np.abs(err)) < 0.10, err


@needs_aic
def test_calibrate_from_the_cli(tmp_path, h200_profile_dir, capsys):
    args = [
        *"profile aic --model llama-3.1-70b --system h200_sxm --tp 4 --quant fp8".split(),
        "--calibrate", str(h200_profile_dir), "--calibrate-model", "llama-3.1-8b",
        "--calibrate-tp", "1", "--out", str(tmp_path / "p"),
    ]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "serving overhead: TTFT = " in out
    prof = load_profile(tmp_path / "p")
    assert prof.name.endswith("+overhead")
    raw = aic_profile(resolve("llama-3.1-70b", "h200", "vllm", 4, quant="fp8"))
    assert prof.prefill_ttft_ms_at(1000.0) > raw.prefill_ttft_ms_at(1000.0) + 5.0


@needs_aic
@pytest.mark.parametrize(
    "extra, flag",
    [
        ("--model gpt-5 --system h200_sxm", "--model"),
        ("--model llama-3.1-8b --system tpu_v5", "--system"),
        ("--model llama-3.1-8b --system h200_sxm --backend tgi", "--backend"),
        ("--model llama-3.1-8b --system h200_sxm --quant int4", "--quant"),
        ("--model qwen3-30b-a3b --system h200_sxm --tp 4 --ep 3", "--ep"),
        ("--model llama-3.1-8b --system h200_sxm --tp 0", "--tp"),
        # AIConfigurator has no fp8 MoE data for gpt-oss on vLLM: its message, exit 2
        ("--model gpt-oss-120b --system h200_sxm --quant fp8", "profile aic"),
    ],
)
def test_bad_input_is_exit_2_naming_the_flag(extra, flag, tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["profile", "aic", *extra.split(), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"error: {flag}" in err and "expected" in err
    assert not out.exists()  # nothing half-written


@needs_aic
def test_an_existing_folder_of_the_users_is_refused(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    args = "profile aic --model llama-3.1-8b --system h200_sxm --out".split()
    assert main([*args, str(out)]) == 2
    assert "--out" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


@needs_aic
def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ConfigError) as e:
        resolve("llama-9", "h200_sxm")
    assert "llama-3.1-70b" in str(e.value) and "deepseek-ai/DeepSeek-V3" in str(e.value)


def test_without_the_extra_the_message_names_the_install_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "aiconfigurator_core", None)  # import now fails
    args = "profile aic --model llama-3.1-8b --system h200_sxm --out".split()
    assert main([*args, str(tmp_path / "p")]) == 2
    assert "pip install 'planlab[aic]'" in capsys.readouterr().err
