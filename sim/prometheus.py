"""The simulated frontend's Prometheus metrics, a scrape store, and a MetricsSource that answers
window queries from the store with Prometheus' own `increase()` arithmetic.

Which Prometheus: the default, ``flavor="2.42"``, is what Prometheus 2.x up to 2.50 does and
what the bundled ``/usr/bin/prometheus`` 2.42 (used by the emulator) does:

* range selection ``x[w]`` at time t takes the samples with t - w <= ts <= t (closed at both
  ends; https://prometheus.io/docs/prometheus/2.42/querying/basics/#range-vector-selectors);
* ``increase()`` is ``extrapolatedRate`` in promql/functions.go: needs two samples, adds the
  value before every drop (a counter reset), extrapolates to a window edge when the gap to
  it is below 1.1 average sample intervals and by half an interval otherwise, and never
  extrapolates a counter below zero (the start gap is cut to the extrapolated zero point;
  in 2.42 this cut happens before the 1.1-interval test).

``flavor="3"`` follows Prometheus >= 3.0: ranges are left-open, t - w < ts <= t
(https://prometheus.io/docs/prometheus/latest/migration/, "PromQL: range selectors and the
lookback delta are now left-open"), and the zero-point cut is applied after the 1.1-interval
test (prometheus/prometheus#13725, released in 2.51).
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Sequence
from itertools import accumulate

import numpy as np

from planner import metrics as M
from planner.observation import HistogramDelta, WindowStats

log = logging.getLogger(__name__)

STATUSES = ("success", "error")
"""Values of the `status` label of dynamo_frontend_requests_total."""

FLAVORS = ("2.42", "3")

LOOKBACK_S = 300.0
"""Prometheus' default lookback delta: a gauge sample older than this is stale."""


