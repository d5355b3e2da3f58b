"""Frontend metric names and histogram buckets shared by the simulator, the emulator and
the Prometheus reader (the names are NVIDIA Dynamo's frontend metrics).

Buckets are the ones production exports, so a policy sees the coarse quantiles it would
see there: Dynamo 1.6's frontend layout by default, vLLM's on request, or planlab's finer
log buckets (an operator can configure finer ones: Dynamo's DYN_METRICS_*_{MIN,MAX,COUNT}).
"""

from __future__ import annotations

import math

import numpy as np

PREFIX = "dynamo_frontend"

REQUESTS_TOTAL = f"{PREFIX}_requests_total"
# Requests admitted (counted when the handler starts): Dynamo 1.6's planner demand signal
# (dynamo/planner/monitoring/traffic_metrics.py, get_avg_request_count).
REQUESTS_STARTED_TOTAL = f"{PREFIX}_requests_started_total"
TTFT = f"{PREFIX}_time_to_first_token_seconds"
ITL = f"{PREFIX}_inter_token_latency_seconds"
REQUEST_DURATION = f"{PREFIX}_request_duration_seconds"
ISL = f"{PREFIX}_input_sequence_tokens"
OSL = f"{PREFIX}_output_sequence_tokens"
INFLIGHT = f"{PREFIX}_inflight_requests"  # deprecated in Dynamo 1.6 for active_requests
ACTIVE = f"{PREFIX}_active_requests"
QUEUED = f"{PREFIX}_queued_requests"
OUTPUT_TOKENS_TOTAL = f"{PREFIX}_output_tokens_total"

HISTOGRAMS = (TTFT, ITL, REQUEST_DURATION, ISL, OSL)
COUNTERS = (REQUESTS_TOTAL, REQUESTS_STARTED_TOTAL, OUTPUT_TOKENS_TOTAL)
GAUGES = (INFLIGHT, ACTIVE, QUEUED)


def _round_sig(x: float, digits: int = 2) -> float:
    if x == 0:
        return 0.0
    scale = 10.0 ** (digits - 1 - math.floor(math.log10(abs(x))))
    return round(x * scale) / scale


def dynamo_log_buckets(lo: float, hi: float, count: int) -> tuple[float, ...]:
    """Dynamo's generate_log_buckets (lib/llm/src/http/service/metrics.rs): 0, then
    count - 1 bounds log-spaced from lo to hi, the first one step above lo, each rounded to
    two significant figures, duplicates dropped."""
    out = [0.0]
    for i in range(1, count):
        v = _round_sig(math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * i / (count - 1)))
        if v != out[-1]:
            out.append(v)
    return tuple(out)


def _log_buckets(lo: float, hi: float, n: int, digits: int = 4) -> tuple[float, ...]:
    """n log-spaced upper bounds from lo to hi, rounded so they print cleanly."""
    edges = np.geomspace(lo, hi, n)
    return tuple(float(f"{e:.{digits}g}") for e in edges)


def _one_two_five(hi: float) -> tuple[float, ...]:
    """vLLM's build_1_2_5_buckets: 1, 2, 5, 10, 20, 50, ... up to hi."""
    out: list[float] = []
    exp = 0
    while True:
        for m in (1, 2, 5):
            v = float(m * 10**exp)
            if v > hi:
                return tuple(out)
            out.append(v)
        exp += 1


# Upper bounds (le) without +Inf, per layout. Dynamo 1.6's defaults are in Metrics::new of
# lib/llm/src/http/service/metrics.rs (ai-dynamo runtime): TTFT (0.001, 480, 18), ITL
# (0.001, 2, 13), request duration (1, 512, 10), ISL (50, 128000, 12), OSL (50, 32000, 10).
BUCKET_SETS: dict[str, dict[str, tuple[float, ...]]] = {
    "dynamo": {
        TTFT: dynamo_log_buckets(0.001, 480.0, 18),
        ITL: dynamo_log_buckets(0.001, 2.0, 13),
        REQUEST_DURATION: dynamo_log_buckets(1.0, 512.0, 10),
        ISL: dynamo_log_buckets(50.0, 128000.0, 12),
        OSL: dynamo_log_buckets(50.0, 32000.0, 10),
    },
    # vLLM 0.32's (vllm/v1/metrics/loggers.py): histogram_time_to_first_token,
    # histogram_inter_token_latency, histogram_e2e_time_request (request_latency_buckets),
    # histogram_num_prompt_tokens / generation_tokens (1-2-5 up to max_model_len; 128k here).
    "vllm": {
        TTFT: (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0)
        + (7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0),
        ITL: (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)
        + (7.5, 10.0, 20.0, 40.0, 80.0),
        REQUEST_DURATION: (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0)
        + (40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0),
        ISL: _one_two_five(131072.0),
        OSL: _one_two_five(131072.0),
    },
    # planlab's fine log buckets (what an operator gets by raising the *_COUNT settings).
    "fine": {
        TTFT: _log_buckets(0.002, 480.0, 48),
        ITL: _log_buckets(0.002, 2.0, 40),
        REQUEST_DURATION: _log_buckets(1.9, 260.0, 16),
        ISL: _log_buckets(100.0, 131072.0, 24, digits=6),
        OSL: _log_buckets(100.0, 131072.0, 24, digits=6),
    },
}

DEFAULT_BUCKETS = "dynamo"
BUCKETS: dict[str, tuple[float, ...]] = BUCKET_SETS[DEFAULT_BUCKETS]
