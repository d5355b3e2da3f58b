"""Window statistics from the frontend metrics, and the per-interval Observation the
policies read; one builder serves the simulator and the live Prometheus reader alike."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class HistogramDelta:
    """Increase of one Prometheus histogram over a window.

    `upper_bounds` are the finite `le` bounds in increasing order; `cumulative` holds the
    increase of each `le` bucket (cumulative, as Prometheus stores them) followed by the
    `+Inf` bucket, so len(cumulative) == len(upper_bounds) + 1.
    """

    upper_bounds: tuple[float, ...]
    cumulative: tuple[float, ...]
    sum: float
    count: float

    @property
    def mean(self) -> float | None:
        if not self.count > 0 or not math.isfinite(self.sum):
            return None
        return self.sum / self.count

    def quantile(self, q: float) -> float | None:
        return histogram_quantile(q, self.upper_bounds, self.cumulative)

    def cv(self) -> float | None:
        """Coefficient of variation, from each bucket's geometric midpoint (the +Inf bucket
        counts at its lower bound); scaled so the mean equals sum/count. None when empty."""
        mean = self.mean
        if mean is None or mean <= 0 or not self.upper_bounds:
            return None
        counts, lo, second, total = [], 0.0, 0.0, 0.0
        prev = 0.0
        for i, c in enumerate(self.cumulative):
            n = max(0.0, c - prev)
            prev = max(prev, c)
            if i < len(self.upper_bounds):
                hi = self.upper_bounds[i]
                mid = math.sqrt(lo * hi) if lo > 0 else hi / 2
                lo = hi
            else:
                mid = self.upper_bounds[-1]
            counts.append(n)
            total += n * mid
            second += n * mid * mid
        n_all = sum(counts)
        if n_all <= 0 or total <= 0:
            return None
        m = total / n_all
        var = max(0.0, second / n_all - m * m)
        return math.sqrt(var) / m


def histogram_quantile(
    q: float, upper_bounds: tuple[float, ...], cumulative: tuple[float, ...]
) -> float | None:
    """The q-quantile the way Prometheus' `histogram_quantile` computes it.

    Linear interpolation inside the bucket holding rank q*count; the lowest bucket
    starts at 0 (all our metrics are non-negative); a rank in the +Inf bucket returns
    the highest finite bound. None when the histogram is empty or not finite.
    """
    if len(cumulative) != len(upper_bounds) + 1:
        raise ValueError("cumulative needs one entry per finite bound plus +Inf")
    total = cumulative[-1]
    if not total > 0 or not math.isfinite(total):
        return None
    if q <= 0:
        return 0.0
    if q >= 1:
        return float(upper_bounds[-1]) if upper_bounds else None
    rank = q * total
    # Prometheus repairs small non-monotonicities from scrape timing by taking a running max.
    prev_count = 0.0
    prev_bound = 0.0
    running = 0.0
    for bound, count in zip(upper_bounds, cumulative[:-1], strict=True):
        running = max(running, count)
        if running >= rank:
            in_bucket = running - prev_count
            if in_bucket <= 0:
                return float(bound)
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / in_bucket
        prev_count, prev_bound = running, bound
    return float(upper_bounds[-1]) if upper_bounds else None


def sparse_cdf(
    upper_bounds: tuple[float, ...], cumulative: tuple[float, ...], scale: float = 1.0
) -> tuple[tuple[float, float], ...] | None:
    """The histogram as (upper bound x scale, share at or below it) at the finite bounds
    where the share rises, each with the bound before it (what interpolation needs); the
    share the last pair leaves short of 1 lies in +Inf. None when empty. Compact enough
    to keep in every decision record."""
    if len(cumulative) != len(upper_bounds) + 1:
        raise ValueError("cumulative needs one entry per finite bound plus +Inf")
    total = cumulative[-1]
    if not total > 0 or not math.isfinite(total):
        return None
    keep: list[tuple[float, float]] = []
    running = prev = 0.0
    bounds = [float(f"{b * scale:.12g}") for b in upper_bounds]  # 80.1, not 80.10000000000001
    for i, count in enumerate(cumulative[:-1]):
        running = max(running, count)  # Prometheus' repair of scrape-timing dips
        share = min(1.0, running / total)
        if share > prev:
            if i > 0 and (not keep or keep[-1][0] != bounds[i - 1]):
                keep.append((bounds[i - 1], prev))
            keep.append((bounds[i], share))
            prev = share
    return tuple(keep)


def cdf_fraction_above(cdf: tuple[tuple[float, float], ...] | None, x: float) -> float | None:
    """1 - F(x) for a sparse_cdf: linear inside the bucket holding x (the lowest bucket
    starts at 0), past the last bound whatever lies in +Inf. None without data."""
    if cdf is None:
        return None
    lo_bound, lo_share = 0.0, 0.0
    for bound, share in cdf:
        if x < bound:
            frac = max(0.0, (x - lo_bound) / (bound - lo_bound))
            return 1.0 - (lo_share + (share - lo_share) * frac)
        lo_bound, lo_share = bound, share
    return 1.0 - lo_share


def _quantile_slices() -> tuple[tuple[float, float], ...]:
    """(probability at the middle, weight) of probability slices that get finer toward
    the upper tail, where SLA misses live; the weights sum to 1."""
    edges = [0.0, 0.25, 0.5, 0.7, 0.8, 0.9]
    edges += [0.9 + 0.01 * i for i in range(1, 10)]
    edges += [0.99 + 0.001 * i for i in range(1, 10)]
    edges += [0.999, 0.9995, 0.9999, 1.0]
    return tuple(((a + b) / 2, b - a) for a, b in zip(edges, edges[1:], strict=False))


# The distribution of input lengths is reported at these slices (Observation.isl_quantiles).
QUANTILE_SLICES = _quantile_slices()


@dataclass(frozen=True)
class WindowStats:
    """What a MetricsSource returns for the window (t_s - window_s, t_s].

    Each field is None when the source could not get it (Prometheus down, empty
    result, NaN, stale target); `errors` says why in words.
    """

    t_s: float
    window_s: float
    requests: float | None
    ttft_s: HistogramDelta | None
    itl_s: HistogramDelta | None
    duration_s: HistogramDelta | None
    isl_tokens: HistogramDelta | None
    osl_tokens: HistogramDelta | None
    inflight: float | None = None
    queued: float | None = None
    errors: tuple[str, ...] = ()
    # Increase of requests_started_total (requests admitted, Dynamo 1.6's demand signal);
    # None where the frontend does not export it (then `requests`, finished ones, stands in).
    requests_started: float | None = None


@dataclass(frozen=True)
class Observation:
    """One adjustment interval as the policies see it. Times in the units their names say.

    A field is None when it could not be measured; `missing` lists those that a policy
    needs (for example "ttft" when requests arrived but no TTFT was recorded).
    """

    t_s: float
    interval_s: float
    num_req: float | None
    request_rate: float | None
    isl_mean: float | None
    osl_mean: float | None
    ttft_mean_ms: float | None
    ttft_p50_ms: float | None
    ttft_p90_ms: float | None
    ttft_p99_ms: float | None
    itl_mean_ms: float | None
    itl_p50_ms: float | None
    itl_p90_ms: float | None
    itl_p99_ms: float | None
    request_duration_mean_s: float | None
    inflight: float | None = None
    queued: float | None = None
    # Requests admitted in the interval (requests_started_total); None where not exported.
    num_req_started: float | None = None
    isl_cv: float | None = None
    # ISL at the middle of each QUANTILE_SLICES slice (from the histogram), for policies
    # that need the shape of the distribution and not only its mean.
    isl_quantiles: tuple[float, ...] | None = None
    # The window's TTFT distribution, (bound ms, share <= bound) where it changes (see
    # sparse_cdf; cdf_fraction_above reads it): how many requests missed a TTFT target.
    ttft_cdf_ms: tuple[tuple[float, float], ...] | None = None
    missing: tuple[str, ...] = field(default_factory=tuple)
    errors: tuple[str, ...] = field(default_factory=tuple)

    @property
    def idle(self) -> bool:
        """True when the interval was measured and saw no requests."""
        return self.num_req is not None and self.num_req <= 0

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _ms(x: float | None) -> float | None:
    return None if x is None else x * 1000.0


def _slice_quantiles(h: HistogramDelta | None) -> tuple[float, ...] | None:
    if h is None:
        return None
    values = [h.quantile(q) for q, _ in QUANTILE_SLICES]
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    return tuple(float(v) for v in values)


def build_observation(stats: WindowStats) -> Observation:
    """The Observation for one window; the same function in the sim and live."""
    num_req = _finite(stats.requests)
    if num_req is not None:
        num_req = max(0.0, num_req)

    def mean(h: HistogramDelta | None) -> float | None:
        return None if h is None else _finite(h.mean)

    def quant(h: HistogramDelta | None, q: float) -> float | None:
        return None if h is None else _finite(h.quantile(q))

    obs = dict(
        t_s=stats.t_s,
        interval_s=stats.window_s,
        num_req=num_req,
        request_rate=None if num_req is None else num_req / stats.window_s,
        isl_mean=mean(stats.isl_tokens),
        osl_mean=mean(stats.osl_tokens),
        ttft_mean_ms=_ms(mean(stats.ttft_s)),
        ttft_p50_ms=_ms(quant(stats.ttft_s, 0.50)),
        ttft_p90_ms=_ms(quant(stats.ttft_s, 0.90)),
        ttft_p99_ms=_ms(quant(stats.ttft_s, 0.99)),
        itl_mean_ms=_ms(mean(stats.itl_s)),
        itl_p50_ms=_ms(quant(stats.itl_s, 0.50)),
        itl_p90_ms=_ms(quant(stats.itl_s, 0.90)),
        itl_p99_ms=_ms(quant(stats.itl_s, 0.99)),
        request_duration_mean_s=mean(stats.duration_s),
        inflight=_finite(stats.inflight),
        queued=_finite(stats.queued),
        num_req_started=None
        if _finite(stats.requests_started) is None
        else max(0.0, stats.requests_started),
        isl_cv=None if stats.isl_tokens is None else _finite(stats.isl_tokens.cv()),
        isl_quantiles=_slice_quantiles(stats.isl_tokens),
        ttft_cdf_ms=(
            None
            if stats.ttft_s is None
            else sparse_cdf(stats.ttft_s.upper_bounds, stats.ttft_s.cumulative, 1000.0)
        ),
    )
    missing: list[str] = []
    if num_req is None:
        missing.append("num_req")
    elif num_req > 0:
        # Requests arrived: every per-request statistic should be there.
        for key, name in (
            ("isl_mean", "isl"),
            ("osl_mean", "osl"),
            ("ttft_mean_ms", "ttft"),
            ("itl_mean_ms", "itl"),
            ("request_duration_mean_s", "request_duration"),
        ):
            if obs[key] is None:
                missing.append(name)
    return Observation(**obs, missing=tuple(missing), errors=tuple(stats.errors))