class _Histogram:
    """One classic Prometheus histogram: non-cumulative bucket counts (last is +Inf), sum, count.

    The counts are a Python list, not a numpy array: one `list[i] += n` is about a third
    cheaper than the numpy scalar update and allocates nothing; the scrape converts to numpy.
    """

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: Sequence[float]):
        self.bounds = [float(b) for b in bounds]
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, n: int = 1) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le is inclusive).
        self.counts[bisect_left(self.bounds, value)] += n
        self.sum += value * n
        self.count += n

    def reset(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0


class FrontendMetrics:
    """The frontend's counters, gauges and histograms (names of planner.metrics; buckets of
    one of its BUCKET_SETS, Dynamo 1.6's by default)."""

    def __init__(self, buckets: dict[str, tuple[float, ...]] | None = None) -> None:
        self.buckets = M.BUCKETS if buckets is None else buckets
        self.histograms: dict[str, _Histogram] = {
            name: _Histogram(self.buckets[name]) for name in M.HISTOGRAMS
        }
        self._ttft = self.histograms[M.TTFT]
        self._itl = self.histograms[M.ITL]
        self._duration = self.histograms[M.REQUEST_DURATION]
        self._isl = self.histograms[M.ISL]
        self._osl = self.histograms[M.OSL]
        self.requests: dict[str, int] = dict.fromkeys(STATUSES, 0)
        self.requests_started = 0  # admitted (Dynamo 1.6's requests_started_total)
        self.output_tokens = 0
        self.inflight = 0  # exported as inflight_requests and as active_requests
        self.queued = 0
        self.restarts = 0

    # The observe_* bodies repeat _Histogram.observe: a call less on the simulator's hot path.

    def observe_ttft(self, seconds: float) -> None:
        h = self._ttft
        h.counts[bisect_left(h.bounds, seconds)] += 1
        h.sum += seconds
        h.count += 1

    def observe_itl(self, seconds: float, count: int = 1) -> None:
        """`count` token gaps of `seconds` each (one decode step for a whole batch)."""
        h = self._itl
        h.counts[bisect_left(h.bounds, seconds)] += count
        h.sum += seconds * count
        h.count += count

    def observe_duration(self, seconds: float) -> None:
        h = self._duration
        h.counts[bisect_left(h.bounds, seconds)] += 1
        h.sum += seconds
        h.count += 1

    def observe_isl(self, tokens: float) -> None:
        h = self._isl
        h.counts[bisect_left(h.bounds, tokens)] += 1
        h.sum += tokens
        h.count += 1

    def observe_osl(self, tokens: float) -> None:
        h = self._osl
        h.counts[bisect_left(h.bounds, tokens)] += 1
        h.sum += tokens
        h.count += 1

    def inc_requests(self, status: str = "success") -> None:
        if status not in self.requests:
            raise ValueError(f"request status {status!r}: expected one of {STATUSES}")
        self.requests[status] += 1

    def inc_output_tokens(self, n: int) -> None:
        self.output_tokens += n

    def set_inflight(self, n: float) -> None:
        self.inflight = n

    def set_queued(self, n: float) -> None:
        self.queued = n

    def reset(self) -> None:
        """Everything back to zero, as when the frontend process restarts."""
        for h in self.histograms.values():
            h.reset()
        self.requests = dict.fromkeys(STATUSES, 0)
        self.requests_started = 0
        self.output_tokens = 0
        self.inflight = 0
        self.queued = 0
        self.restarts += 1


def _layout(bounds: dict[str, tuple[float, ...]]) -> tuple[dict[str, slice], dict[str, int], int]:
    """Column layout of a scrape row: name -> slice for histograms' cumulative buckets
    (including +Inf); name -> column for every scalar series."""
    col = 0
    scalar: dict[str, int] = {}
    buckets: dict[str, slice] = {}
    for status in STATUSES:
        scalar[f"{M.REQUESTS_TOTAL}{{status={status}}}"] = col
        col += 1
    scalar[M.REQUESTS_STARTED_TOTAL] = col
    col += 1
    scalar[M.OUTPUT_TOKENS_TOTAL] = col
    col += 1
    for name in M.HISTOGRAMS:
        n = len(bounds[name]) + 1
        buckets[name] = slice(col, col + n)
        col += n
        scalar[f"{name}_sum"] = col
        scalar[f"{name}_count"] = col + 1
        col += 2
    for name in M.GAUGES:
        scalar[name] = col
        col += 1
    return buckets, scalar, col


class ScrapeStore:
    """Every series of a FrontendMetrics sampled at each scrape, in one growing float64 matrix
    (one row per scrape) with the scrape times in integer milliseconds, as Prometheus keeps them."""

    def __init__(self, capacity: int = 1024, buckets: dict[str, tuple[float, ...]] | None = None):
        self.buckets = M.BUCKETS if buckets is None else buckets
        self.bucket_cols, self.cols, self.width = _layout(self.buckets)
        self._status_cols = [(s, self.cols[f"{M.REQUESTS_TOTAL}{{status={s}}}"]) for s in STATUSES]
        self._hist_cols = {
            name: (sl, self.cols[f"{name}_sum"], self.cols[f"{name}_count"])
            for name, sl in self.bucket_cols.items()
        }
        capacity = max(2, int(capacity))
        self._t_ms = np.zeros(capacity, dtype=np.int64)
        self._values = np.zeros((capacity, self.width), dtype=np.float64)
        self.n = 0

    def __len__(self) -> int:
        return self.n

    @property
    def times_ms(self) -> np.ndarray:
        return self._t_ms[: self.n]

    @property
    def values(self) -> np.ndarray:
        return self._values[: self.n]

    def series(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(times_s, values) of one scalar series, e.g. 'dynamo_frontend_requests_total{status=success}'."""
        return self.times_ms / 1000.0, self.values[:, self.cols[name]]

    def scrape(self, t_s: float, metrics: FrontendMetrics) -> None:
        t_ms = int(round(t_s * 1000.0))
        if self.n and t_ms <= self._t_ms[self.n - 1]:
            raise ValueError(f"scrape at {t_s} s is not after the previous one")
        if self.n == len(self._t_ms):
            cap = 2 * len(self._t_ms)
            self._t_ms = np.resize(self._t_ms, cap)
            values = np.zeros((cap, self.width), dtype=np.float64)
            values[: self.n] = self._values[: self.n]
            self._values = values
        row = self._values[self.n]
        cols = self.cols
        for status, col in self._status_cols:
            row[col] = metrics.requests[status]
        row[cols[M.REQUESTS_STARTED_TOTAL]] = metrics.requests_started
        row[cols[M.OUTPUT_TOKENS_TOTAL]] = metrics.output_tokens
        hist_cols = self._hist_cols
        for name, h in metrics.histograms.items():
            buckets, sum_col, count_col = hist_cols[name]
            row[buckets] = list(accumulate(h.counts))
            row[sum_col] = h.sum
            row[count_col] = h.count
        row[cols[M.INFLIGHT]] = metrics.inflight
        row[cols[M.ACTIVE]] = metrics.inflight
        row[cols[M.QUEUED]] = metrics.queued
        self._t_ms[self.n] = t_ms
        self.n += 1

    def select(self, t_s: float, window_s: float, flavor: str = "2.42") -> slice:
        """The rows a range selector `[window_s]` evaluated at t_s sees."""
        start_ms, end_ms = _range_ms(t_s, window_s)
        return _select(self.times_ms, start_ms, end_ms, flavor)


def _range_ms(t_s: float, window_s: float) -> tuple[int, int]:
    end_ms = int(round(t_s * 1000.0))
    return end_ms - int(round(window_s * 1000.0)), end_ms


def _select(t_ms: np.ndarray, start_ms: int, end_ms: int, flavor: str) -> slice:
    if flavor not in FLAVORS:
        raise ValueError(f"Prometheus flavor {flavor!r}: expected one of {FLAVORS}")
    side = "left" if flavor == "2.42" else "right"  # 3.x excludes a sample at start_ms
    lo = int(np.searchsorted(t_ms, start_ms, side=side))
    hi = int(np.searchsorted(t_ms, end_ms, side="right"))
    return slice(lo, hi)


def _increase(
    t_ms: np.ndarray, values: np.ndarray, start_ms: int, end_ms: int, flavor: str
) -> np.ndarray:
    """increase() of each column of `values` (rows: the >= 2 samples inside the range)."""
    n = len(t_ms)
    first = values[0]
    result = values[-1] - first
    prev = values[:-1]
    # A drop is a counter reset: the counter restarted from zero, so add what it had reached.
    result = result + np.where(values[1:] < prev, prev, 0.0).sum(axis=0)

    to_start = (int(t_ms[0]) - start_ms) / 1000.0
    to_end = (end_ms - int(t_ms[-1])) / 1000.0
    sampled = (int(t_ms[-1]) - int(t_ms[0])) / 1000.0
    avg = sampled / (n - 1)
    threshold = 1.1 * avg

    # The zero point: where the line through the samples would cross zero before the first one.
    can_zero = (result > 0) & (first >= 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        to_zero = np.where(can_zero, sampled * first / np.where(can_zero, result, 1.0), np.inf)
    if flavor == "2.42":
        start = np.minimum(to_zero, to_start)
        start = np.where(start < threshold, start, avg / 2)
    else:
        start = to_start if to_start < threshold else avg / 2
        start = np.minimum(to_zero, start)
    end = to_end if to_end < threshold else avg / 2
    return result * ((sampled + start + end) / sampled)


def prom_increase(
    times: Sequence[float] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    t_s: float,
    window_s: float,
    *,
    flavor: str = "2.42",
) -> float | None:
    """Prometheus' `increase(x[window_s])` evaluated at t_s over samples (times in seconds,
    strictly increasing; Prometheus' millisecond resolution). None with fewer than two
    samples in the range, as Prometheus returns no value then."""
    t_ms = np.rint(np.asarray(times, dtype=np.float64) * 1000.0).astype(np.int64)
    v = np.asarray(values, dtype=np.float64)
    if t_ms.shape != v.shape or t_ms.ndim != 1:
        raise ValueError("times and values must be 1-D and of the same length")
    if len(t_ms) > 1 and not np.all(np.diff(t_ms) > 0):
        raise ValueError("sample times must be strictly increasing")
    start_ms, end_ms = _range_ms(t_s, window_s)
    sel = _select(t_ms, start_ms, end_ms, flavor)
    if sel.stop - sel.start < 2:
        return None
    return float(_increase(t_ms[sel], v[sel, None], start_ms, end_ms, flavor)[0])


class SimMetricsSource:
    """The MetricsSource of the simulator: window statistics from a ScrapeStore, computed as
    PromQL's increase() would compute them from the same samples.

    `requests` is the increase of dynamo_frontend_requests_total summed over all statuses
    (success and error), as Dynamo's planner reads it: failed requests are load too.
    Gauges are the last sample at or before t_s within Prometheus' 5-minute lookback.
    """

    def __init__(self, store: ScrapeStore, *, flavor: str = "2.42", lookback_s: float = LOOKBACK_S):
        if flavor not in FLAVORS:
            raise ValueError(f"Prometheus flavor {flavor!r}: expected one of {FLAVORS}")
        self.store = store
        self.flavor = flavor
        self.lookback_s = lookback_s

    def _gauges(self, t_s: float) -> tuple[float | None, float | None]:
        store = self.store
        end_ms = int(round(t_s * 1000.0))
        i = int(np.searchsorted(store.times_ms, end_ms, side="right")) - 1
        if i < 0 or end_ms - int(store.times_ms[i]) > self.lookback_s * 1000.0:
            return None, None
        row = store.values[i]
        return float(row[store.cols[M.INFLIGHT]]), float(row[store.cols[M.QUEUED]])

    def window(self, t_s: float, window_s: float) -> WindowStats:
        store = self.store
        inflight, queued = self._gauges(t_s)
        start_ms, end_ms = _range_ms(t_s, window_s)
        sel = _select(store.times_ms, start_ms, end_ms, self.flavor)
        n = sel.stop - sel.start
        if n < 2:
            why = f"{n} scrape(s) in the {window_s:g} s window ending at {t_s:g} s; increase() needs 2"
            return WindowStats(
                t_s, window_s, None, None, None, None, None, None, inflight, queued, (why,)
            )
        inc = _increase(store.times_ms[sel], store.values[sel], start_ms, end_ms, self.flavor)
        cols = store.cols
        requests = float(sum(inc[cols[f"{M.REQUESTS_TOTAL}{{status={s}}}"]] for s in STATUSES))

        def hist(name: str) -> HistogramDelta:
            return HistogramDelta(
                upper_bounds=store.buckets[name],
                cumulative=tuple(float(x) for x in inc[store.bucket_cols[name]]),
                sum=float(inc[cols[f"{name}_sum"]]),
                count=float(inc[cols[f"{name}_count"]]),
            )

        return WindowStats(
            t_s=t_s,
            window_s=window_s,
            requests=requests,
            ttft_s=hist(M.TTFT),
            itl_s=hist(M.ITL),
            duration_s=hist(M.REQUEST_DURATION),
            isl_tokens=hist(M.ISL),
            osl_tokens=hist(M.OSL),
            inflight=inflight,
            queued=queued,
            requests_started=float(inc[cols[M.REQUESTS_STARTED_TOTAL]]),
        )
