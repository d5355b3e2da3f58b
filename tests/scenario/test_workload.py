"""Workload generation against analytic results (counts, CVs, moments), determinism, and
the trace readers on the shared traces and on small files of each format."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest

from planner.errors import ConfigError
from scenario import (
    ArrivalSpec,
    LengthDist,
    PiecewiseRate,
    SineRate,
    SpikeRate,
    StepRate,
    TraceSpec,
    WorkloadSpec,
)
from scenario.workload import (
    ARRIVALS,
    TRACE_FORMATS,
    LengthSampler,
    Requests,
    generate,
    make_rng,
    read_trace,
    sample_lengths,
)

FIXED = LengthDist("fixed", value=100)


def open_loop(rate, process="poisson", cv=1.0, isl=FIXED, osl=FIXED, isl_scale=None):
    if not isinstance(rate, PiecewiseRate | SineRate | StepRate | SpikeRate):
        rate = PiecewiseRate(((0.0, float(rate)),))
    return WorkloadSpec(
        arrival=ArrivalSpec(process, rate, cv), isl=isl, osl=osl, isl_scale=isl_scale
    )


def cv(x: np.ndarray) -> float:
    return float(np.std(x) / np.mean(x))


def within_sigmas(count: int, mean: float, var: float, k: float = 3.0) -> bool:
    return abs(count - mean) <= k * math.sqrt(var)


# ---------------------------------------------------------------------------
# Arrival processes


def test_poisson_count_and_cv():
    reqs = generate(open_loop(50.0), 4000.0, seed=1)
    assert within_sigmas(len(reqs), 200_000, 200_000)
    gaps = np.diff(reqs.arrival_s)
    assert cv(gaps) == pytest.approx(1.0, abs=0.01)
    assert np.mean(gaps) == pytest.approx(1 / 50, rel=0.01)
    assert np.all(gaps >= 0) and reqs.arrival_s[0] >= 0 and reqs.arrival_s[-1] < 4000.0


def test_gamma_cv_and_mean():
    reqs = generate(open_loop(100.0, "gamma", cv=4.0), 2000.0, seed=2)
    gaps = np.diff(reqs.arrival_s)
    assert len(gaps) > 150_000
    assert cv(gaps) == pytest.approx(4.0, rel=0.10)
    assert np.mean(gaps) == pytest.approx(0.01, rel=0.05)


def test_gamma_cv_below_one_is_regular():
    gaps = np.diff(generate(open_loop(20.0, "gamma", cv=0.25), 2000.0, seed=3).arrival_s)
    assert cv(gaps) == pytest.approx(0.25, rel=0.05)


def test_constant_is_evenly_spaced():
    reqs = generate(open_loop(4.0, "constant"), 10.0, seed=0)
    assert np.allclose(reqs.arrival_s, np.arange(40) * 0.25)


def test_constant_follows_a_piecewise_rate():
    rate = PiecewiseRate(((0.0, 1.0), (10.0, 4.0)))
    t = generate(open_loop(rate, "constant"), 12.0, seed=0).arrival_s
    # 10 arrivals a second apart, then 8 a quarter second apart.
    assert np.allclose(t, np.concatenate([np.arange(10.0), 10 + np.arange(8) * 0.25]))


@pytest.mark.parametrize("process", ["poisson", "gamma"])
def test_piecewise_counts_per_segment(process):
    # Gamma with cv 2: counts over long windows have variance about cv^2 * mean.
    cv_ = 2.0 if process == "gamma" else 1.0
    rate = PiecewiseRate(((0.0, 2.0), (1000.0, 8.0), (2000.0, 0.0), (3000.0, 5.0)))
    t = generate(open_loop(rate, process, cv=cv_), 4000.0, seed=4).arrival_s
    counts = np.histogram(t, bins=[0, 1000, 2000, 3000, 4000])[0]
    assert counts[2] == 0  # rate 0: nothing at all
    for count, r in zip(counts[[0, 1, 3]], (2.0, 8.0, 5.0), strict=True):
        assert within_sigmas(int(count), r * 1000, cv_**2 * r * 1000), (count, r)


def test_step_and_spike_counts():
    t = generate(open_loop(StepRate(before=5, after=20, at_s=300)), 600.0, seed=5).arrival_s
    assert within_sigmas(int(np.sum(t < 300)), 1500, 1500)
    assert within_sigmas(int(np.sum(t >= 300)), 6000, 6000)
    spike = SpikeRate(base=2, peak=40, at_s=100, duration_s=50)
    t = generate(open_loop(spike), 300.0, seed=6).arrival_s
    inside = np.sum((t >= 100) & (t < 150))
    assert within_sigmas(int(inside), 2000, 2000)
    assert within_sigmas(len(t) - int(inside), 500, 500)


def test_sine_half_periods():
    # Over the first half period the rate averages mean + 2A/pi, over the second mean - 2A/pi.
    rate = SineRate(mean=100.0, amplitude=50.0, period_s=1000.0)
    t = generate(open_loop(rate), 1000.0, seed=7).arrival_s
    first = 100 * 500 + 50 * 1000 / math.pi
    second = 100 * 500 - 50 * 1000 / math.pi
    assert within_sigmas(int(np.sum(t < 500)), first, first)
    assert within_sigmas(int(np.sum(t >= 500)), second, second)


def test_sine_clipped_at_zero():
    # amplitude > mean: the rate is clipped to 0, so no arrivals while mean + A sin < 0.
    rate = SineRate(mean=10.0, amplitude=20.0, period_s=120.0)
    t = generate(open_loop(rate), 1200.0, seed=8).arrival_s
    phase = (t % 120.0) / 120.0
    # sin(2 pi x) < -0.5 for x in (7/12, 11/12).
    assert not np.any((phase > 7 / 12 + 1e-3) & (phase < 11 / 12 - 1e-3))


def test_deterministic_under_seed():
    spec = open_loop(8.0, "gamma", cv=2.0, isl=LengthDist("lognormal", mean=3000, cv=0.5))
    a, b, c = generate(spec, 600, 11), generate(spec, 600, 11), generate(spec, 600, 12)
    assert np.array_equal(a.arrival_s, b.arrival_s) and np.array_equal(a.isl, b.isl)
    assert not np.array_equal(a.arrival_s[:100], c.arrival_s[:100])


def test_registry_names():
    assert set(ARRIVALS) == {"poisson", "gamma", "constant"}
    assert set(TRACE_FORMATS) == {"azure", "mooncake", "burstgpt"}


# ---------------------------------------------------------------------------
# Lengths


def test_lognormal_mean_and_cv():
    x = sample_lengths(LengthDist("lognormal", mean=3000, cv=0.5), 200_000, make_rng(1))
    assert x.dtype == np.int64
    assert np.mean(x) == pytest.approx(3000, rel=0.02)
    assert cv(x) == pytest.approx(0.5, rel=0.02)


def test_uniform_bounds_and_mean():
    x = sample_lengths(LengthDist("uniform", low=10, high=20), 100_000, make_rng(2))
    assert x.min() == 10 and x.max() == 20
    assert np.mean(x) == pytest.approx(15, rel=0.01)


def test_min_max_clipping():
    d = LengthDist("lognormal", mean=1000, cv=2.0, min=50, max=4000)
    x = sample_lengths(d, 50_000, make_rng(3))
    assert x.min() == 50 and x.max() == 4000


def test_empirical_from_lines_and_csv_column(tmp_path):
    (tmp_path / "l.txt").write_text("# token counts\n10\n20\n\n30\n")
    x = sample_lengths(LengthDist("empirical", path=tmp_path / "l.txt"), 30_000, make_rng(4))
    values, counts = np.unique(x, return_counts=True)
    assert list(values) == [10, 20, 30]
    assert np.allclose(counts / 30_000, 1 / 3, atol=0.015)
    (tmp_path / "l.csv").write_text("a,tokens\nx,7\ny,9\n")
    d = LengthDist("empirical", path=tmp_path / "l.csv", column="tokens")
    assert set(sample_lengths(d, 100, make_rng(5))) == {7, 9}


def test_empirical_bad_line(tmp_path):
    (tmp_path / "l.txt").write_text("10\n20\nmany\n")
    with pytest.raises(ConfigError) as info:
        sample_lengths(LengthDist("empirical", path=tmp_path / "l.txt"), 5, make_rng(0))
    assert (
        "l.txt" in str(info.value) and "line 3" in str(info.value) and "'many'" in str(info.value)
    )


def test_isl_scale_multiplies_at_arrival_time():
    spec = open_loop(10.0, isl_scale=StepRate(before=1.0, after=3.0, at_s=50.0))
    reqs = generate(spec, 100.0, seed=9)
    early = reqs.arrival_s < 50
    assert np.all(reqs.isl[early] == 100) and np.all(reqs.isl[~early] == 300)
    assert np.all(reqs.osl == 100)


def test_length_sampler():
    s = LengthSampler(
        LengthDist("lognormal", mean=2000, cv=0.5), FIXED, StepRate(1.0, 2.0, at_s=10.0)
    )
    rng = make_rng(1)
    early = np.array([s.sample(rng, t_s=0.0) for _ in range(4000)])
    late = np.array([s.sample(rng, t_s=20.0) for _ in range(4000)])
    assert np.all(early[:, 1] == 100)
    assert np.mean(early[:, 0]) == pytest.approx(2000, rel=0.05)
    assert np.mean(late[:, 0]) == pytest.approx(4000, rel=0.05)
    a, b = make_rng(7), make_rng(7)
    assert [s.sample(a) for _ in range(5)] == [s.sample(b) for _ in range(5)]


def test_requests_slice_and_len():
    r = Requests(np.array([0.0, 1.0, 2.0, 3.0]), np.arange(4), np.arange(4))
    part = r.slice(1.0, 3.0)
    assert len(r) == 4 and list(part.arrival_s) == [1.0, 2.0] and list(part.isl) == [1, 2]


# ---------------------------------------------------------------------------
# Shared traces


def test_azure_shared_trace(azure_trace):
    r = read_trace(TraceSpec(azure_trace, "azure"))
    assert len(r) == 19_366
    assert np.mean(r.isl) == pytest.approx(1155, abs=1)
    assert np.mean(r.osl) == pytest.approx(211, abs=1)
    assert r.arrival_s[0] == 0 and np.all(np.diff(r.arrival_s) >= 0)
    assert r.arrival_s[-1] == pytest.approx(3501.7, abs=0.1)


def test_mooncake_shared_trace(mooncake_trace):
    r = read_trace(TraceSpec(mooncake_trace, "mooncake"))
    assert len(r) == 12_031
    assert np.mean(r.isl) == pytest.approx(12_035, abs=1)
    assert np.mean(r.osl) == pytest.approx(342.6, abs=0.1)
    # Timestamps are in milliseconds: the trace spans about an hour.
    assert r.arrival_s[-1] == pytest.approx(3537.0, abs=1)


def test_trace_through_generate_cuts_and_scales_time(azure_trace):
    full = read_trace(TraceSpec(azure_trace, "azure"))
    spec = WorkloadSpec(trace=TraceSpec(azure_trace, "azure", time_scale=0.5))
    r = generate(spec, 600.0, seed=1)
    assert len(r) == int(np.sum(full.arrival_s < 1200.0))
    assert np.allclose(r.arrival_s, full.arrival_s[: len(r)] * 0.5)


# ---------------------------------------------------------------------------
# Small files of each format


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_azure_processed_small(tmp_path):
    p = write(
        tmp_path,
        "a.csv",
        "arrived_at,num_prefill_tokens,num_decode_tokens\n5.0,300,30\n2.5,100,10\n3.0,200,20\n",
    )
    r = read_trace(TraceSpec(p, "azure"))
    # Sorted by time and shifted so the first request arrives at 0.
    assert list(r.arrival_s) == [0.0, 0.5, 2.5]
    assert list(r.isl) == [100, 200, 300] and list(r.osl) == [10, 20, 30]


def test_azure_original_columns(tmp_path):
    p = write(
        tmp_path,
        "orig.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.5000000,374,44\n"
        "2023-11-16 18:15:47.0000000,396,109\n"
        "2023-11-16 18:16:46.5000000,879,55\n",
    )
    r = read_trace(TraceSpec(p, "azure"))
    assert np.allclose(r.arrival_s, [0.0, 0.5, 60.0])
    assert list(r.isl) == [374, 396, 879] and list(r.osl) == [44, 109, 55]


def test_mooncake_small(tmp_path):
    p = write(
        tmp_path,
        "m.jsonl",
        '{"timestamp": 1000, "input_length": 10, "output_length": 2, "hash_ids": [0]}\n'
        '{"timestamp": 3500, "input_length": 20, "output_length": 4, "hash_ids": [0, 1]}\n',
    )
    r = read_trace(TraceSpec(p, "mooncake"))
    assert list(r.arrival_s) == [0.0, 2.5] and list(r.isl) == [10, 20] and list(r.osl) == [2, 4]


def test_burstgpt_drops_failed_rows(tmp_path, caplog):
    p = write(
        tmp_path,
        "b.csv",
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "10,ChatGPT,472,18,490,Conversation log\n"
        "12,GPT-4,1087,0,1087,Conversation log\n"
        "13.5,ChatGPT,200,50,250,API log\n",
    )
    with caplog.at_level(logging.INFO, logger="scenario.workload"):
        r = read_trace(TraceSpec(p, "burstgpt"))
    assert list(r.arrival_s) == [0.0, 3.5] and list(r.isl) == [472, 200] and list(r.osl) == [18, 50]
    assert "dropped 1 of 3 rows with 0 response tokens" in caplog.text


@pytest.mark.parametrize(
    "fmt, text, line, shown",
    [
        ("azure", "arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,1\n1,abc,2\n", 3, "'abc'"),
        (
            "azure",
            "arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,1\n1,2,2\n2,-5,1\n",
            4,
            "'-5'",
        ),
        ("azure", "arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,1\n1,2\n", 3, "''"),
        (
            "azure",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,1,1\nyesterday,1,1\n",
            3,
            "'yesterday'",
        ),
        ("azure", "time,in,out\n0,1,1\n", 1, "expected columns"),
        (
            "azure",
            "arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,1\n1,2,2,9\n",
            3,
            "4 fields; expected 3",
        ),
        (
            "mooncake",
            '{"timestamp": 0, "input_length": 1, "output_length": 1}\n{"timestamp": 5,\n',
            2,
            "invalid JSON",
        ),
        ("mooncake", '{"timestamp": 0, "input_length": 1}\n', 1, "output_length is None"),
        ("mooncake", '{"timestamp": 0, "input_length": -1, "output_length": 1}\n', 1, "-1"),
        (
            "burstgpt",
            "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n1,m,x,1,1,a\n",
            2,
            "'x'",
        ),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, fmt, text, line, shown):
    p = write(tmp_path, "bad-trace.txt", text)
    with pytest.raises(ConfigError) as info:
        read_trace(TraceSpec(p, fmt))
    msg = str(info.value)
    assert "bad-trace.txt" in msg and f"line {line}" in msg and shown in msg


# ---------------------------------------------------------------------------
# time_scale, rate_scale, start_s, max_requests


@pytest.fixture
def even_trace(tmp_path) -> Path:
    """10,000 requests one second apart, ISL = index + 1."""
    rows = "\n".join(f"{i},{i + 1},5" for i in range(10_000))
    return write(
        tmp_path, "even.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n" + rows + "\n"
    )


def test_time_scale(even_trace):
    r = read_trace(TraceSpec(even_trace, "azure", time_scale=0.25))
    assert np.allclose(r.arrival_s, np.arange(10_000) * 0.25)


def test_rate_scale_two_duplicates_every_request(even_trace):
    r = read_trace(TraceSpec(even_trace, "azure", rate_scale=2.0), seed=1)
    assert len(r) == 20_000
    assert np.all(np.bincount(r.isl)[1:] == 2)  # every request exactly twice
    assert np.all(np.diff(r.arrival_s) >= 0)
    # Copies are jittered within one mean gap (1 s) after the original.
    orig = r.isl - 1.0
    assert np.all((r.arrival_s >= orig) & (r.arrival_s < orig + 1.0))
    assert np.sum(r.arrival_s == orig) == 10_000  # the originals keep their times


@pytest.mark.parametrize("scale", [0.3, 2.5])
def test_rate_scale_fractional_counts(even_trace, scale):
    r = read_trace(TraceSpec(even_trace, "azure", rate_scale=scale), seed=2)
    frac = scale - math.floor(scale)
    assert within_sigmas(len(r), 10_000 * scale, 10_000 * frac * (1 - frac))


def test_rate_scale_deterministic_under_seed(even_trace):
    spec = TraceSpec(even_trace, "azure", rate_scale=0.5)
    a, b, c = read_trace(spec, seed=3), read_trace(spec, seed=3), read_trace(spec, seed=4)
    assert np.array_equal(a.arrival_s, b.arrival_s) and np.array_equal(a.isl, b.isl)
    assert not np.array_equal(a.isl[:50], c.isl[:50])


def test_start_and_max_requests(even_trace):
    r = read_trace(TraceSpec(even_trace, "azure", start_s=100.0, time_scale=2.0, max_requests=50))
    assert len(r) == 50
    assert r.arrival_s[0] == 0.0 and r.arrival_s[-1] == 98.0
    assert r.isl[0] == 101  # the request that arrived at trace second 100


def test_generate_trace_isl_scale(even_trace):
    spec = WorkloadSpec(
        trace=TraceSpec(even_trace, "azure"), isl_scale=StepRate(1.0, 2.0, at_s=5.0)
    )
    r = generate(spec, 10.0, seed=0)
    assert list(r.isl) == [1, 2, 3, 4, 5, 12, 14, 16, 18, 20]
