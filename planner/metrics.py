"""Frontend metric names and histogram buckets shared by the simulator, the emulator and
the Prometheus reader (the names are NVIDIA Dynamo's frontend metrics)."""

from __future__ import annotations

import numpy as np

PREFIX = "dynamo_frontend"

REQUESTS_TOTAL = f"{PREFIX}_requests_total"
TTFT = f"{PREFIX}_time_to_first_token_seconds"
ITL = f"{PREFIX}_inter_token_latency_seconds"
REQUEST_DURATION = f"{PREFIX}_request_duration_seconds"
ISL = f"{PREFIX}_input_sequence_tokens"
OSL = f"{PREFIX}_output_sequence_tokens"
INFLIGHT = f"{PREFIX}_inflight_requests"
QUEUED = f"{PREFIX}_queued_requests"
OUTPUT_TOKENS_TOTAL = f"{PREFIX}_output_tokens_total"

HISTOGRAMS = (TTFT, ITL, REQUEST_DURATION, ISL, OSL)
COUNTERS = (REQUESTS_TOTAL, OUTPUT_TOKENS_TOTAL)
GAUGES = (INFLIGHT, QUEUED)


def _log_buckets(lo: float, hi: float, n: int, digits: int = 4) -> tuple[float, ...]:
    """n log-spaced upper bounds from lo to hi, rounded so they print cleanly."""
    edges = np.geomspace(lo, hi, n)
    return tuple(float(f"{e:.{digits}g}") for e in edges)


# Upper bounds (le) without +Inf; log-spaced as ARCHITECTURE.md fixes them.
BUCKETS: dict[str, tuple[float, ...]] = {
    TTFT: _log_buckets(0.002, 480.0, 48),
    ITL: _log_buckets(0.002, 2.0, 40),
    REQUEST_DURATION: _log_buckets(1.9, 260.0, 16),
    ISL: _log_buckets(100.0, 131072.0, 24, digits=6),
    OSL: _log_buckets(100.0, 131072.0, 24, digits=6),
}
