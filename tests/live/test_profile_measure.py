"""`planlab profile measure` against the emulator, whose true profile is known (it is timed
by it): the measured profile comes back close to it and reloads through every loader.

Like Dynamo's profiler, `profile measure` measures the TTFT a client sees. On a
disaggregated endpoint that includes the KV transfer (an 8B model's 128 KiB per token at
200 Gb/s adds 43 ms to an 8k prompt) and the decode engine's first step; the emulator here
is given a transfer link fast enough to leave only the engine's own prefill. What stays is
about 5 ms (the first decode step and HTTP): +11% at a 2k prompt, +7% at 4k, +4% at 8k on
a quiet machine, so the prompts checked here start at 4k."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from live.emulator.launch import start_emulated_cluster
from live.profiler import MeasureSpec, _steady_itl_ms, measure
from planlab.profiles import load_profile, write_dynamo_profile
from planner.analytic import analytic_profile
from planner.errors import ConfigError
from sim.timing import EngineTiming

pytestmark = [pytest.mark.live, pytest.mark.timeout(300)]

# Where fixed costs (HTTP, the KV transfer and the first decode step in the TTFT, the
# event loop's wake-up in each ITL) stay small against the engine time being measured.
SPEC = dict(isls=(4096, 8192, 16384), contexts=(1024, 4096), concurrencies=(1, 8), repeats=2)
BOUND = 0.10  # the issue's goal: the measured profile within 10% of the true one


@pytest.fixture(scope="module")
def measured():
    truth = analytic_profile("llama-3.1-8b", "h200", "fp8", 1)

    timing = EngineTiming(truth, bandwidth_gbps=1e6, latency_ms=0.0)  # no transfer to speak of

    async def go():
        async with start_emulated_cluster(timing, prometheus=False) as h:
            spec = MeasureSpec(**SPEC, budget_s=200, max_kv_tokens=truth.max_kv_tokens)
            return await measure(h.frontend_url, h.model, spec)

    return truth, asyncio.run(go())


def test_prefill_ttft_comes_back_within_bound(measured):
    truth, m = measured
    prof = m.profile
    assert prof.prefill_isl.size == len(SPEC["isls"])
    rel = prof.prefill_ttft_ms / truth.prefill_ttft_ms_at(prof.prefill_isl) - 1.0
    print(
        "prefill relative error by ISL:",
        dict(zip(prof.prefill_isl.tolist(), rel.round(3), strict=True)),
    )
    assert np.all(np.abs(rel) <= BOUND), rel


def test_decode_itl_comes_back_within_bound(measured):
    truth, m = measured
    prof = m.profile
    assert prof.decode_itl_ms.size == len(SPEC["contexts"]) * len(SPEC["concurrencies"])
    expect = truth.decode_itl_ms_at(prof.decode_kv_usage, prof.decode_context)
    rel = prof.decode_itl_ms / expect - 1.0
    print("decode relative error:", rel.round(3))
    assert np.all(np.abs(rel) <= BOUND), rel
    # Throughput is concurrency / ITL, as Dynamo's profiler writes it.
    conc = prof.decode_kv_usage * truth.max_kv_tokens / prof.decode_context
    assert np.allclose(prof.decode_thpt_per_gpu, conc * 1000.0 / prof.decode_itl_ms, rtol=1e-6)


def test_samples_and_spread_are_recorded(measured, tmp_path):
    _, m = measured
    doc = m.as_dict()
    assert all(len(p["samples_ms"]) == SPEC["repeats"] for p in doc["points"])
    assert all(p["min_ms"] <= p["median_ms"] <= p["max_ms"] for p in doc["points"])
    assert doc["max_kv_tokens_source"] == "--max-kv-tokens"
    # The emulator counts a token per 4 characters: a 3-letter word and its space is one.
    assert doc["tokens_per_word"] == pytest.approx(1.0, abs=0.02)
    out = write_dynamo_profile(m.profile, tmp_path / "prof", {"measurement.json": json.dumps(doc)})
    back = load_profile(out)
    assert np.array_equal(back.prefill_ttft_ms, m.profile.prefill_ttft_ms)
    assert np.array_equal(back.decode_itl_ms, m.profile.decode_itl_ms)
    assert back.max_kv_tokens == m.profile.max_kv_tokens


def test_steady_window_uses_only_gaps_while_the_whole_batch_decodes():
    """Two requests: one streams 0..10 ms every 1 ms, the other 5..15 ms every 2 ms; the
    window where both decode is [5, 10]: gaps of 1 ms (5) and 2 ms (2), mean 9/7 ms."""
    a = {"stamps": np.arange(0, 11) / 1000.0}
    b = {"stamps": np.arange(5, 16, 2) / 1000.0}
    assert _steady_itl_ms([a, b]) == pytest.approx(9.0 / 7.0)
    assert _steady_itl_ms([{"stamps": np.array([0.0, 0.001])}, {"stamps": np.array([0.5])}]) is None


def test_a_server_without_kv_capacity_needs_the_flag():
    async def go():
        truth = analytic_profile("llama-3.1-8b", "h200", "fp8", 1)
        async with start_emulated_cluster(truth, prometheus=False) as h:
            await measure(h.frontend_url, h.model, MeasureSpec(isls=(128, 256), repeats=1))

    with pytest.raises(ConfigError, match="--max-kv-tokens"):
        asyncio.run(go())


def test_cli_refuses_an_out_folder_of_the_users(tmp_path, capsys):
    from planlab.cli import main

    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    argv = ["profile", "measure", "--endpoint", "http://127.0.0.1:9", "--out", str(out)]
    assert main(argv) == 2
    assert "keep.txt" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
