"""Request streams for the simulator and the load driver: generated arrivals and token
lengths, and replays of public traces (Azure, Mooncake, BurstGPT).

Everything is vectorised with numpy and deterministic under the seed
(numpy.random.Generator(PCG64(seed))). The only I/O is reading trace and empirical
length files, which are parsed once per (path, size, mtime) and cached read-only.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from planner.errors import ConfigError
from scenario.types import (
    ArrivalSpec,
    LengthDist,
    PiecewiseRate,
    RateSchedule,
    SineRate,
    SpikeRate,
    StepRate,
    TraceSpec,
    WorkloadSpec,
)

if TYPE_CHECKING:
    import pandas as pd  # only trace and length files need it: imported where they are read

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Requests:
    """One workload: arrival times (s, sorted) and per-request ISL and OSL (tokens).

    Treat the arrays as read-only: a replayed trace shares them with the reader's cache.
    """

    arrival_s: np.ndarray  # float64, non-decreasing
    isl: np.ndarray  # int64, >= 1
    osl: np.ndarray  # int64, >= 1

    def __len__(self) -> int:
        return len(self.arrival_s)

    def slice(self, t0_s: float, t1_s: float) -> Requests:
        """The requests arriving in [t0_s, t1_s)."""
        i, j = np.searchsorted(self.arrival_s, [t0_s, t1_s], side="left")
        return Requests(self.arrival_s[i:j], self.isl[i:j], self.osl[i:j])

    @staticmethod
    def empty() -> Requests:
        return Requests(np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64))


def make_rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


# ---------------------------------------------------------------------------
# Rate schedules, vectorised. The scenario's dataclasses answer for one t; here the
# schedule becomes a piecewise-constant rate whose integral can be inverted exactly.

# Sine schedules are approximated by this many constant steps per period: the count
# error is below 1e-5 of the mean and the inversion stays exact for the steps.
_SINE_STEPS_PER_PERIOD = 2048


def schedule_values(schedule: RateSchedule, t_s: np.ndarray) -> np.ndarray:
    """The schedule's value at each time in t_s (vectorised rate_at)."""
    t = np.asarray(t_s, dtype=float)
    if isinstance(schedule, PiecewiseRate):
        times = np.array([p[0] for p in schedule.points])
        rates = np.array([p[1] for p in schedule.points])
        return rates[np.searchsorted(times, t, side="right") - 1]
    if isinstance(schedule, SineRate):
        phase = 2 * np.pi * (t + schedule.phase_s) / schedule.period_s
        return np.maximum(0.0, schedule.mean + schedule.amplitude * np.sin(phase))
    if isinstance(schedule, StepRate):
        return np.where(t < schedule.at_s, schedule.before, schedule.after)
    if isinstance(schedule, SpikeRate):
        inside = (t >= schedule.at_s) & (t < schedule.at_s + schedule.duration_s)
        return np.where(inside, schedule.peak, schedule.base)
    raise TypeError(f"not a rate schedule: {schedule!r}")


def piecewise_rate(schedule: RateSchedule, duration_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(starts, rates): the rate is rates[k] on [starts[k], starts[k+1]) within [0, duration_s)."""
    if isinstance(schedule, PiecewiseRate):
        starts = np.array([p[0] for p in schedule.points], dtype=float)
        rates = np.array([p[1] for p in schedule.points], dtype=float)
    elif isinstance(schedule, StepRate):
        starts = np.array([0.0, schedule.at_s])
        rates = np.array([schedule.before, schedule.after])
    elif isinstance(schedule, SpikeRate):
        starts = np.array([0.0, schedule.at_s, schedule.at_s + schedule.duration_s])
        rates = np.array([schedule.base, schedule.peak, schedule.base])
    elif isinstance(schedule, SineRate):
        n = max(1, math.ceil(duration_s / schedule.period_s * _SINE_STEPS_PER_PERIOD))
        starts = np.linspace(0.0, duration_s, n + 1)[:-1]
        mid = starts + duration_s / n / 2
        rates = schedule_values(schedule, mid)
    else:
        raise TypeError(f"not a rate schedule: {schedule!r}")
    keep = starts < duration_s
    keep[0] = True
    starts, rates = starts[keep], rates[keep]
    starts[0] = 0.0
    if isinstance(schedule, StepRate | SpikeRate) and len(starts) > 1:
        # A step at 0 leaves an empty first piece; drop pieces of zero length.
        ends = np.append(starts[1:], duration_s)
        nonempty = ends > starts
        starts, rates = starts[nonempty], rates[nonempty]
    return starts, rates


def _cumulative(starts: np.ndarray, rates: np.ndarray, duration_s: float) -> np.ndarray:
    """The integral of the rate at each piece's start, plus its total at duration_s."""
    ends = np.append(starts[1:], duration_s)
    return np.concatenate(([0.0], np.cumsum(rates * (ends - starts))))


def invert_cumulative(
    u: np.ndarray, starts: np.ndarray, rates: np.ndarray, cum: np.ndarray
) -> np.ndarray:
    """Times t with Lambda(t) = u for a piecewise-constant rate (time rescaling)."""
    # side="right" skips zero-rate pieces: their cumulative value repeats, so the last
    # piece starting at that value (the one with a positive rate) is chosen.
    k = np.searchsorted(cum[:-1], u, side="right") - 1
    k = np.clip(k, 0, len(starts) - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = starts[k] + (u - cum[k]) / rates[k]
    return np.where(rates[k] > 0, t, starts[k])


def _unit_points(gaps: Callable[[int], np.ndarray], total: float) -> np.ndarray:
    """Cumulative sums of unit-mean gaps, all those below `total`."""
    chunks: list[np.ndarray] = []
    last = 0.0
    n = int(total + 6 * math.sqrt(total + 1) + 16)
    while last < total:
        pts = last + np.cumsum(gaps(n))
        chunks.append(pts)
        last = float(pts[-1])
        n = max(16, int((total - last) * 1.1) + 16)
    pts = np.concatenate(chunks) if chunks else np.zeros(0)
    return pts[pts < total]


# ---------------------------------------------------------------------------
# Arrival processes: name -> f(spec, duration_s, rng) -> sorted arrival times in [0, duration_s).
# Each draws unit-rate points and maps them through the inverse integrated rate, so a
# time-varying rate keeps the process' shape (time-rescaling).

ArrivalFn = Callable[[ArrivalSpec, float, np.random.Generator], np.ndarray]


def _rescaled(
    spec: ArrivalSpec, duration_s: float, gaps: Callable[[int], np.ndarray]
) -> np.ndarray:
    starts, rates = piecewise_rate(spec.rate, duration_s)
    cum = _cumulative(starts, rates, duration_s)
    unit = _unit_points(gaps, float(cum[-1]))
    t = invert_cumulative(unit, starts, rates, cum)
    return np.minimum(t, np.nextafter(duration_s, 0.0))


def poisson_arrivals(spec: ArrivalSpec, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Non-homogeneous Poisson process: exponential unit gaps, time-rescaled."""
    return _rescaled(spec, duration_s, lambda n: rng.exponential(1.0, n))


def gamma_arrivals(spec: ArrivalSpec, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Renewal process with Gamma gaps of mean 1/rate and coefficient of variation cv."""
    shape = 1.0 / spec.cv**2
    return _rescaled(spec, duration_s, lambda n: rng.gamma(shape, 1.0 / shape, n))


def constant_arrivals(spec: ArrivalSpec, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Evenly spaced in integrated rate: one request per unit of Lambda, the first at 0."""
    starts, rates = piecewise_rate(spec.rate, duration_s)
    cum = _cumulative(starts, rates, duration_s)
    unit = np.arange(0.0, cum[-1])
    return invert_cumulative(unit, starts, rates, cum)


ARRIVALS: dict[str, ArrivalFn] = {
    "poisson": poisson_arrivals,
    "gamma": gamma_arrivals,
    "constant": constant_arrivals,
}


# ---------------------------------------------------------------------------
# Length distributions: name -> f(dist, n, rng) -> n raw (float) lengths; rounding and
# clipping to [min, max] are common to all (finish_lengths).

LengthFn = Callable[[LengthDist, int, np.random.Generator], np.ndarray]


def fixed_lengths(d: LengthDist, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.full(n, float(d.value))


def uniform_lengths(d: LengthDist, n: int, rng: np.random.Generator) -> np.ndarray:
    """Integers uniform on [low, high], both included."""
    return rng.integers(round(d.low), round(d.high), size=n, endpoint=True).astype(float)


def lognormal_lengths(d: LengthDist, n: int, rng: np.random.Generator) -> np.ndarray:
    """Lognormal with the given mean and coefficient of variation (std/mean)."""
    sigma2 = math.log1p(d.cv**2)
    mu = math.log(d.mean) - sigma2 / 2
    return rng.lognormal(mu, math.sqrt(sigma2), n)


def empirical_lengths(d: LengthDist, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draws with replacement from the values in the file."""
    values = read_empirical(Path(d.path), d.column)
    return values[rng.integers(0, len(values), size=n)].astype(float)


def histogram_lengths(
    d: LengthDist, n: int, rng: np.random.Generator, t_s: np.ndarray | None = None
) -> np.ndarray:
    """From the bucket counts in force at each request's time t_s (all at 0 when None): a
    bucket in proportion to its count, then uniform inside it (linear, as Prometheus'
    histogram_quantile interpolates). A step without counts borrows the nearest one's."""
    le = np.asarray(d.le, dtype=float)
    upper = np.append(le, float(d.max) if d.max is not None else 2.0 * le[-1])
    lower = np.concatenate(([max(float(d.min) - 1.0, 0.0)], le))
    starts = np.array([t for t, _ in d.steps], dtype=float)
    counts = np.array([c for _, c in d.steps], dtype=float)
    have = np.flatnonzero(counts.sum(axis=1) > 0)
    # nearest step with counts, for every step (ties to the earlier one)
    nearest = have[np.abs(np.arange(len(starts))[:, None] - have[None, :]).argmin(axis=1)]
    cdf = np.cumsum(counts[nearest], axis=1)
    cdf /= cdf[:, -1:]
    t = np.zeros(n) if t_s is None else np.asarray(t_s, dtype=float)
    step = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, len(starts) - 1)
    u = rng.random(n)
    bucket = np.minimum((u[:, None] > cdf[step]).sum(axis=1), len(upper) - 1)
    v = rng.random(n)
    return lower[bucket] + v * (upper[bucket] - lower[bucket])


LENGTH_DISTS: dict[str, LengthFn] = {
    "fixed": fixed_lengths,
    "uniform": uniform_lengths,
    "lognormal": lognormal_lengths,
    "empirical": empirical_lengths,
    "histogram": histogram_lengths,
}


def finish_lengths(raw: np.ndarray, d: LengthDist) -> np.ndarray:
    out = np.rint(raw)
    out = np.maximum(out, d.min)
    if d.max is not None:
        out = np.minimum(out, d.max)
    return out.astype(np.int64)


def sample_lengths(
    d: LengthDist,
    n: int,
    rng: np.random.Generator,
    scale: np.ndarray | None = None,
    t_s: np.ndarray | None = None,
) -> np.ndarray:
    """n integer lengths from the distribution, multiplied by `scale` before rounding;
    t_s: the requests' times, for a distribution that changes over time (histogram)."""
    if d.dist == "histogram":
        raw = histogram_lengths(d, n, rng, t_s)
    else:
        raw = LENGTH_DISTS[d.dist](d, n, rng)
    if scale is not None:
        raw = raw * scale
    return finish_lengths(raw, d)


class LengthSampler:
    """(ISL, OSL) one request at a time, for the closed loop."""

    def __init__(self, isl: LengthDist, osl: LengthDist, isl_scale: RateSchedule | None = None):
        self.isl_dist, self.osl_dist, self.isl_scale = isl, osl, isl_scale

    def sample(self, rng: np.random.Generator, t_s: float = 0.0) -> tuple[int, int]:
        scale = None if self.isl_scale is None else schedule_values(self.isl_scale, np.array([t_s]))
        at = np.array([t_s])
        isl = sample_lengths(self.isl_dist, 1, rng, scale, t_s=at)
        osl = sample_lengths(self.osl_dist, 1, rng, t_s=at)
        return int(isl[0]), int(osl[0])


# ---------------------------------------------------------------------------
# Files: trace formats and empirical length files.


def _file_key(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
    except OSError:
        raise ConfigError("file not found; expected a readable file", source=str(path)) from None
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def _readonly(*arrays: np.ndarray) -> None:
    for a in arrays:
        a.flags.writeable = False


def _bad_row(path: Path, line: int, what: str) -> ConfigError:
    return ConfigError(what, source=str(path), key=f"line {line}")


def _numeric_columns(
    path: Path, frame: pd.DataFrame, columns: list[str], first_line: int = 2
) -> list[np.ndarray]:
    """Columns as float arrays; a missing, non-numeric or negative cell names its line."""
    import pandas as pd

    out = []
    for col in columns:
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise _bad_row(
                path,
                i + first_line,
                f"column {col!r} is {frame[col].iloc[i]!r}; expected a non-negative number",
            )
        out.append(values)
    return out


def _read_csv(path: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        # Every cell as text: numbers are checked per column so a bad one names its line.
        return pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.ParserError as exc:
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if m:
            raise _bad_row(
                path, int(m[2]), f"{m[3]} fields; expected {m[1]} as in the header"
            ) from None
        detail = str(exc).strip().splitlines()[0]
        raise ConfigError(
            f"malformed CSV ({detail}); expected one value per column", source=str(path)
        ) from None
    except pd.errors.EmptyDataError:
        raise ConfigError(
            "the file is empty; expected a header and rows", source=str(path)
        ) from None


def _require_columns(
    path: Path, frame: pd.DataFrame, options: list[tuple[str, ...]]
) -> tuple[str, ...]:
    for cols in options:
        if all(c in frame.columns for c in cols):
            return cols
    expected = " or ".join(",".join(c) for c in options)
    raise _bad_row(
        path, 1, f"header {','.join(map(str, frame.columns))!r}; expected columns {expected}"
    )


TraceArrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # arrival_s, isl, osl (raw, unsorted)


def read_azure(path: Path) -> TraceArrays:
    """Azure LLM inference trace: processed (`arrived_at` seconds, `num_prefill_tokens`,
    `num_decode_tokens`) or as released (`TIMESTAMP` datetime, `ContextTokens`,
    `GeneratedTokens`)."""
    frame = _read_csv(path)
    cols = _require_columns(
        path,
        frame,
        [
            ("arrived_at", "num_prefill_tokens", "num_decode_tokens"),
            ("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
        ],
    )
    isl, osl = _numeric_columns(path, frame, list(cols[1:]))
    if cols[0] == "arrived_at":
        (arrival,) = _numeric_columns(path, frame, ["arrived_at"])
    else:
        import pandas as pd

        stamps = pd.to_datetime(frame["TIMESTAMP"], errors="coerce", format="ISO8601")
        bad = stamps.isna().to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            raise _bad_row(
                path,
                i + 2,
                f"TIMESTAMP is {frame['TIMESTAMP'].iloc[i]!r}; expected a date and time",
            )
        ns = stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64)
        arrival = (ns - ns.min()) / 1e9
    return arrival, isl, osl


def read_mooncake(path: Path) -> TraceArrays:
    """Mooncake JSONL: `timestamp` (ms), `input_length`, `output_length`; `hash_ids` and
    other keys are ignored."""
    rows: list[tuple[float, float, float]] = []
    keys = ("timestamp", "input_length", "output_length")
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _bad_row(
                    path, line_no, f"invalid JSON ({exc.msg}); expected one object per line"
                ) from None
            if not isinstance(obj, dict):
                raise _bad_row(
                    path,
                    line_no,
                    "not a JSON object; expected {timestamp, input_length, output_length}",
                )
            vals = []
            for k in keys:
                v = obj.get(k)
                if (
                    isinstance(v, bool)
                    or not isinstance(v, int | float)
                    or not math.isfinite(v)
                    or v < 0
                ):
                    raise _bad_row(path, line_no, f"{k} is {v!r}; expected a non-negative number")
                vals.append(float(v))
            rows.append((vals[0] / 1000.0, vals[1], vals[2]))
    if not rows:
        raise ConfigError("no requests in the file; expected JSON lines", source=str(path))
    arr = np.array(rows)
    return arr[:, 0], arr[:, 1], arr[:, 2]


def read_burstgpt(path: Path) -> TraceArrays:
    """BurstGPT CSV: `Timestamp` (s), `Model`, `Request tokens`, `Response tokens`,
    `Total tokens`, `Log Type`. Rows with 0 response tokens (failed requests) are dropped."""
    frame = _read_csv(path)
    cols = _require_columns(path, frame, [("Timestamp", "Request tokens", "Response tokens")])
    arrival, isl, osl = _numeric_columns(path, frame, list(cols))
    failed = osl == 0
    if failed.any():
        log.info(
            "%s: dropped %d of %d rows with 0 response tokens (failed requests)",
            path,
            int(failed.sum()),
            len(osl),
        )
    keep = ~failed
    return arrival[keep], isl[keep], osl[keep]


TRACE_FORMATS: dict[str, Callable[[Path], TraceArrays]] = {
    "azure": read_azure,
    "mooncake": read_mooncake,
    "burstgpt": read_burstgpt,
}


@functools.lru_cache(maxsize=16)
def _load_trace(key: tuple[str, int, int], fmt: str) -> Requests:
    path = Path(key[0])
    arrival, isl, osl = TRACE_FORMATS[fmt](path)
    if len(arrival) == 0:
        raise ConfigError("no requests in the trace", source=str(path))
    order = np.argsort(arrival, kind="stable")
    arrival = arrival[order] - arrival[order][0]
    lengths = []
    for name, a in (("ISL", isl), ("OSL", osl)):
        a = np.rint(a[order]).astype(np.int64)
        zeros = int((a == 0).sum())
        if zeros:
            log.info("%s: %d requests with %s 0 raised to 1 token", path, zeros, name)
        lengths.append(np.maximum(a, 1))
    _readonly(arrival, *lengths)
    return Requests(arrival, lengths[0], lengths[1])


def read_trace(spec: TraceSpec, seed: int = 0) -> Requests:
    """The trace as requests starting at 0 s: rows from `start_s` of trace time on, times
    multiplied by time_scale, the rate multiplied by rate_scale (deterministic under seed),
    at most max_requests. A bad row raises ConfigError naming the file and line."""
    if spec.format not in TRACE_FORMATS:
        raise ConfigError(
            f"unknown trace format {spec.format!r}; expected one of {', '.join(TRACE_FORMATS)}",
            source=str(spec.path),
        )
    reqs = _load_trace(_file_key(Path(spec.path)), spec.format)
    arrival, isl, osl = reqs.arrival_s, reqs.isl, reqs.osl
    if spec.start_s > 0:
        i = int(np.searchsorted(arrival, spec.start_s, side="left"))
        arrival, isl, osl = arrival[i:] - spec.start_s, isl[i:], osl[i:]
    if spec.time_scale != 1.0:
        arrival = arrival * spec.time_scale
    if spec.rate_scale != 1.0 and len(arrival):
        arrival, isl, osl = _rescale_rate(arrival, isl, osl, spec.rate_scale, make_rng(seed))
    if spec.max_requests is not None:
        arrival, isl, osl = (
            arrival[: spec.max_requests],
            isl[: spec.max_requests],
            osl[: spec.max_requests],
        )
    return Requests(arrival, isl, osl)


def _rescale_rate(
    arrival: np.ndarray, isl: np.ndarray, osl: np.ndarray, scale: float, rng: np.random.Generator
) -> TraceArrays:
    """Each request appears floor(scale) times plus once more with probability frac(scale):
    thinning below 1, duplication above. Copies beyond the first are shifted by a uniform
    jitter of up to one mean inter-arrival time so they do not arrive as exact pairs."""
    whole, frac = math.floor(scale), scale - math.floor(scale)
    copies = np.full(len(arrival), whole, dtype=np.int64) + (rng.random(len(arrival)) < frac)
    idx = np.repeat(np.arange(len(arrival)), copies)
    # 0 for each request's first copy, 1, 2, ... for the extra ones.
    first = np.cumsum(copies) - copies
    rank = np.arange(len(idx)) - np.repeat(first, copies)
    span = float(arrival[-1] - arrival[0])
    gap = span / max(1, len(arrival) - 1)
    t = arrival[idx] + np.where(rank > 0, rng.uniform(0.0, gap, len(idx)), 0.0)
    order = np.argsort(t, kind="stable")
    return t[order], isl[idx][order], osl[idx][order]


@functools.lru_cache(maxsize=16)
def _load_empirical(key: tuple[str, int, int], column: str | None) -> np.ndarray:
    path = Path(key[0])
    if column is not None:
        frame = _read_csv(path)
        if column not in frame.columns:
            raise _bad_row(
                path,
                1,
                f"no column {column!r}; the header has {', '.join(map(str, frame.columns))}",
            )
        (values,) = _numeric_columns(path, frame, [column])
    else:
        vals = []
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                try:
                    v = float(text)
                except ValueError:
                    v = math.nan
                if not math.isfinite(v) or v <= 0:
                    raise _bad_row(path, line_no, f"{text!r}; expected a positive token count")
                vals.append(v)
        values = np.array(vals)
    if len(values) == 0:
        raise ConfigError("no values in the file; expected token counts", source=str(path))
    _readonly(values)
    return values


def read_empirical(path: Path, column: str | None = None) -> np.ndarray:
    """Token counts from a file: one per line, or a named column of a CSV with a header."""
    return _load_empirical(_file_key(path), column)


# ---------------------------------------------------------------------------


def generate(workload: WorkloadSpec, duration_s: float, seed: int) -> Requests:
    """All requests arriving in [0, duration_s) for an open-loop or trace workload."""
    rng = make_rng(seed)
    if workload.trace is not None:
        reqs = read_trace(workload.trace, seed).slice(0.0, duration_s)
        if workload.isl_scale is None:
            return reqs
        scale = schedule_values(workload.isl_scale, reqs.arrival_s)
        isl = np.maximum(np.rint(reqs.isl * scale), 1).astype(np.int64)
        return Requests(reqs.arrival_s, isl, reqs.osl)
    if workload.arrival is None:
        raise ValueError("a closed-loop workload has no arrival times; use LengthSampler")
    arrival = ARRIVALS[workload.arrival.process](workload.arrival, duration_s, rng)
    scale = None if workload.isl_scale is None else schedule_values(workload.isl_scale, arrival)
    isl = sample_lengths(workload.isl, len(arrival), rng, scale, t_s=arrival)
    osl = sample_lengths(workload.osl, len(arrival), rng, t_s=arrival)
    return Requests(arrival.astype(np.float64), isl, osl)


def expected_requests(workload: WorkloadSpec, duration_s: float) -> float | None:
    """The expected request count of an open-loop workload over [0, duration_s), from the
    rate schedule's integral without drawing anything (a size guard before a run); None
    for a trace (its file bounds it) or a closed loop (its users and service bound it)."""
    if workload.arrival is None:
        return None
    rate = workload.arrival.rate
    if isinstance(rate, SineRate):
        return max(rate.mean, 0.0) * duration_s  # within one amplitude-period of the truth
    if isinstance(rate, PiecewiseRate):
        starts = np.array([p[0] for p in rate.points], dtype=float)
        rates = np.array([p[1] for p in rate.points], dtype=float)
    else:
        starts, rates = piecewise_rate(rate, duration_s)
    keep = starts < duration_s
    starts, rates = starts[keep], rates[keep]
    return float(_cumulative(starts, rates, duration_s)[-1])
